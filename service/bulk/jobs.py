"""The ``bulk_export_job`` table: every statement that reads or changes a job.

A job's life: ``queued`` (kick-off) → ``running`` (a worker holds its lease) →
``completed`` | ``failed``; ``cancelled`` by DELETE at any point; ``expired`` once its
files outlived ``TRIALFHIR_EXPORT_TTL_SECONDS`` and were deleted.

Ownership is a lease: a worker claims a job with a conditional UPDATE (only if nobody
holds an unexpired lease), renews it while it works, and every checkpoint or state change
it writes is conditional on still being the owner. A process that dies stops renewing;
once the lease has run out any process claims the job again and resumes it from its last
checkpoint, or marks it failed after ``max_attempts`` claims.

Kick-off runs behind the write fence (:func:`kick_off`): see the module docstring of
:mod:`service.bulk` for why that makes ``transactionTime`` exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, text, update

from service.db.engine import WRITE_FENCE_KEY, WRITE_OPTION, active_engine, is_postgres
from service.db.schema import bulk_export_job, bulk_export_key

ACTIVE = ("queued", "running")
FINISHED = ("completed", "failed")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    status: str
    level: str
    group_id: str | None
    request_url: str
    params: dict[str, Any]
    transaction_time_us: int
    client_id: str | None
    created_us: int
    updated_us: int
    finished_us: int | None
    expires_us: int | None
    owner: str | None
    lease_until_us: int | None
    attempts: int
    checkpoint: dict[str, Any] | None
    manifest: dict[str, Any] | None
    error: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Any) -> "Job":
        m = row._mapping
        return cls(
            id=m["id"],
            status=m["status"],
            level=m["level"],
            group_id=m["group_id"],
            request_url=m["request_url"],
            params=json.loads(m["params"]),
            transaction_time_us=m["transaction_time_us"],
            client_id=m["client_id"],
            created_us=m["created_us"],
            updated_us=m["updated_us"],
            finished_us=m["finished_us"],
            expires_us=m["expires_us"],
            owner=m["owner"],
            lease_until_us=m["lease_until_us"],
            attempts=m["attempts"],
            checkpoint=json.loads(m["checkpoint"]) if m["checkpoint"] else None,
            manifest=json.loads(m["manifest"]) if m["manifest"] else None,
            error=json.loads(m["error"]) if m["error"] else None,
        )


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A short write transaction (BEGIN IMMEDIATE on SQLite, so writers queue, never deadlock)."""
    active_engine.set(engine)
    with engine.connect() as conn:
        if not is_postgres(engine):
            conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A short read transaction (READ COMMITTED on PostgreSQL: each batch sees what is committed)."""
    active_engine.set(engine)
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def kick_off(engine: Engine, values: dict[str, Any]) -> tuple[str, int]:
    """Record a new job behind the write fence and return (id, transactionTime in µs).

    PostgreSQL: every write transaction holds ``pg_advisory_xact_lock_shared(K)`` from its
    start to its commit (:func:`service.db.engine.run_in_transaction`). Taking the same key
    exclusively waits until the writes in flight have committed and holds new ones back
    for the instant it takes to read the clock and insert the job. SQLite: ``BEGIN
    IMMEDIATE`` is the database's write lock, with the same effect.

    Hence every write whose ``lastUpdated`` is ≤ transactionTime committed before this
    job became visible, and every later write gets a ``lastUpdated`` > transactionTime
    (the loop below lets the clock move past it before the fence opens). An export that
    reads versions with ``lastUpdated`` ≤ transactionTime therefore sees exactly the
    committed state at that instant, and an incremental export ``_since`` that instant
    misses nothing.
    """
    import uuid

    job_id = uuid.uuid4().hex
    with write_tx(engine) as conn:
        if is_postgres(engine):
            conn.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_FENCE_KEY})"))
        t = now_us()
        row = dict(values)
        row.update(
            id=job_id,
            status="queued",
            transaction_time_us=t,
            created_us=t,
            updated_us=t,
            attempts=0,
            params=json.dumps(values["params"]),
        )
        conn.execute(insert(bulk_export_job).values(**row))
        while now_us() <= t:  # let the clock pass t before any later write can start
            time.sleep(0)
    return job_id, t


def get(engine: Engine, job_id: str) -> Job | None:
    with read_tx(engine) as conn:
        row = conn.execute(select(bulk_export_job).where(bulk_export_job.c.id == job_id)).first()
    return Job.from_row(row) if row else None


def claimable(engine: Engine, now: int, limit: int = 5) -> list[str]:
    """Ids of jobs waiting for a worker: queued, or running under a lease that ran out."""
    j = bulk_export_job.c
    with read_tx(engine) as conn:
        rows = conn.execute(
            select(j.id)
            .where(j.status.in_(ACTIVE), or_(j.owner.is_(None), j.lease_until_us.is_(None), j.lease_until_us < now))
            .order_by(j.created_us)
            .limit(limit)
        ).all()
    return [r[0] for r in rows]


def claim(engine: Engine, job_id: str, owner: str, lease_seconds: float, max_attempts: int) -> Job | None:
    """Take ``job_id`` if nobody holds it; None when another process was faster.

    A job that was already claimed ``max_attempts`` times is marked failed instead (each
    claim after the first means the previous owner died mid-way)."""
    j = bulk_export_job.c
    now = now_us()
    free = and_(j.id == job_id, j.status.in_(ACTIVE), or_(j.owner.is_(None), j.lease_until_us.is_(None), j.lease_until_us < now))
    with write_tx(engine) as conn:
        row = conn.execute(select(bulk_export_job).where(free)).first()
        if row is None:
            return None
        job = Job.from_row(row)
        if job.attempts >= max_attempts:
            reason = (
                f"The export was interrupted {job.attempts} time(s) (its server process stopped while it ran) "
                f"and was abandoned after {max_attempts} attempt(s); start a new export."
            )
            conn.execute(
                update(bulk_export_job)
                .where(free)
                .values(status="failed", owner=None, lease_until_us=None, finished_us=now, updated_us=now, error=json.dumps({"status": 500, "code": "incomplete", "diagnostics": reason}))
            )
            conn.execute(delete(bulk_export_key).where(bulk_export_key.c.job_id == job_id))
            return None
        result = conn.execute(
            update(bulk_export_job)
            .where(free)
            .values(status="running", owner=owner, lease_until_us=now + int(lease_seconds * 1_000_000), attempts=j.attempts + 1, updated_us=now)
        )
        if result.rowcount != 1:
            return None
        row = conn.execute(select(bulk_export_job).where(j.id == job_id)).first()
    return Job.from_row(row)


def _mine(job_id: str, owner: str) -> Any:
    j = bulk_export_job.c
    return and_(j.id == job_id, j.owner == owner, j.status == "running")


def renew(engine: Engine, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the job is no longer this owner's (cancelled or taken over)."""
    now = now_us()
    with write_tx(engine) as conn:
        res = conn.execute(update(bulk_export_job).where(_mine(job_id, owner)).values(lease_until_us=now + int(lease_seconds * 1_000_000)))
    return res.rowcount == 1


