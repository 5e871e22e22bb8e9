"""Bulk export settings (``TRIALFHIR_EXPORT_*``).

Read from :attr:`service.config.Settings.extra` first (tests and embedders pass them
there) and then from the environment, so the service's one ``Settings`` object stays the
single source of configuration without this package widening it.

| variable | default | meaning |
|---|---|---|
| ``TRIALFHIR_EXPORT_DIR`` | ``./exports`` | where NDJSON files are written (one folder per job); shared by every server process of a deployment |
| ``TRIALFHIR_EXPORT_TTL_SECONDS`` | 3600 | how long a finished job's files stay downloadable; the worker deletes them afterwards |
| ``TRIALFHIR_EXPORT_LEASE_SECONDS`` | 30 | a running job's lease; a process that stops renewing it (it died) loses the job to another process, which resumes it |
| ``TRIALFHIR_EXPORT_MAX_ATTEMPTS`` | 3 | a job interrupted this many times is marked failed with the reason |
| ``TRIALFHIR_EXPORT_FILE_MAX_RESOURCES`` | 100000 | resources per NDJSON file before the next file of the type starts |
| ``TRIALFHIR_EXPORT_BATCH`` | 5000 | rows read from the database per batch (the memory bound) |
| ``TRIALFHIR_EXPORT_POLL_SECONDS`` | 1.0 | how often an idle worker looks for queued or abandoned jobs |
| ``TRIALFHIR_EXPORT_BATCH_DELAY_MS`` | 0 | pause after each batch: throttles exports on a busy database (tests use it to catch a job mid-way) |
| ``TRIALFHIR_EXPORT_WORKER`` | 1 | 0 turns the background worker off in this process (jobs then wait for a process that runs one) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BulkSettings:
    export_dir: Path = Path("./exports")
    ttl_seconds: float = 3600
    lease_seconds: float = 30
    max_attempts: int = 3
    file_max_resources: int = 100_000
    batch_size: int = 5000
    poll_seconds: float = 1.0
    batch_delay_ms: float = 0
    worker: bool = True
    #: Retry-After sent with 202 status answers.
    retry_after_seconds: int = 1

    @classmethod
    def from_settings(cls, settings: Any) -> "BulkSettings":
        extra: dict[str, str] = dict(getattr(settings, "extra", None) or {})

        def get(name: str, default: str) -> str:
            value = extra.get(name)
            if value is None:
                value = os.environ.get(name)
            return value if value not in (None, "") else default

        return cls(
            export_dir=Path(get("TRIALFHIR_EXPORT_DIR", "./exports")),
            ttl_seconds=float(get("TRIALFHIR_EXPORT_TTL_SECONDS", "3600")),
            lease_seconds=float(get("TRIALFHIR_EXPORT_LEASE_SECONDS", "30")),
            max_attempts=int(get("TRIALFHIR_EXPORT_MAX_ATTEMPTS", "3")),
            file_max_resources=max(1, int(get("TRIALFHIR_EXPORT_FILE_MAX_RESOURCES", "100000"))),
            batch_size=max(1, int(get("TRIALFHIR_EXPORT_BATCH", "5000"))),
            poll_seconds=float(get("TRIALFHIR_EXPORT_POLL_SECONDS", "1.0")),
            batch_delay_ms=float(get("TRIALFHIR_EXPORT_BATCH_DELAY_MS", "0")),
            worker=get("TRIALFHIR_EXPORT_WORKER", "1") not in ("0", "false", "no"),
        )
