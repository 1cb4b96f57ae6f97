"""Synthetic data for tests, benchmarks and demos: a realistic, defective event stream and its ground truth.

The stream stands in for production traffic so every layer can be checked against exact expected answers.
Import from the modules directly (this package re-exports nothing):

- ``generator``: the entry point, ``generate(GeneratorSpec(...), topics)`` -> (``GeneratedMessage`` list, ``Truth``),
  deterministic for a seed down to the bytes;
- ``simulation``: tenants, visitors and sessions walking the shop funnel, producing the valid events;
- ``vocabulary``: the fixed tables it draws from (event types, tenants, markets, user agents, weights);
- ``defects``: late and re-sent deliveries, out-of-order swaps and malformed messages;
- ``truth``: ``Truth``, the metrics the lakehouse's tables must reproduce, and the builder that accumulates it;
- ``bronze``: bronze rows written straight to Delta, without Kafka, so silver/gold tests and benches skip the
  broker and the streaming job;
- ``users``: a sample CRM export (conf/dimensions/users.csv) for the users of a generated stream.

Synthetic data stands where producers stand, so it may use the contracts of what it feeds (bronze's table,
silver's users file); nothing in the platform imports it.
"""