def save_checkpoint(engine: Engine, job_id: str, owner: str, checkpoint: dict[str, Any], lease_seconds: float) -> bool:
    now = now_us()
    with write_tx(engine) as conn:
        res = conn.execute(
            update(bulk_export_job)
            .where(_mine(job_id, owner))
            .values(checkpoint=json.dumps(checkpoint), updated_us=now, lease_until_us=now + int(lease_seconds * 1_000_000))
        )
    return res.rowcount == 1


def complete(engine: Engine, job_id: str, owner: str, checkpoint: dict[str, Any], manifest: dict[str, Any], ttl_seconds: float) -> bool:
    now = now_us()
    with write_tx(engine) as conn:
        res = conn.execute(
            update(bulk_export_job)
            .where(_mine(job_id, owner))
            .values(
                status="completed",
                checkpoint=json.dumps(checkpoint),
                manifest=json.dumps(manifest),
                finished_us=now,
                updated_us=now,
                expires_us=now + int(ttl_seconds * 1_000_000),
                owner=None,
                lease_until_us=None,
            )
        )
        conn.execute(delete(bulk_export_key).where(bulk_export_key.c.job_id == job_id))
    return res.rowcount == 1


def fail(engine: Engine, job_id: str, owner: str, error: dict[str, Any], ttl_seconds: float) -> bool:
    now = now_us()
    with write_tx(engine) as conn:
        res = conn.execute(
            update(bulk_export_job)
            .where(_mine(job_id, owner))
            .values(status="failed", error=json.dumps(error), finished_us=now, updated_us=now, expires_us=now + int(ttl_seconds * 1_000_000), owner=None, lease_until_us=None)
        )
        conn.execute(delete(bulk_export_key).where(bulk_export_key.c.job_id == job_id))
    return res.rowcount == 1


def release(engine: Engine, job_id: str, owner: str, *, count_attempt: bool = False) -> None:
    """Give a running job back for any process to resume.

    A clean shutdown does not use up an attempt (only interruptions nobody handed back
    and errors do), so restarting servers never fails an export."""
    j = bulk_export_job.c
    values: dict[str, Any] = {"owner": None, "lease_until_us": None, "updated_us": now_us()}
    if not count_attempt:
        values["attempts"] = j.attempts - 1
    with write_tx(engine) as conn:
        conn.execute(update(bulk_export_job).where(_mine(job_id, owner)).values(**values))


def cancel(engine: Engine, job_id: str) -> Job | None:
    """Mark a job cancelled (DELETE on its status URL); None when unknown or already gone."""
    j = bulk_export_job.c
    with write_tx(engine) as conn:
        row = conn.execute(select(bulk_export_job).where(j.id == job_id)).first()
        if row is None or row._mapping["status"] in ("cancelled", "expired"):
            return None
        now = now_us()
        conn.execute(update(bulk_export_job).where(j.id == job_id).values(status="cancelled", updated_us=now, finished_us=now))
        conn.execute(delete(bulk_export_key).where(bulk_export_key.c.job_id == job_id))
    return Job.from_row(row)


def due_for_cleanup(engine: Engine, now: int) -> tuple[list[str], list[str]]:
    """(finished jobs whose files expired, cancelled jobs) — the worker deletes their files."""
    j = bulk_export_job.c
    with read_tx(engine) as conn:
        expired = [r[0] for r in conn.execute(select(j.id).where(j.status.in_(FINISHED), j.expires_us < now)).all()]
        cancelled = [r[0] for r in conn.execute(select(j.id).where(j.status == "cancelled")).all()]
    return expired, cancelled


def mark_expired(engine: Engine, job_ids: list[str]) -> None:
    if not job_ids:
        return
    j = bulk_export_job.c
    with write_tx(engine) as conn:
        conn.execute(update(bulk_export_job).where(j.id.in_(job_ids), j.status.in_(FINISHED)).values(status="expired", updated_us=now_us()))
