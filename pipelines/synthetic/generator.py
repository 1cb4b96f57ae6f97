"""Deterministic synthetic event stream with the defects of a real one, and its ground truth.

Tests and benchmarks need a stream that looks like production traffic (heavy-tailed users,
funnel drop-off, anonymous visitors who sign up, a daily rhythm) AND misbehaves like it
(duplicates, late and out-of-order events, malformed messages), together with the exact answers
the lakehouse's tables must reproduce. ``generate`` returns both.

Same spec -> byte-identical messages, trace ids included: every random choice comes from a
``random.Random`` seeded from the spec, never from ``secrets`` or ``uuid4``. Each concern has its own
sub-stream (one per tenant, one per defect kind), so changing a defect rate never changes the valid
events, and adding a tenant never changes the others.

Rates are per unique valid event: each one is late with probability ``late_rate``, re-sent with
probability ``duplicate_rate`` and followed by a malformed sibling with probability
``malformed_rate``; each message is swapped with a near neighbour with probability
``out_of_order_rate``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from pipelines.contracts.events import encode_event, message_headers, message_key

EVENT_TYPES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout_started",
    "order_completed",
    "signup",
    "login",
    "system_alert",
)
LATEST_VERSION = {"page_view": 2, "order_completed": 2}
DEFECTS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_field",
    "unknown_event_type",
    "bad_timestamp",
    "missing_identity",
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
LATE_MIN_MS = HOUR_MS  # a late event arrives at least an hour after it occurred ...
LATE_MAX_MS = 72 * HOUR_MS  # ... and at most three days after
NORMAL_LAG_MAX_MS = 2_000  # on-time events reach the broker within two seconds
REPLAY_MIN_MS = 10 * 60_000  # a "much later" duplicate (replayed batch) comes 10 min to 36 h later
REPLAY_MAX_MS = 36 * HOUR_MS
REPLAY_SHARE = 0.3  # share of duplicates that are replays; the rest are immediate producer retries
_UUID_CLEAR_BITS = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF  # version nibble and variant bits
_UUID_V4_BITS = 0x00000000_0000_4000_8000_000000000000  # version 4, RFC 4122 variant
MAX_SWAP_DISTANCE = 10  # out-of-order messages trade places with a neighbour at most this far away

SIGNUP_SHARE_OF_ANONYMOUS = 0.3  # anonymous visitors who sign up during the window
MAX_SESSIONS_PER_DAY = 12.0
MISSING_SESSION_SHARE = 0.03  # tracker glitches: web events without a session id
SERVER_SIDE_ORDER_SHARE = 0.4  # orders confirmed by the backend: no session, device "server"
# Funnel drop-off: P(next step | previous step).
P_PRODUCT_VIEW, P_ADD_TO_CART, P_CHECKOUT, P_ORDER = 0.6, 0.3, 0.6, 0.7
P_LOGIN_AT_SESSION_START = 0.25

# Hour-of-day activity (UTC): quiet nights, a lunch bump and an evening peak.
_HOUR_CUM_WEIGHTS = list(
    accumulate(
        [
            2.0,
            1.2,
            0.8,
            0.6,
            0.6,
            0.9,
            1.8,
            3.2,
            4.5,
            5.2,
            5.6,
            6.0,
            6.4,
            6.1,
            5.8,
            5.6,
            5.7,
            6.2,
            7.0,
            7.6,
            7.8,
            6.9,
            5.1,
            3.4,
        ]
    )
)

_TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "soylent")
# (currency, weight) pairs and locales per market; tenant i trades in market i mod len.
_MARKETS = (
    ((("USD", 0.9), ("CAD", 0.1)), ("en-US", "en-US", "es-US", "en-CA")),
    ((("EUR", 0.85), ("GBP", 0.15)), ("de-DE", "fr-FR", "nl-NL", "en-GB")),
    ((("GBP", 1.0),), ("en-GB", "en-GB", "en-IE")),
    ((("USD", 0.6), ("EUR", 0.4)), ("en-US", "de-DE", "fr-FR")),
    ((("AUD", 0.8), ("USD", 0.2)), ("en-AU", "en-NZ")),
    ((("SEK", 0.7), ("EUR", 0.3)), ("sv-SE", "fi-FI", "en-GB")),
)
# Category -> median price in major units; prices are lognormal around it and end in .99.
_CATEGORIES = {
    "shoes": 80,
    "apparel": 40,
    "electronics": 250,
    "home": 60,
    "beauty": 25,
    "sports": 55,
    "books": 15,
    "toys": 30,
}
_PRODUCTS_PER_TENANT = 120
_OTHER_PATHS = ("/about", "/help/shipping", "/help/returns", "/account", "/search?q=sale", "/stores")
_REFERRERS = (
    None,
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.facebook.com/",
    "https://t.co/",
    "https://www.instagram.com/",
    "https://duckduckgo.com/",
)
_REFERRER_CUM_WEIGHTS = list(accumulate([35, 35, 5, 8, 4, 5, 3]))
# (device, os, user agent, weight)
_USER_AGENTS = (
    (
        "desktop",
        "Windows 10",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        24,
    ),
    (
        "desktop",
        "Windows 10",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        7,
    ),
    ("desktop", "Windows 10", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0", 4),
    (
        "desktop",
        "macOS 10.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/18.1 Safari/605.1.15",
        9,
    ),
    (
        "desktop",
        "macOS 10.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/130.0.0.0 Safari/537.36",
        8,
    ),
    (
        "desktop",
        "Linux",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        2,
    ),
    (
        "mobile",
        "iOS 18.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        17,
    ),
    (
        "mobile",
        "Android 14",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        14,
    ),
    (
        "mobile",
        "Android 14",
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like "
        "Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        6,
    ),
    (
        "tablet",
        "iPadOS 17.7",
        "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.7 Mobile/15E148 Safari/604.1",
        5,
    ),
    (
        "tablet",
        "Android 13",
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        3,
    ),
)
_UA_CUM_WEIGHTS = list(accumulate(ua[3] for ua in _USER_AGENTS))
_PUBLIC_FIRST_OCTETS = (23, 31, 37, 45, 62, 73, 81, 89, 94, 104, 151, 176, 185, 203, 212, 217)
_APP_VERSIONS = ("web-2026.10.4", "web-2026.11.1", "web-2026.11.2")
_SERVER_APP_VERSION = "orders-svc 3.14.2"
_LOGIN_METHODS = (("password", "google", "apple", "sso"), [50, 75, 85, 100])
_SIGNUP_METHODS = (("email", "google", "apple"), [55, 85, 100])
_PLANS = (("free", "pro", "enterprise"), [82, 97, 100])
_PAYMENT_METHODS = (("card", "paypal", "wallet", "bank_transfer"), [60, 80, 95, 100])
_SEVERITIES = (("info", "warning", "error", "critical"), [40, 75, 95, 100])
_ALERTS = {
    "checkout-service": ("payment provider latency above 2s", "cart total mismatch, recomputed"),
    "search": ("index refresh lagging", "query timeout rate above 1%"),
    "ingest-api": ("request queue depth above threshold", "schema validation failures spiking"),
    "cdn": ("cache hit ratio dropped below 80%", "origin 5xx responses"),
    "payments": ("webhook retries exhausted", "card network degraded"),
}
_UNKNOWN_EVENT_TYPES = ("wishlist_add", "page_veiw", "refund_issued", "search")
_BAD_TIMESTAMPS = ("2026-11-02 10:15:30", "02/11/2026 10:15", "yesterday", "2026-11-02T10:15:30+02:00", "1762078530123")
_NUMERIC_PROPERTIES = ("price", "quantity", "amount", "item_count", "cart_value", "scroll_depth")
_REQUIRED_ENVELOPE = ("event_id", "event_type", "version", "occurred_at", "tenant_id", "properties")
_REQUIRED_PROPERTIES = {
    "page_view": ("url",),
    "product_view": ("product_id", "category", "price", "currency"),
    "add_to_cart": ("product_id", "quantity", "price", "currency"),
    "checkout_started": ("cart_id", "item_count", "cart_value", "currency"),
    "order_completed": ("order_id", "amount", "currency"),
    "signup": ("method", "plan"),
    "login": ("method",),
    "system_alert": ("component", "severity", "message"),
}


def _check_rate(name: str, value: float, *, upper_inclusive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"GeneratorSpec.{name} must be a number, got {value!r}")
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok:
        bounds = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"GeneratorSpec.{name} must be in {bounds}, got {value!r}")


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate. Rates are probabilities per unique valid event (see the module docstring)."""

    seed: int = 42
    tenants: int = 3
    users_per_tenant: int = 200
    days: int = 3
    start_date: date = date(2026, 11, 1)
    duplicate_rate: float = 0.02
    late_rate: float = 0.02
    out_of_order_rate: float = 0.05
    malformed_rate: float = 0.01
    anonymous_share: float = 0.3  # share of visitors that start anonymous; some of them later sign up
    old_version_share: float = 0.3  # share of events of multi-version types emitted as v1

    def __post_init__(self) -> None:
        for name in ("seed", "tenants", "users_per_tenant", "days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"GeneratorSpec.{name} must be an integer, got {value!r}")
        for name in ("tenants", "users_per_tenant", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"GeneratorSpec.{name} must be >= 1, got {getattr(self, name)!r}")
        if type(self.start_date) is not date:
            raise ValueError(f"GeneratorSpec.start_date must be a datetime.date, got {self.start_date!r}")
        for name in ("duplicate_rate", "late_rate", "out_of_order_rate", "malformed_rate"):
            _check_rate(name, getattr(self, name), upper_inclusive=False)
        for name in ("anonymous_share", "old_version_share"):
            _check_rate(name, getattr(self, name), upper_inclusive=True)


@dataclass(frozen=True)
class GeneratedMessage:
    """One Kafka message, in publish order.

    ``publish_time_ms`` is when the producer sent it (usable as the Kafka CreateTime): occurred_at
    plus under two seconds, or hours to days for a late event. Like real CreateTimes it only
    roughly increases along the stream, because out-of-order messages swapped places.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # "valid" (first delivery) | "duplicate" (exact re-send of an earlier message) | "malformed"
    defect: str | None  # one of DEFECTS for malformed messages
    publish_time_ms: int

    @property
    def event(self) -> dict[str, Any] | None:
        """The event of a valid or duplicate message, decoded from ``value`` (bytes are the single source)."""
        return None if self.kind == "malformed" else json.loads(self.value)


def _rows(table: dict[tuple, Any], names: tuple[str, ...], value_name: str) -> list[dict[str, Any]]:
    return [{**dict(zip(names, key, strict=True)), value_name: value} for key, value in sorted(table.items())]


@dataclass
class Truth:
    """The answers the lakehouse must reproduce from the stream, computed from unique valid events.

    Dates are the UTC date of ``occurred_at``. ``distinct_users`` counts people after identity
    stitching: an anonymous visitor who signs up in the window is counted under their user_id on
    every day, including the days before the signup (the signup event carries both ids); visitors who
    never sign up count by anonymous_id. ``distinct_identities`` is the unstitched count of
    ``coalesce(user_id, anonymous_id)``. System alerts (anonymous_id ``host-<n>``) are not users.
    Revenue is the sum of ``amount`` of completed orders, kept in minor units (cents) to stay exact.
    A late event is one published one hour to three days after its occurred_at (re-sends come later still).
    """

    spec: dict[str, Any]
    total_messages: int
    messages_by_topic: dict[str, int]
    unique_valid_events: int
    duplicates: int
    malformed_by_defect: dict[str, int]
    late_event_ids: list[str]
    out_of_order_swaps: int
    anonymous_signups: int
    distinct_users: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, date)
    distinct_identities: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, date)
    event_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (tenant, date, event_type)
    events_by_version: dict[tuple[str, int], int] = field(default_factory=dict)  # (event_type, version)
    orders: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (tenant, date, currency)
    revenue_cents: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (tenant, date, currency)

    @property
    def malformed(self) -> int:
        return sum(self.malformed_by_defect.values())

    @property
    def late_events(self) -> int:
        return len(self.late_event_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "total_messages": self.total_messages,
            "messages_by_topic": dict(sorted(self.messages_by_topic.items())),
            "unique_valid_events": self.unique_valid_events,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "malformed_by_defect": dict(sorted(self.malformed_by_defect.items())),
            "late_events": self.late_events,
            "late_event_ids": sorted(self.late_event_ids),
            "out_of_order_swaps": self.out_of_order_swaps,
            "anonymous_signups": self.anonymous_signups,
            "distinct_users": _rows(self.distinct_users, ("tenant_id", "date"), "users"),
            "distinct_identities": _rows(self.distinct_identities, ("tenant_id", "date"), "identities"),
            "event_counts": _rows(self.event_counts, ("tenant_id", "date", "event_type"), "events"),
            "events_by_version": _rows(self.events_by_version, ("event_type", "version"), "events"),
            "orders": [
                {
                    "tenant_id": t,
                    "date": d,
                    "currency": c,
                    "orders": n,
                    "revenue": round(self.revenue_cents[(t, d, c)] / 100, 2),
                    "revenue_cents": self.revenue_cents[(t, d, c)],
                }
                for (t, d, c), n in sorted(self.orders.items())
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def write_truth(self, path: str | Path) -> Path:
        """Write ``to_json()`` to ``path`` (parents created) so a later run or a notebook can check against it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json() + "\n")
        return target

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        def table(rows_name: str, key_names: tuple[str, ...], value_name: str) -> dict[tuple, Any]:
            return {tuple(row[k] for k in key_names): row[value_name] for row in data[rows_name]}

        order_key = ("tenant_id", "date", "currency")
        return cls(
            spec=data["spec"],
            total_messages=data["total_messages"],
            messages_by_topic=data["messages_by_topic"],
            unique_valid_events=data["unique_valid_events"],
            duplicates=data["duplicates"],
            malformed_by_defect=data["malformed_by_defect"],
            late_event_ids=data["late_event_ids"],
            out_of_order_swaps=data["out_of_order_swaps"],
            anonymous_signups=data["anonymous_signups"],
            distinct_users=table("distinct_users", ("tenant_id", "date"), "users"),
            distinct_identities=table("distinct_identities", ("tenant_id", "date"), "identities"),
            event_counts=table("event_counts", ("tenant_id", "date", "event_type"), "events"),
            events_by_version=table("events_by_version", ("event_type", "version"), "events"),
            orders=table("orders", order_key, "orders"),
            revenue_cents=table("orders", order_key, "revenue_cents"),
        )

    @classmethod
    def read_truth(cls, path: str | Path) -> Truth:
        return cls.from_dict(json.loads(Path(path).read_text()))


