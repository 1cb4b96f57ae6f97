"""API tokens: each one reads exactly one tenant (or, for operators, any tenant it names).

Only a token's SHA-256 is stored, in ``serve.tokens_file`` (owner-readable only): a stolen file does not let
anyone call the API, and a token is shown once, when it is created. The API looks tokens up by hash on every
request, re-reading the file when it changes, so a created or revoked token takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

ALL_TENANTS = "*"  # an operator token: every request names its tenant
PREFIX = "lh_"  # recognisable in logs and secret scanners


class TokenError(ValueError):
    """A token file or request the user can fix (the message says how)."""


@dataclass(frozen=True)
class Token:
    name: str
    tenant: str  # a tenant id, or ALL_TENANTS
    sha256: str
    created_at: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """The token file: a JSON list of name, tenant, sha256 and creation time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded_stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, Token] = {}

    def tokens(self) -> list[Token]:
        if not self.path.exists():
            return []
        try:
            rows = json.loads(self.path.read_text())["tokens"]
            return [Token(**row) for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenError(f"{self.path}: not a token file ({exc}); fix or remove it") from None

    def create(self, name: str, tenant: str) -> str:
        """A new token for ``tenant``; returns the secret, which is not stored anywhere."""
        if not name or any(c.isspace() for c in name):
            raise TokenError(f"token name {name!r}: give a non-empty name without spaces")
        existing = self.tokens()
        if any(t.name == name for t in existing):
            raise TokenError(f"a token named {name!r} exists in {self.path}: revoke it first or pick another name")
        secret = PREFIX + secrets.token_urlsafe(32)
        token = Token(name, tenant, _digest(secret), datetime.now(UTC).isoformat(timespec="seconds"))
        self._write([*existing, token])
        return secret

    def revoke(self, name: str) -> None:
        existing = self.tokens()
        if not any(t.name == name for t in existing):
            raise TokenError(f"no token named {name!r} in {self.path}")
        self._write([t for t in existing if t.name != name])

    def resolve(self, secret: str) -> Token | None:
        """The token a request presented, or None; the file is re-read only when it changed."""
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._loaded_stamp:
                self._by_hash = {t.sha256: t for t in self.tokens()}
                self._loaded_stamp = stamp
            return self._by_hash.get(_digest(secret))

    def _write(self, tokens: list[Token]) -> None:
        write_private(self.path, json.dumps({"tokens": [asdict(t) for t in tokens]}, indent=2))


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only (mode 600 from creation, never wider);
    readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(staging, path)
