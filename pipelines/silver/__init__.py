"""``silver build``: bronze.events -> silver.events, one atomic partition replacement per run.

silver.events (partitioned by tenant_id, event_date) holds every event once, at the current schema
version, pseudonymized, attributed to a stitched identity, sessionized and enriched. The rules:

Dedup (``silver.dedup_horizon_days``, default 7)
    By (tenant_id, event_id), whatever the copies' occurred_at: a bronze row is dropped when another copy of
    its (tenant_id, event_id) was ingested before it (ingested_at, then Kafka topic, partition, offset: a
    total order) and occurred at most the horizon apart from it. So of copies within the horizon exactly the
    first ingested is kept - also when a client re-stamped the time on retry and the copies sit on different
    days, and whichever days are built, in whichever order or runs: the rule reads only bronze (the
    horizon's key columns around the built days), never what silver holds. Copies further apart than the
    horizon are separate events.

Upcast (every older version to the latest registered one; ``source_version`` keeps the original)
    page_view v1 -> v2: ``page_type`` derived from the URL path when absent (``/`` home, ``/c/...``
    category, ``/p/...`` product, ``/cart`` cart, ``/checkout`` checkout, anything else other - the
    tenants' URL convention, the same values v2 trackers send); ``scroll_depth`` stays absent (unknown).
    order_completed v1 -> v2: ``discount_amount`` = 0.0 when absent (v1 had no discounts, and a v2 event
    without it had none: ``amount`` is always what was charged, net of discount); ``payment_method``
    stays absent (unknown). A v2 event missing an optional field gets the same default.

Identity stitching
    A signup event carries both ids. Every event of that anonymous_id - on every day, before and after the
    signup - is attributed to that user_id; when one anonymous_id signed up more than once, the earliest
    signup wins. Signups are read from all of bronze (only its signup partitions) and joined in Spark - the
    driver never holds them - so a rebuild applies every signup known at that time. A daily run for [D1, D2]
    also rebuilds the days in the late-data lookback (below) holding anonymous events of visitors who signed
    up in [D1, D2], so yesterday's
    browsing moves to the new user on the day of the signup; older anonymous history follows on the next
    replay of its days. Identity = user_id, else the stitched user_id, else the anonymous_id;
    ``user_key`` is its keyed pseudonym (see pipelines.silver.pii), ``is_identified`` says it is a user id.

Sessionization (``silver.session_timeout_minutes``, default 30)
    A user's events split into activity blocks wherever the gap to the previous event exceeds the timeout.
    An event without session_id takes the session_id of the nearest earlier event with one in its block,
    else of the nearest later one, else a derived id ``ds_<hash of tenant, user_key, first event of the
    block>``; ``session_is_derived`` marks them. The day before each built day is read as context so
    blocks crossing midnight resolve the same way whatever range is built. Machine events
    (``system_alert``) belong to hosts, not people: no session.

Enrichment
    users dimension (pipelines.silver.dimensions) on (tenant_id, user_key): user_signup_date, user_plan,
    user_country, user_cohort_week; device dimension on the user agent: device_class (falls back to
    ``context.device`` when there is no user agent, e.g. ``server``), os_family, browser_family. Unmatched
    rows keep null enrichment and are counted in the run summary.

Late data
    A run for [D1, D2] also rebuilds every day in [D1 - gold.late_lookback_days, D1 - 1] that holds bronze
    rows ingested at or after D1 00:00 UTC: late events that arrived during the run's window. Daily runs
    therefore pick up every late arrival within the lookback (and the stitching refresh above).
    ``include_late=False`` (replay) rebuilds exactly the range.

Modules:

* ``model``      - the silver.events table: partitions, columns, typed properties, ``property_struct``, paths.
* ``dedup``      - ``later_copies``: the bronze copies the dedup rule drops.
* ``transform``  - ``transform``: every rule above as one DataFrame over the bronze rows of a build.
* ``sessions``   - ``sessionize``: activity blocks and the session id of each event.
* ``job``        - ``build`` (write-audit-publish), late and re-stitched days, its gate inputs, the quarantine.
* ``pii``        - PII rules and keyed pseudonyms (``conf/pii.yaml``).
* ``dimensions`` - the users and devices dimensions and the identity map.
* ``user_agents`` - the user-agent parse behind the devices dimension.
"""

from pipelines.silver.job import SilverResult, build, quarantine_rate
from pipelines.silver.model import MACHINE_EVENT_TYPES, events_path, quarantine_path

__all__ = ["MACHINE_EVENT_TYPES", "SilverResult", "build", "events_path", "quarantine_path", "quarantine_rate"]
