"""Operating the platform: what an on-call engineer and a reviewer ask of it.

* ``status``  - one snapshot: Kafka lag from the broker and the checkpoint, the stream, freshness, gates, quarantine.
* ``alerts``  - rules from conf/alerts.yaml judged on the snapshot; firing/resolved once per incident.
* ``metrics`` - the jobs' metrics history (ops.job_metrics) and the Prometheus exporter of it and the snapshot.
* ``catalog`` - the table catalog generated from the registry, the configuration and the lake (never by hand).
* ``audit``   - the append-only audit log of replays, erasures, skipped gates and schema changes.
* ``lineage`` - OpenLineage run events (START, COMPLETE, FAIL) of every job command, datasets from the registry.
"""
