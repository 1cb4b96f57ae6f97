"""The simulation of the valid events: tenants with their catalogues, visitors, sessions down the funnel.

Each tenant's events come from one ``random.Random`` seeded with ``<seed>/tenant/<index>``, so adding a
tenant never changes the others. Events are encoded as soon as they are made (``_Record``) and counted into
the truth at the same time; defects and publish order are applied afterwards by ``generate``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from pipelines.contracts.events import encode_event, message_headers, message_key
from pipelines.synthetic.truth import _TruthBuilder
from pipelines.synthetic.vocabulary import (
    _ALERTS,
    _APP_VERSIONS,
    _CATEGORIES,
    _HOUR_CUM_WEIGHTS,
    _LOGIN_METHODS,
    _MARKETS,
    _OTHER_PATHS,
    _PAYMENT_METHODS,
    _PLANS,
    _PRODUCTS_PER_TENANT,
    _PUBLIC_FIRST_OCTETS,
    _REFERRER_CUM_WEIGHTS,
    _REFERRERS,
    _SERVER_APP_VERSION,
    _SEVERITIES,
    _SIGNUP_METHODS,
    _TENANT_NAMES,
    _UA_CUM_WEIGHTS,
    _USER_AGENTS,
    EVENT_TYPES,
    LATEST_VERSION,
)

if TYPE_CHECKING:
    from pipelines.synthetic.generator import GeneratorSpec

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_UUID_CLEAR_BITS = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF  # version nibble and variant bits
_UUID_V4_BITS = 0x00000000_0000_4000_8000_000000000000  # version 4, RFC 4122 variant

SIGNUP_SHARE_OF_ANONYMOUS = 0.3  # anonymous visitors who sign up during the window
MAX_SESSIONS_PER_DAY = 12.0
MISSING_SESSION_SHARE = 0.03  # tracker glitches: web events without a session id
SERVER_SIDE_ORDER_SHARE = 0.4  # orders confirmed by the backend: no session, device "server"
# Funnel drop-off: P(next step | previous step).
P_PRODUCT_VIEW, P_ADD_TO_CART, P_CHECKOUT, P_ORDER = 0.6, 0.3, 0.6, 0.7
P_LOGIN_AT_SESSION_START = 0.25


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


class _Generator:
    """Builds the valid events tenant by tenant; ``generate`` lays them out as a defective, publish-ordered stream."""

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
