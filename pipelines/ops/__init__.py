"""Operating the platform: what an on-call engineer and a reviewer ask of it.

* ``catalog`` - the table catalog generated from the registry, the configuration and the lake (never by hand).
* ``audit``   - the append-only audit log of replays, erasures, skipped gates and schema changes.
* ``lineage`` - OpenLineage run events (START, COMPLETE, FAIL) of every job command, datasets from the registry.
"""
