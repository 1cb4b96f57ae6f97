"""User agents -> (device class, OS family, browser family), the parse behind ``silver.dim_devices``.

Runs on the driver, over the agents ``silver.dim_devices`` does not know yet (``refresh_devices`` in
``pipelines.silver.dimensions``). Why there and not in Spark's Python workers, where it ran until 2026-12-05: the
agents are a dimension - distinct strings, few next to the events, and only the new ones reach the parse - and
their parsed rows came back to the driver for the MERGE anyway; the ``mapInArrow`` started a Python worker and its
daemon (111 + 28 MB PSS) that stayed alive while the 10M-event build's JVM held its peak. The pure-Python resolver
takes about 1 ms an agent (a first backfill of 10,000 distinct agents: ten seconds of one core). Where first loads
see far more, install ``ua-parser-rs``: ``ua_parser.parse`` picks its Rust resolver by itself, about 40x faster,
for 25 MB more on the driver (measured 2026-12-05) - which is why it is not a default.
"""

from __future__ import annotations

import pyarrow as pa

DEVICES_SCHEMA = pa.schema(
    [
        ("user_agent_key", pa.string()),  # keyed pseudonym of the user agent (a fingerprint is never stored)
        ("device_class", pa.string()),
        ("os_family", pa.string()),
        ("browser_family", pa.string()),
    ]
)
_DESKTOP_OS = frozenset({"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Chrome OS", "FreeBSD", "Debian"})


def parse_user_agent(user_agent: str) -> tuple[str, str | None, str | None]:
    """(device_class, os_family, browser_family) of one user agent string."""
    import ua_parser

    result = ua_parser.parse(user_agent)
    os_family = result.os.family if result.os else None
    browser = result.user_agent.family if result.user_agent else None
    family = (result.device.family if result.device else None) or ""
    brand = (result.device.brand if result.device else None) or ""
    if family == "Spider":
        device_class = "bot"
    elif family == "iPad" or "tablet" in brand.lower() or "tablet" in family.lower() or "Kindle" in family:
        device_class = "tablet"
    elif os_family == "Android" and "Mobile" not in user_agent:
        device_class = "tablet"  # Android's convention: phones send "Mobile", tablets do not
    elif os_family in {"iOS", "Android"} or "Mobile" in user_agent:
        device_class = "mobile"
    elif os_family in _DESKTOP_OS:
        device_class = "desktop"
    else:
        device_class = "other"
    return device_class, os_family, browser


def parse_agents(agents: pa.Table) -> pa.Table:
    """(``user_agent_key``, ``user_agent``) rows in, ``DEVICES_SCHEMA`` rows out: the agent itself stays behind."""
    parsed = [parse_user_agent(agent) for agent in agents.column("user_agent").to_pylist()]
    return pa.Table.from_arrays(
        [agents.column("user_agent_key"), *(pa.array([p[i] for p in parsed], pa.string()) for i in range(3))],
        schema=DEVICES_SCHEMA,
    )