class _SessionOver(Exception):
    """The session's clock ran past the end of the window: the visitor's remaining clicks are not generated."""


@dataclass
class _Tenant:
    tenant_id: str
    domain: str
    display_name: str
    currencies: tuple[str, ...]
    currency_cum_weights: list[float]
    locales: tuple[str, ...]
    products: list[tuple[str, str, int]]  # (product_id, category, price in cents)
    product_cum_weights: list[float]  # Zipf popularity


@dataclass
class _Visitor:
    user_id: str
    anonymous_id: str | None
    signed_in: bool
    currency: str
    context: dict[str, Any]


@dataclass(slots=True)
class _Record:
    """A valid event already encoded, plus what the defect pass needs to place it in the stream."""

    occurred_ms: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    event_id: str


class _TruthBuilder:
    """Accumulates the ground truth while valid events are generated (each is unique by construction)."""

    def __init__(self) -> None:
        self.event_counts: Counter[tuple[str, str, str]] = Counter()
        self.events_by_version: Counter[tuple[str, int]] = Counter()
        self.orders: Counter[tuple[str, str, str]] = Counter()
        self.revenue_cents: Counter[tuple[str, str, str]] = Counter()
        self.user_ids: dict[tuple[str, str], set[str]] = {}
        self.anonymous_ids: dict[tuple[str, str], set[str]] = {}
        self.stitched: dict[tuple[str, str], str] = {}  # (tenant, anonymous_id) -> user_id

    def add(self, event: dict[str, Any]) -> None:
        tenant, day, event_type = event["tenant_id"], event["occurred_at"][:10], event["event_type"]
        self.event_counts[(tenant, day, event_type)] += 1
        self.events_by_version[(event_type, event["version"])] += 1
        if event_type == "system_alert":
            return
        if event["user_id"] is not None:
            self.user_ids.setdefault((tenant, day), set()).add(event["user_id"])
        else:
            self.anonymous_ids.setdefault((tenant, day), set()).add(event["anonymous_id"])
        if event_type == "signup" and event["anonymous_id"] is not None:
            self.stitched[(tenant, event["anonymous_id"])] = event["user_id"]
        if event_type == "order_completed":
            key = (tenant, day, event["properties"]["currency"])
            self.orders[key] += 1
            self.revenue_cents[key] += round(event["properties"]["amount"] * 100)

    def users(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        stitched, raw = {}, {}
        for key in set(self.user_ids) | set(self.anonymous_ids):
            users, anons = self.user_ids.get(key, set()), self.anonymous_ids.get(key, set())
            raw[key] = len(users) + len(anons)
            stitched[key] = len(users | {self.stitched.get((key[0], a), a) for a in anons})
        return stitched, raw


class _Generator:
    """Builds the valid events tenant by tenant, then lays them out as a defective, publish-ordered stream."""

    def __init__(self, spec: GeneratorSpec, topic_for_event_type: dict[str, str]) -> None:
        missing = [t for t in EVENT_TYPES if t not in topic_for_event_type]
        if missing:
            raise ValueError(f"topic_for_event_type has no topic for event type(s) {missing}")
        self.spec = spec
        self.topics = topic_for_event_type
        self.start_ms = int(
            datetime(spec.start_date.year, spec.start_date.month, spec.start_date.day, tzinfo=UTC).timestamp() * 1000
        )
        self.end_ms = self.start_ms + spec.days * DAY_MS
        self.day_strings = [(spec.start_date + timedelta(days=d)).isoformat() for d in range(spec.days)]
        self.truth = _TruthBuilder()
        self.records: list[_Record] = []
        self.minute_prefixes: dict[int, str] = {}
        self.rng = random.Random()  # re-seeded per tenant

    # ---- valid events -------------------------------------------------------------------------------

    def iso(self, ms: int) -> str:
        """RFC 3339 UTC with milliseconds; the date-hour-minute prefix is cached (this runs once per event)."""
        minute, rest = divmod(ms, 60_000)
        prefix = self.minute_prefixes.get(minute)
        if prefix is None:
            day, in_day = divmod(minute * 60_000 - self.start_ms, DAY_MS)
            hour, in_hour = divmod(in_day, HOUR_MS)
            prefix = f"{self.day_strings[day]}T{hour:02d}:{in_hour // 60_000:02d}:"
            self.minute_prefixes[minute] = prefix
        second, milli = divmod(rest, 1000)
        return f"{prefix}{second:02d}.{milli:03d}Z"

    def version(self, event_type: str) -> int:
        latest = LATEST_VERSION.get(event_type, 1)
        return 1 if latest > 1 and self.rng.random() < self.spec.old_version_share else latest

    def emit(
        self,
        tenant: _Tenant,
        event_type: str,
        version: int,
        at_ms: int,
        properties: dict[str, Any],
        user_id: str | None,
        anonymous_id: str | None,
        session_id: str | None,
        context: dict[str, Any],
    ) -> None:
        rng = self.rng
        event = {
            "event_id": _uuid4(rng),
            "event_type": event_type,
            "version": version,
            "occurred_at": self.iso(at_ms),
            "tenant_id": tenant.tenant_id,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "session_id": session_id,
            "properties": properties,
            "context": context,
        }
        self.truth.add(event)
        self.records.append(
            _Record(
                at_ms,
                self.topics[event_type],
                message_key(event),
                encode_event(event),
                message_headers(event, f"{rng.getrandbits(128):032x}"),
                event["event_id"],
            )
        )

    def tenant(self, index: int) -> _Tenant:
        name = _TENANT_NAMES[index % len(_TENANT_NAMES)]
        tenant_id = name if index < len(_TENANT_NAMES) else f"{name}-{index // len(_TENANT_NAMES) + 1}"
        currencies, locales = _MARKETS[index % len(_MARKETS)]
        rng = self.rng
        categories = list(_CATEGORIES)
        products = []
        for n in range(_PRODUCTS_PER_TENANT):
            category = rng.choice(categories)
            major = max(1, int(rng.lognormvariate(0, 0.5) * _CATEGORIES[category]))
            products.append((f"{category[:3]}-{n + 1:04d}", category, major * 100 - 1))
        rng.shuffle(products)
        return _Tenant(
            tenant_id=tenant_id,
            domain=f"shop.{tenant_id}.example",
            display_name=tenant_id.replace("-", " ").title(),
            currencies=tuple(c for c, _ in currencies),
            currency_cum_weights=list(accumulate(w for _, w in currencies)),
            locales=locales,
            products=products,
            product_cum_weights=list(accumulate(1 / (rank + 1) ** 1.1 for rank in range(len(products)))),
        )

    def visitor(self, tenant: _Tenant) -> _Visitor:
        rng = self.rng
        anonymous = rng.random() < self.spec.anonymous_share
        device, os_name, user_agent, _ = rng.choices(_USER_AGENTS, cum_weights=_UA_CUM_WEIGHTS)[0]
        if rng.random() < 0.12:
            ip = f"2a02:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
        else:
            ip = f"{rng.choice(_PUBLIC_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        context = {
            "device": device,
            "os": os_name,
            "locale": rng.choice(tenant.locales),
            "ip": ip,
            "user_agent": user_agent,
            "app_version": rng.choice(_APP_VERSIONS),
        }
        return _Visitor(
            user_id=f"usr_{rng.getrandbits(48):012x}",
            anonymous_id=f"anon_{rng.getrandbits(64):016x}" if anonymous else None,
            signed_in=not anonymous,
            currency=rng.choices(tenant.currencies, cum_weights=tenant.currency_cum_weights)[0],
            context=context,
        )

    def session_start(self) -> int:
        rng = self.rng
        hour = rng.choices(range(24), cum_weights=_HOUR_CUM_WEIGHTS)[0]
        return self.start_ms + rng.randrange(self.spec.days) * DAY_MS + hour * HOUR_MS + rng.randrange(HOUR_MS)

    def visitor_sessions(self, tenant: _Tenant) -> None:
        """Heavy-tailed activity: sessions per day is lognormal, so a few visitors make much of the traffic."""
        rng = self.rng
        visitor = self.visitor(tenant)
        per_day = min(MAX_SESSIONS_PER_DAY, rng.lognormvariate(-1.0, 1.0))
        count = max(1, int(per_day * self.spec.days + rng.random()))
        signs_up = visitor.anonymous_id is not None and rng.random() < SIGNUP_SHARE_OF_ANONYMOUS
        signup_session = rng.randrange(count) if signs_up else -1
        for index, start in enumerate(sorted(self.session_start() for _ in range(count))):
            try:
                _Session(self, tenant, visitor, start).walk(signup=index == signup_session)
            except _SessionOver:
                pass

    def system_alerts(self, tenant: _Tenant) -> None:
        rng = self.rng
        for day in range(self.spec.days):
            for _ in range(rng.randint(1, 4)):
                component = rng.choice(list(_ALERTS))
                properties: dict[str, Any] = {
                    "component": component,
                    "severity": rng.choices(_SEVERITIES[0], cum_weights=_SEVERITIES[1])[0],
                    "message": rng.choice(_ALERTS[component]),
                }
                if rng.random() < 0.6:
                    properties["code"] = f"{component.split('-')[0].upper()}-{rng.randint(100, 599)}"
                host = rng.randint(1, 12)
                context = {
                    "device": "server",
                    "os": "linux",
                    "ip": f"10.0.{host}.{rng.randint(2, 250)}",
                    "app_version": _SERVER_APP_VERSION,
                }
                at_ms = self.start_ms + day * DAY_MS + rng.randrange(DAY_MS)
                self.emit(tenant, "system_alert", 1, at_ms, properties, None, f"host-{host}", None, context)

    def valid_events(self) -> None:
        for index in range(self.spec.tenants):
            self.rng.seed(f"{self.spec.seed}/tenant/{index}")
            tenant = self.tenant(index)
            for _ in range(self.spec.users_per_tenant):
                self.visitor_sessions(tenant)
            self.system_alerts(tenant)

    # ---- defects and publish order --------------------------------------------------------------------

    def stream(self) -> tuple[list[GeneratedMessage], Truth]:
        self.valid_events()
        spec = self.spec
        late_rng, lag_rng, dup_rng, bad_rng, swap_rng = (
            random.Random(f"{spec.seed}/{name}") for name in ("late", "lag", "duplicate", "malformed", "swap")
        )
        self.records.sort(key=attrgetter("occurred_ms"))  # stable: ties keep generation order
        # (publish ms, kind, defect, topic, key, value, headers, event_id)
        entries: list[tuple] = []
        late_ids: list[str] = []
        malformed: Counter[str] = Counter()
        for record in self.records:
            if late_rng.random() < spec.late_rate:
                published = record.occurred_ms + _log_uniform(late_rng, LATE_MIN_MS, LATE_MAX_MS)
                late_ids.append(record.event_id)
            else:
                published = record.occurred_ms + int(lag_rng.random() * NORMAL_LAG_MAX_MS)
            entries.append(
                (published, "valid", None, record.topic, record.key, record.value, record.headers, record.event_id)
            )
            if dup_rng.random() < spec.duplicate_rate:
                if dup_rng.random() < REPLAY_SHARE:
                    delay = _log_uniform(dup_rng, REPLAY_MIN_MS, REPLAY_MAX_MS)
                else:
                    delay = dup_rng.randrange(5, 3_000)
                # Same bytes, own headers list: a caller appending headers to one copy must not change the other.
                entries.append(
                    (
                        published + delay,
                        "duplicate",
                        None,
                        record.topic,
                        record.key,
                        record.value,
                        list(record.headers),
                        record.event_id,
                    )
                )
            if bad_rng.random() < spec.malformed_rate:
                defect = bad_rng.choice(DEFECTS)
                malformed[defect] += 1
                topic, key, value, headers = _malformed(json.loads(record.value), defect, bad_rng, self.topics)
                entries.append(
                    (published + bad_rng.randrange(1, 5_000), "malformed", defect, topic, key, value, headers, None)
                )
        entries.sort(key=itemgetter(0))  # stable: ties keep insertion order
        swaps = _swap_neighbours(entries, swap_rng, spec.out_of_order_rate)
        _originals_first(entries)
        messages = [
            GeneratedMessage(topic, key, value, headers, kind, defect, published)
            for published, kind, defect, topic, key, value, headers, _ in entries
        ]

        distinct_users, distinct_identities = self.truth.users()
        spec_dict = {f.name: getattr(spec, f.name) for f in fields(spec)}
        spec_dict["start_date"] = spec.start_date.isoformat()
        truth = Truth(
            spec=spec_dict,
            total_messages=len(messages),
            messages_by_topic=dict(Counter(m.topic for m in messages)),
            unique_valid_events=len(self.records),
            duplicates=len(messages) - len(self.records) - sum(malformed.values()),
            malformed_by_defect=dict(malformed),
            late_event_ids=late_ids,
            out_of_order_swaps=swaps,
            anonymous_signups=len(self.truth.stitched),
            distinct_users=distinct_users,
            distinct_identities=distinct_identities,
            event_counts=dict(self.truth.event_counts),
            events_by_version=dict(self.truth.events_by_version),
            orders=dict(self.truth.orders),
            revenue_cents=dict(self.truth.revenue_cents),
        )
        return messages, truth


