"""Serving gold to the people and tools that read it, without a copy step.

* ``api``     - the metrics API (FastAPI): tenant-scoped, cached per table version, JSON/CSV, OpenAPI.
* ``metrics`` - what the API answers: the gold slices, read with delta-rs, and the response cache.
* ``tokens``  - API tokens: stored as hashes, one tenant each (or an operator token that names one).
* ``sql``     - the SQL endpoint (Spark Thrift Server) and its logins; tenant isolation in a Spark extension.
"""
