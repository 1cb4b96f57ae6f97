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

In Spark both run as built-in expressions (no Python UDF: no rows cross into Python workers). The HMAC is
RFC 2104 over two ``sha2`` calls; its padded keys are as secret as the key, so they enter the query as the
data of a broadcast one-row DataFrame, never as literals: plans, ``explain()`` output and logs never show them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pipelines.config import Settings, read_yaml_mapping
from pipelines.contracts.registry import ENVELOPE_FILE, SchemaRegistry
from pipelines.platform.spark import local_frame

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

DEV_HMAC_KEY = b"lakehouse-local-dev-hmac-key: public, local profile only"
LOCAL_PROFILE = "local"
ACTIONS = ("keep", "pseudonymize", "truncate_ip", "strip_query", "drop")
IDENTITY_FIELDS = ("user_id", "anonymous_id")
# Context fields silver can emit; anything else in context is never copied to silver.
CONTEXT_FIELDS = ("device", "os", "locale", "ip", "user_agent", "app_version")
ENVELOPE_FIELDS = ("session_id",)  # envelope fields besides the identities that silver carries as sent
_ALLOWED = {
    "user_id": {"pseudonymize"},
    "anonymous_id": {"pseudonymize"},
    "session_id": {"keep"},
    "context.ip": {"truncate_ip", "drop"},
    "context.user_agent": {"drop"},
}


HMAC_PAD_COLUMNS = ("_hmac_ipad", "_hmac_opad")
_SHA256_BLOCK_BYTES = 64
# Python's str.strip() whitespace (str.isspace), as a Java regex character class.
_PY_WHITESPACE_CODES = (
    *range(0x09, 0x0E),
    *range(0x1C, 0x21),
    0x85,
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)
_PY_WHITESPACE = "".join(f"\\u{code:04x}" for code in _PY_WHITESPACE_CODES)
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"


class PiiConfigError(ValueError):
    """The PII rules or the HMAC key are missing or wrong; the message names the file, key or variable."""


@dataclass(frozen=True)
class PiiRules:
    """Resolved rules: what happens to each property and context field. Default deny: a field without a rule
    is dropped (``property_action`` / ``keeps_context``), and ``unclassified`` lists such fields of a registry."""

    source: str
    ipv4_prefix: int
    ipv6_prefix: int
    properties: Mapping[str, str]  # property name -> action
    context: Mapping[str, str]  # context field -> action

    def property_fields(self, action: str) -> list[str]:
        return sorted(name for name, what in self.properties.items() if what == action)

    def property_action(self, name: str) -> str:
        return self.properties.get(name, "drop")

    def keeps_context(self, name: str) -> bool:
        return self.context.get(name, "drop") == "keep"

    def unclassified(self, registry: SchemaRegistry) -> list[str]:
        """``<schema file>: <field>`` for every registered field no rule classifies (sorted)."""
        found = []
        context = registry.envelope.get("properties", {}).get("context", {}).get("properties", {})
        found += [f"{ENVELOPE_FILE}: context.{name}" for name in sorted(context) if name not in self.context]
        for event_type in registry.event_types:
            for version in registry.versions(event_type):
                names = registry.properties_schema(event_type, version).get("properties", {})
                where = f"{event_type}/v{version}.json"
                found += [f"{where}: properties.{name}" for name in sorted(names) if name not in self.properties]
        return found


def load_pii_rules(path: str | os.PathLike[str]) -> PiiRules:
    """Parse and validate ``conf/pii.yaml``; every problem names the file and the key."""
    source = str(path)
    shape = "a mapping with a 'fields' mapping (field -> action)"
    raw = read_yaml_mapping(path, "PII rules file (silver.pii_rules)", PiiConfigError, shape)
    if not isinstance(raw.get("fields"), dict):
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
        if name in IDENTITY_FIELDS or name in ENVELOPE_FIELDS:
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
                f"{source}: fields.{name}: expected user_id, anonymous_id, session_id, properties.<name> or "
                f"context.<{'|'.join(CONTEXT_FIELDS)}>"
            )
    missing = [name for name in IDENTITY_FIELDS if fields.get(name) != "pseudonymize"]
    if missing:
        raise PiiConfigError(f"{source}: {', '.join(f'fields.{m}' for m in missing)} must be 'pseudonymize'")
    return PiiRules(source, ipv4, ipv6, properties, context)