class _Session:
    """One visit: a walk down the funnel with realistic drop-off, advancing a clock between clicks."""

    def __init__(self, gen: _Generator, tenant: _Tenant, visitor: _Visitor, start_ms: int) -> None:
        self.gen, self.tenant, self.visitor, self.rng = gen, tenant, visitor, gen.rng
        self.clock = start_ms
        self.session_id = f"s_{self.rng.getrandbits(64):016x}"
        self.last_url: str | None = None

    def emit(
        self,
        event_type: str,
        properties: dict[str, Any],
        version: int = 1,
        server_side: bool = False,
        both_ids: bool = False,
    ) -> None:
        if self.clock >= self.gen.end_ms:
            raise _SessionOver
        visitor, rng = self.visitor, self.rng
        if both_ids:
            user_id, anonymous_id = visitor.user_id, visitor.anonymous_id
        elif visitor.signed_in:
            user_id, anonymous_id = visitor.user_id, None
        else:
            user_id, anonymous_id = None, visitor.anonymous_id
        if server_side:
            session_id: str | None = None
            context = {"device": "server", "os": "linux", "app_version": _SERVER_APP_VERSION}
        else:
            session_id = None if rng.random() < MISSING_SESSION_SHARE else self.session_id
            context = visitor.context  # shared safely: events are encoded at once and never kept as dicts
        self.gen.emit(
            self.tenant, event_type, version, self.clock, properties, user_id, anonymous_id, session_id, context
        )
        self.clock += 1_000 + int(rng.expovariate(1 / 25_000))

    def page_view(self, page_type: str, path: str, title: str) -> None:
        url = f"https://{self.tenant.domain}{path}"
        version = self.gen.version("page_view")
        properties: dict[str, Any] = {
            "url": url,
            "referrer": self.last_url
            if self.last_url
            else self.rng.choices(_REFERRERS, cum_weights=_REFERRER_CUM_WEIGHTS)[0],
            "title": f"{title} | {self.tenant.display_name}",
        }
        if version == 2:
            properties["page_type"] = page_type
            properties["scroll_depth"] = round(self.rng.random(), 2)
        self.emit("page_view", properties, version)
        self.last_url = url

    def product(self) -> tuple[str, str, int]:
        return self.rng.choices(self.tenant.products, cum_weights=self.tenant.product_cum_weights)[0]

    def view_product(self, product: tuple[str, str, int]) -> None:
        product_id, category, cents = product
        self.page_view("product", f"/p/{product_id}", f"{category.title()} {product_id}")
        self.emit(
            "product_view",
            {"product_id": product_id, "category": category, "price": cents / 100, "currency": self.visitor.currency},
        )

    def walk(self, signup: bool) -> None:
        rng, visitor = self.rng, self.visitor
        if visitor.signed_in and rng.random() < P_LOGIN_AT_SESSION_START:
            self.emit("login", {"method": rng.choices(_LOGIN_METHODS[0], cum_weights=_LOGIN_METHODS[1])[0]})
        viewed: list[tuple[str, str, int]] = []
        landing = rng.random()
        if landing < 0.45:
            self.page_view("home", "/", "Home")
        elif landing < 0.75:
            category = rng.choice(list(_CATEGORIES))
            self.page_view("category", f"/c/{category}", category.title())
        else:
            viewed.append(self.product())
            self.view_product(viewed[-1])
        if signup:
            self.emit(
                "signup",
                {
                    "method": rng.choices(_SIGNUP_METHODS[0], cum_weights=_SIGNUP_METHODS[1])[0],
                    "plan": rng.choices(_PLANS[0], cum_weights=_PLANS[1])[0],
                },
                both_ids=True,
            )
            visitor.signed_in = True
        for _ in range(int(rng.expovariate(0.8))):
            path = rng.choice(_OTHER_PATHS)
            self.page_view("other", path, path.strip("/").split("?")[0].replace("/", " ").title())
        if viewed or rng.random() < P_PRODUCT_VIEW:
            for _ in range(min(6, int(rng.expovariate(0.7)) + (0 if viewed else 1))):
                viewed.append(self.product())
                self.view_product(viewed[-1])
        if not viewed or rng.random() >= P_ADD_TO_CART:
            return
        cart: dict[str, tuple[int, int]] = {}  # product_id -> (quantity, cents)
        for product_id, _, cents in rng.sample(viewed, min(len(viewed), 1 + int(rng.expovariate(1.5)))):
            if product_id in cart:
                continue
            quantity = rng.choices((1, 2, 3), cum_weights=(80, 95, 100))[0]
            cart[product_id] = (quantity, cents)
            self.emit(
                "add_to_cart",
                {"product_id": product_id, "quantity": quantity, "price": cents / 100, "currency": visitor.currency},
            )
        if rng.random() >= P_CHECKOUT:
            return
        self.page_view("cart", "/cart", "Your cart")
        item_count = sum(q for q, _ in cart.values())
        cart_cents = sum(q * c for q, c in cart.values())
        self.page_view("checkout", "/checkout", "Checkout")
        self.emit(
            "checkout_started",
            {
                "cart_id": f"cart_{rng.getrandbits(48):012x}",
                "item_count": item_count,
                "cart_value": cart_cents / 100,
                "currency": visitor.currency,
            },
        )
        if rng.random() >= P_ORDER:
            return
        version = self.gen.version("order_completed")
        properties: dict[str, Any] = {"order_id": f"ord_{rng.getrandbits(48):012x}", "currency": visitor.currency}
        amount_cents = cart_cents
        if version == 2:
            discount_cents = round(cart_cents * rng.choice((0.05, 0.1, 0.2))) if rng.random() < 0.2 else 0
            amount_cents -= discount_cents
            if discount_cents or rng.random() < 0.5:
                properties["discount_amount"] = discount_cents / 100
            properties["payment_method"] = rng.choices(_PAYMENT_METHODS[0], cum_weights=_PAYMENT_METHODS[1])[0]
        properties["amount"] = amount_cents / 100
        if rng.random() < 0.9:
            properties["item_count"] = item_count
        self.emit("order_completed", properties, version, server_side=rng.random() < SERVER_SIDE_ORDER_SHARE)


