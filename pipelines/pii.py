"""PII rules for silver (``conf/pii.yaml``) and the functions that apply them.

Analysts never see raw identifiers in silver or gold:

* identities (``user_id``, ``anonymous_id``) become ``user_key`` = HMAC-SHA256(key, ``"<tenant_id>:<id>"``),
  hex. The tenant is part of the message so equal raw ids of two tenants never share a key. The key
  comes from the environment variable named by ``pii.hmac_key_env``; only the ``local`` profile may fall
  back to :data:`DEV_HMAC_KEY` (public, so local pseudonyms are NOT protected); every other profile
  refuses to run without the variable.
* ``truncate_ip``: IPv4 to its /24 network, IPv6 to its /48 (prefix lengths configurable).
* ``strip_query``: URLs lose their query string and fragment (search terms, e-mails, tokens live there).
* ``drop``: free text (page titles, alert messages) and fingerprints (user agents, after parsing) go.

In Spark the HMAC runs in a pandas UDF, so the key never appears in a query plan or ``explain()`` output.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd  # at module level: pandas_udf resolves the type hints in this module's globals
import yaml

from pipelines.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column

log = logging.getLogger(__name__)

DEV_HMAC_KEY = b"lakehouse-local-dev-hmac-key: public, local profile only"
LOCAL_PROFILE = "local"
ACTIONS = ("keep", "pseudonymize", "truncate_ip", "strip_query", "drop")
IDENTITY_FIELDS = ("user_id", "anonymous_id")
# Context fields silver can emit; anything else in context is never copied to silver.
CONTEXT_FIELDS = ("device", "os", "locale", "ip", "user_agent", "app_version")
_ALLOWED = {
    "user_id": {"pseudonymize"},
    "anonymous_id": {"pseudonymize"},
    "context.ip": {"truncate_ip", "drop"},
    "context.user_agent": {"drop"},
}


class PiiConfigError(ValueError):
    """The PII rules or the HMAC key are missing or wrong; the message names the file, key or variable."""


@dataclass(frozen=True)
class PiiRules:
    """Resolved rules: what happens to each property and context field (unlisted fields are kept)."""

    source: str
    ipv4_prefix: int
    ipv6_prefix: int
    properties: Mapping[str, str]  # property name -> action
    context: Mapping[str, str]  # context field -> action

    def property_fields(self, action: str) -> list[str]:
        return sorted(name for name, what in self.properties.items() if what == action)

    def keeps_context(self, name: str) -> bool:
        return self.context.get(name, "keep") != "drop"


def load_pii_rules(path: str | os.PathLike[str]) -> PiiRules:
    """Parse and validate ``conf/pii.yaml``; every problem names the file and the key."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PiiConfigError(f"PII rules file not found: {source} (silver.pii_rules)") from None
    except yaml.YAMLError as exc:
        raise PiiConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("fields"), dict):
        raise PiiConfigError(f"{source}: expected a mapping with a 'fields' mapping (field -> action)")
    unknown = set(raw) - {"fields", "ip_prefix"}
    if unknown:
        raise PiiConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}; expected fields, ip_prefix")
    prefix = raw.get("ip_prefix") or {}
    ipv4, ipv6 = prefix.get("ipv4", 24), prefix.get("ipv6", 48)
    if not (isinstance(ipv4, int) and 0 <= ipv4 <= 32 and isinstance(ipv6, int) and 0 <= ipv6 <= 128):
        raise PiiConfigError(f"{source}: ip_prefix.ipv4 must be 0..32 and ip_prefix.ipv6 0..128, got {prefix}")
    properties: dict[str, str] = {}
    context: dict[str, str] = {}
    fields: dict[str, Any] = raw["fields"]
    for name, action in fields.items():
        if action not in ACTIONS:
            raise PiiConfigError(f"{source}: fields.{name}: unknown action {action!r}; expected one of {ACTIONS}")
        allowed = _ALLOWED.get(name)
        if allowed is not None and action not in allowed:
            raise PiiConfigError(
                f"{source}: fields.{name}: action {action!r} not allowed; use one of {sorted(allowed)}"
            )
        if name in IDENTITY_FIELDS:
            continue
        section, _, field = name.partition(".")
        if section == "properties" and field:
            if action == "truncate_ip":
                raise PiiConfigError(f"{source}: fields.{name}: truncate_ip applies to context.ip only")
            properties[field] = action
        elif section == "context" and field in CONTEXT_FIELDS:
            if action not in {"keep", "drop"} and field not in {"ip", "user_agent"}:
                raise PiiConfigError(f"{source}: fields.{name}: context fields can only be kept or dropped")
            context[field] = action
        else:
            raise PiiConfigError(
                f"{source}: fields.{name}: expected user_id, anonymous_id, properties.<name> or "
                f"context.<{'|'.join(CONTEXT_FIELDS)}>"
            )
    missing = [name for name in IDENTITY_FIELDS if fields.get(name) != "pseudonymize"]
    if missing:
        raise PiiConfigError(f"{source}: {', '.join(f'fields.{m}' for m in missing)} must be 'pseudonymize'")
    context.setdefault("user_agent", "drop")
    context.setdefault("ip", "truncate_ip")
    return PiiRules(source, ipv4, ipv6, properties, context)


def hmac_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonymization key from the environment; outside ``local`` its absence stops the job."""
    name = settings.pii.hmac_key_env
    value = (os.environ if environ is None else environ).get(name)
    if value:
        return value.encode()
    if settings.profile == LOCAL_PROFILE:
        log.warning("%s is not set: using the public local development key (pseudonyms are not protected)", name)
        return DEV_HMAC_KEY
    raise PiiConfigError(
        f"environment variable {name} (pii.hmac_key_env) is not set: profile {settings.profile!r} refuses to "
        "write silver without a pseudonymization key (only the local profile may use the development key)"
    )


def pseudonym(key: bytes, tenant_id: str, value: str) -> str:
    """HMAC-SHA256 of ``"<tenant_id>:<value>"`` as 64 hex characters (tenant slugs contain no ':')."""
    return hmac.new(key, f"{tenant_id}:{value}".encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=200_000)
def truncate_ip(ip: str | None, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str | None:
    """``"203.0.113.77"`` -> ``"203.0.113.0/24"``; ``"2a02:1:2::7"`` -> ``"2a02:1:2::/48"``; junk -> None."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def pseudonymize_column(key: bytes, tenant_id: Column, value: Column) -> Column:
    """Spark column of :func:`pseudonym` (null stays null); the key travels inside the pickled UDF only."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")  # type: ignore[call-overload]
    def _pseudonymize(tenants: pd.Series, values: pd.Series) -> pd.Series:
        return pd.Series(
            [None if v is None else pseudonym(key, t, v) for t, v in zip(tenants, values, strict=True)],
            dtype=object,
        )

    return _pseudonymize(tenant_id, value)


def truncate_ip_column(rules: PiiRules, ip: Column) -> Column:
    """Spark column of :func:`truncate_ip` with the configured prefix lengths (cached per worker)."""
    from pyspark.sql.functions import pandas_udf

    ipv4, ipv6 = rules.ipv4_prefix, rules.ipv6_prefix

    @pandas_udf("string")  # type: ignore[call-overload]
    def _truncate(ips: pd.Series) -> pd.Series:
        return pd.Series([truncate_ip(value, ipv4, ipv6) for value in ips], dtype=object)

    return _truncate(ip)