def hmac_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonymization key from the environment; outside ``local`` its absence stops the job."""
    name = settings.pii.hmac_key_env
    value = (os.environ if environ is None else environ).get(name)
    if value:
        return value.encode()
    local_lake = "://" not in settings.lake_root or settings.lake_root.startswith("file://")
    if settings.profile == LOCAL_PROFILE and local_lake:
        log.warning("%s is not set: using the public local development key (pseudonyms are not protected)", name)
        return DEV_HMAC_KEY
    where = f"profile {settings.profile!r} with lake {settings.lake_root}"
    raise PiiConfigError(
        f"environment variable {name} (pii.hmac_key_env) is not set: {where} refuses to write silver without a "
        f"pseudonymization key; set {name} (only the local profile on a local lake path may use the public "
        "development key)"
    )


# The namespace user agents are pseudonymized in (silver.dim_devices): not a valid tenant slug, so a user agent's
# pseudonym never equals any tenant's identity pseudonym.
USER_AGENT_NAMESPACE = "*user_agent"


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


class SparkPseudonymizer:
    """:func:`pseudonym` as Spark built-ins: HMAC-SHA256 = sha2(opad || sha2(ipad || message)) (RFC 2104).

    ``attach`` cross-joins the padded keys (two binary columns, :data:`HMAC_PAD_COLUMNS`) onto a frame by
    broadcast; ``column`` then computes pseudonyms on it; ``detach`` drops the pads again. The pads travel as
    DataFrame data, so no plan string ever contains them, and executors hash in the JVM.
    """

    def __init__(self, spark: SparkSession, key: bytes) -> None:
        ipad, opad = hmac_pads(key)
        self._pads = local_frame(spark, [(ipad, opad)], ", ".join(f"{c} binary" for c in HMAC_PAD_COLUMNS))

    def attach(self, df: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        return df.crossJoin(F.broadcast(self._pads))

    @staticmethod
    def detach(df: DataFrame) -> DataFrame:
        return df.drop(*HMAC_PAD_COLUMNS)

    @staticmethod
    def column(tenant_id: Column, value: Column) -> Column:
        """Pseudonym of ``value`` (null stays null) on a frame that carries the pads (see ``attach``)."""
        from pyspark.sql import functions as F

        ipad, opad = (F.col(name) for name in HMAC_PAD_COLUMNS)
        message = F.concat(tenant_id, F.lit(":"), value).cast("binary")  # Spark strings are UTF-8 bytes
        inner = F.unhex(F.sha2(F.concat(ipad, message), 256))
        return F.sha2(F.concat(opad, inner), 256)


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer padded keys: the key (hashed when longer than a block) XOR 0x36 / 0x5C."""
    block = hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK_BYTES else key
    block = block.ljust(_SHA256_BLOCK_BYTES, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def truncate_ip_column(rules: PiiRules, ip: Column) -> Column:
    """Spark column equal to :func:`truncate_ip` with the configured prefixes, in built-in expressions.

    It follows CPython 3.11's ``ipaddress`` step by step: strip (Python's whitespace), an IPv4 dotted quad (no
    leading zeros), else IPv6 (``%scope`` suffix, at most one ``::``, an IPv4 tail), mask, then the canonical
    text (lowercase, the longest run of two or more zero hextets - leftmost on ties - as ``::``; the scope stays
    only when masking changed nothing). Anything ``ipaddress`` rejects is null.

    IPv4 compiles into the surrounding stage. IPv6 binds each step once with :func:`_let`: its lambdas keep
    this one projection out of whole-stage codegen, which is the point - written as plain columns, the IPv6
    steps generate a method far beyond the JIT's 8000-byte limit, and the whole stage around it would run
    in the bytecode interpreter.
    """
    from pyspark.sql import functions as F

    text = F.regexp_replace(ip, f"^[{_PY_WHITESPACE}]+|[{_PY_WHITESPACE}]+\\z", "")
    octets = F.split(text, r"\.")
    ipv4 = F.concat(
        F.concat_ws(
            ".",
            *[
                F.try_element_at(octets, F.lit(i + 1)).try_cast("int").bitwiseAND(mask).cast("string")
                for i, mask in enumerate(_kept_bit_masks(rules.ipv4_prefix, 8, 4))
            ],
        ),
        F.lit(f"/{rules.ipv4_prefix}"),
    )
    return F.when(text.rlike(f"^{_IPV4}\\z"), ipv4).when(text.isNotNull(), _ipv6_network(text, rules.ipv6_prefix))


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(value)`` with ``value`` computed once (a one-element ``transform``: Spark SQL has no let)."""
    from pyspark.sql import functions as F

    return F.element_at(F.transform(F.array(value), body), 1)


def _ipv6_network(text: Column, prefix: int) -> Column:
    """``IPv6Network(text/prefix, strict=False)`` as text, or null where ``ipaddress`` rejects ``text``."""
    from pyspark.sql import functions as F

    def split_scope(text: Column) -> Column:
        percent = F.instr(text, "%")
        return F.struct(
            F.when(percent > 0, F.substring(text, percent + 1, 1 << 30)).alias("scope"),
            F.split(F.substring_index(text, "%", 1), ":", -1).alias("raw"),
        )

    def ipv4_tail(step: Column) -> Column:
        raw = step["raw"]
        tail = F.element_at(raw, -1)
        octets = F.transform(F.split(tail, r"\."), lambda octet: octet.try_cast("int"))
        has_tail = F.instr(tail, ".") > 0
        halves = F.array(  # Python turns an IPv4 tail into two hextets ('%x' of each 16-bit half)
            *[
                F.lower(F.hex(F.try_element_at(octets, F.lit(i)) * 256 + F.try_element_at(octets, F.lit(i + 1))))
                for i in (1, 3)
            ]
        )
        ok = (
            (step["scope"].isNull() | ((step["scope"] != "") & (F.instr(step["scope"], "%") == 0)))
            & (F.size(raw) >= 3)
            & (~has_tail | tail.rlike(f"^{_IPV4}\\z"))
        )
        parts = F.when(has_tail, F.concat(F.slice(raw, 1, F.size(raw) - 1), halves)).otherwise(raw)
        return F.struct(step["scope"].alias("scope"), parts.alias("parts"), ok.alias("ok"))

    def expand(step: Column) -> Column:
        """The eight hextets, with '::' (at most one, standing for one hextet or more) expanded; else null."""
        parts = step["parts"]
        n = F.size(parts)
        inner = F.slice(parts, 2, F.greatest(n - 2, F.lit(0)))  # empty ends belong to a leading/trailing '::'
        gaps = F.size(F.filter(inner, lambda part: part == ""))
        skip = F.array_position(inner, "").cast("int")  # the 0-based index of '::' in parts
        first = (F.element_at(parts, 1) == "").cast("int")
        last = (F.element_at(parts, -1) == "").cast("int")
        high, low = skip - first, n - skip - 1 - last
        compressed = (gaps == 1) & ((first == 0) | (high == 0)) & ((last == 0) | (low == 0)) & (8 - high - low >= 1)
        full = (gaps == 0) & (n == 8) & (first == 0) & (last == 0)
        hextets = F.when(
            compressed,
            F.concat(
                F.slice(parts, 1 + first, F.greatest(high, F.lit(0))),
                F.array_repeat(F.lit("0"), F.greatest(8 - high - low, F.lit(0))),
                F.slice(parts, skip + 2, F.greatest(low, F.lit(0))),
            ),
        ).when(full, parts)
        valid = step["ok"] & (n <= 9) & F.forall(hextets, lambda part: part.rlike("^[0-9a-fA-F]{1,4}\\z"))
        values = F.transform(hextets, lambda part: F.conv(part, 16, 10).try_cast("int"))
        return F.struct(step["scope"].alias("scope"), F.when(valid, values).alias("values"))

    masks = F.array(*[F.lit(mask) for mask in _kept_bit_masks(prefix, 16, 8)])

    def mask(step: Column) -> Column:
        masked = F.zip_with(step["values"], masks, lambda value, bits: value.bitwiseAND(bits))
        kept_scope = F.when(step["scope"].isNotNull() & (masked == step["values"]), F.concat(F.lit("%"), step["scope"]))
        zeros = F.concat_ws("", F.transform(masked, lambda value: F.when(value == 0, "0").otherwise("1")))
        # Python compresses the longest run of two or more zero hextets, the leftmost one on ties.
        run = F.coalesce(*[F.when(F.instr(zeros, "0" * k) > 0, F.lit(k)) for k in range(8, 1, -1)])
        return F.struct(
            F.transform(masked, lambda value: F.lower(F.hex(value))).alias("digits"),
            run.alias("run"),
            F.instr(zeros, F.repeat(F.lit("0"), run)).alias("at"),
            F.coalesce(kept_scope, F.lit("")).alias("scope"),
            step["values"].isNotNull().alias("valid"),
        )

    def text_of(step: Column) -> Column:
        digits, run, at = step["digits"], step["run"], step["at"]
        canonical = F.when(run.isNull(), F.concat_ws(":", digits)).otherwise(
            F.concat(
                F.concat_ws(":", F.slice(digits, 1, at - 1)),
                F.lit("::"),
                F.concat_ws(":", F.slice(digits, at + run, 9 - at - run)),
            )
        )
        return F.when(step["valid"], F.concat(canonical, step["scope"], F.lit(f"/{prefix}")))

    steps = _let(F.when(F.instr(text, "/") == 0, split_scope(text)), ipv4_tail)
    return _let(_let(_let(steps, expand), mask), text_of)


def _kept_bit_masks(prefix: int, width: int, parts: int) -> list[int]:
    """Per part of ``width`` bits, the mask that keeps the bits inside the first ``prefix`` bits of the address."""
    full = (1 << width) - 1
    return [full ^ (full >> min(max(prefix - width * i, 0), width)) for i in range(parts)]