def _uuid4(rng: random.Random) -> str:
    """``str(uuid.UUID(int=rng.getrandbits(128), version=4))`` at a third of the cost (hot path)."""
    h = f"{rng.getrandbits(128) & _UUID_CLEAR_BITS | _UUID_V4_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """Delays spread evenly over orders of magnitude: as many 1-3 h as 1-3 day late arrivals."""
    return int(low * (high / low) ** rng.random())


def _swap_neighbours(entries: list[tuple], rng: random.Random, rate: float) -> int:
    """Local shuffle: with probability ``rate`` a message trades places with one up to MAX_SWAP_DISTANCE ahead."""
    swaps = 0
    last = len(entries) - 1
    for i in range(last):
        if rng.random() < rate:
            j = min(last, i + rng.randint(1, MAX_SWAP_DISTANCE))
            entries[i], entries[j] = entries[j], entries[i]
            swaps += 1
    return swaps


def _originals_first(entries: list[tuple]) -> None:
    """A swap can move a re-send ahead of its original; give the earlier slot back to the original.

    So a "duplicate" always repeats a message already in the stream, and an event's first delivery
    keeps its own publish time (on time or late, as decided).
    """
    first_slot: dict[str, int] = {}
    for slot, entry in enumerate(entries):
        event_id = entry[7]
        if event_id is None:
            continue
        if event_id not in first_slot:
            first_slot[event_id] = slot
        elif entry[1] == "valid":
            earlier = first_slot[event_id]
            entries[earlier], entries[slot] = entry, entries[earlier]


def _malformed(
    event: dict[str, Any], defect: str, rng: random.Random, topics: dict[str, str]
) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
    """A broken sibling of ``event`` (fresh event_id), as a careless producer sends it: (topic, key, value, headers)."""
    event["event_id"] = _uuid4(rng)
    trace_id = f"{rng.getrandbits(128):032x}"
    topic = topics[event["event_type"]]
    properties = event["properties"]
    value: bytes | None = None
    if defect == "invalid_json":
        encoded = encode_event(event)
        value = encoded[: rng.randrange(1, len(encoded) - 1)]  # any proper prefix of an object is not JSON
    elif defect == "not_an_object":
        value = b"[" + encode_event(event) + b"]"
    elif defect == "missing_field":
        choices = [*_REQUIRED_ENVELOPE, *(f"properties.{k}" for k in _REQUIRED_PROPERTIES[event["event_type"]])]
        name = rng.choice(choices)
        del (properties if name.startswith("properties.") else event)[name.removeprefix("properties.")]
    elif defect == "wrong_type":
        numeric = [k for k in _NUMERIC_PROPERTIES if k in properties]
        if numeric and rng.random() < 0.7:
            name = rng.choice(numeric)
            properties[name] = str(properties[name])
        else:
            event["version"] = str(event["version"])
    elif defect == "invalid_value":
        name, bad = rng.choice(_invalid_values(event))
        (event["context"] if name == "device" else properties if name in properties else event)[name] = bad
    elif defect == "unknown_field":
        if rng.random() < 0.5:
            properties["coupon_code"] = "SAVE10"
        else:
            event["userId"] = event["user_id"] or event["anonymous_id"]
    elif defect == "unknown_event_type":
        event["event_type"] = rng.choice(_UNKNOWN_EVENT_TYPES)
        topic = rng.choice(sorted(set(topics.values())))
    elif defect == "bad_timestamp":
        event["occurred_at"] = rng.choice(_BAD_TIMESTAMPS)
    elif defect == "missing_identity":
        event["user_id"] = event["anonymous_id"] = None
    else:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECTS}")
    return (
        topic,
        message_key(event),
        value if value is not None else encode_event(event),
        message_headers(event, trace_id),
    )


def _invalid_values(event: dict[str, Any]) -> list[tuple[str, Any]]:
    """Right type, wrong value: out of range numbers, enum typos, a tenant id that breaks the pattern."""
    options: list[tuple[str, Any]] = [("tenant_id", "Acme Corp"), ("version", 0)]
    properties = event["properties"]
    if "currency" in properties:
        options.append(("currency", properties["currency"].lower()))
    for name in ("price", "amount", "cart_value"):
        if name in properties:
            options.append((name, -abs(properties[name]) - 1))
    for name in ("quantity", "item_count"):
        if name in properties:
            options.append((name, 0))
    enum_typos = {
        "severity": "fatal",
        "method": "facebook",
        "plan": "gold",
        "payment_method": "crypto",
        "page_type": "landing",
    }
    options.extend((name, bad) for name, bad in enum_typos.items() if name in properties)
    if "device" in event["context"] and event["context"]["device"] != "server":
        options.append(("device", "smartwatch"))
    return options


def generate(spec: GeneratorSpec, topic_for_event_type: dict[str, str]) -> tuple[list[GeneratedMessage], Truth]:
    """Messages in publish order and the truth they must reconcile to; same spec -> identical bytes."""
    return _Generator(spec, topic_for_event_type).stream()
