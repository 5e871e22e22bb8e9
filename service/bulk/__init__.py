"""Bulk Data export (FHIR Bulk Data Access IG v2) and ``$everything``.

- :mod:`.router` — the HTTP routes: kick-off, status/manifest, cancel, file downloads,
  ``Patient/{id}/$everything`` and ``ResearchStudy/{id}/$everything``;
- :mod:`.service` — kick-off validation and the manifest; :mod:`.jobs` — the job table;
- :mod:`.worker` — one background thread per server process that claims jobs under a
  lease and resumes jobs whose process died; :mod:`.runner` — one attempt at a job;
- :mod:`.scope` — what a Patient/Group export covers, as of transactionTime;
- :mod:`.files` — NDJSON parts, checkpoints, downloads; :mod:`.client` — ``trialfhir export``.

Consistency. ``transactionTime`` T is read behind a write fence
(:func:`.jobs.kick_off`): every write that got a ``lastUpdated`` ≤ T has committed
before the job exists, and every later write gets a ``lastUpdated`` > T. The export
writes, for each resource, the version current at T (from ``resource_version`` when the
live row changed after T). So an export never contains anything written after T, and a
following export ``_since=T`` contains every change after it — a chain of incremental
exports replays to exactly the database's state.
"""
