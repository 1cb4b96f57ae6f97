"""``gold build``: silver.events -> the gold tables, each partitioned by (tenant_id, date).

Definitions (users are ``user_key`` after stitching; machine events - ``system_alert`` - are not users):

daily_active_users
    dau = distinct users active on the day; wau = distinct users over the 7 days ending on it; mau = over
    the 28 days ending on it (28, not 30: four whole weeks, so weekday mix does not wobble the metric).
    new_users = active on the day and not in the 28 days before it; returning_users = dau - new_users.
    One row per tenant and day with mau > 0.
event_counts
    events per tenant, day and event_type (after dedup), and the distinct users behind them (0 for machine
    event types).
sessions
    Sessions (tenant_id, session_id) are dated by their first event. duration = last - first event, in
    seconds; bounce = a single-event session; median is exact (interpolated between the middle two).
funnels (``conf/funnels.yaml``: name, ordered event-type steps, window_minutes)
    An attempt starts at any step-1 event; it reaches step k when events of steps 2..k follow in order
    (each at or after the previous step's time, earliest match taken) within window_minutes of the start.
    Per tenant, day of the start and step: users whose best attempt that day reached the step, their share
    of step-1 users (conversion_from_start) and of the previous step's (conversion_from_previous; null when
    nobody reached the previous step).
revenue
    Per tenant, day and currency: orders (order_completed events), revenue = sum of ``amount`` (what was
    charged: net of discount), discounts = sum of discount_amount, gross_revenue = revenue + discounts,
    average_order_value = revenue / orders (rounded half-up to cents). Exact decimals.
event_rate_anomalies
    Per tenant, event_type and day: the day's count against the previous ``gold.anomaly_window_days`` days on
    which the tenant had any events (a missing type on such a day counts 0). score = robust z =
    (count - median) / (1.4826 * MAD), or / (1.2533 * mean absolute deviation) when MAD is 0; null when fewer
    than max(3, window / 2) baseline days exist or both deviations are 0. flagged when |score| >=
    ``gold.anomaly_threshold``, or when the baseline is constant and the day differs from it; direction up /
    down / none against the median.

Late data and rolling windows
    A run for [D1, D2] rewrites the days [D1 - gold.late_lookback_days, D2]: every silver day a late event
    can have changed within the lookback, and the rolling metrics that depend on it inside the range. It
    reads silver [D1 - lookback - max(28, anomaly window), D2 + funnel lookahead] as INPUT only (rolling
    windows, new-user history, baselines, sessions and funnel attempts running past midnight); it never
    writes outside the rewritten days. Older changes need a replay of their range.

Modules:

* ``activity``  - daily_active_users, event_counts and sessions (and ``is_user_event``).
* ``funnels``   - the ``conf/funnels.yaml`` config (``Funnel``, ``load_funnels``) and the funnels table.
* ``revenue``   - the revenue table.
* ``anomalies`` - the event_rate_anomalies table.
* ``job``       - ``build`` (write-audit-publish of every table), ``TABLES``, ``table_path``, the reconciliation.
* ``report``    - ``summary``: the published tables read back for the main job's printout.
"""

from pipelines.gold.funnels import FunnelConfigError, load_funnels
from pipelines.gold.job import TABLES, GoldResult, build, table_path
from pipelines.gold.report import GoldSummary, summary

__all__ = ["TABLES", "FunnelConfigError", "GoldResult", "GoldSummary", "build", "load_funnels", "summary", "table_path"]
