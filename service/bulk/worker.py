"""The background worker: one thread per server process runs export jobs.

Exports never run inside a request. The worker claims queued jobs — and jobs whose owner
stopped renewing its lease because its process died — runs them
(:class:`service.bulk.runner.ExportRun`), renews the lease from a heartbeat thread while
it works, and sweeps: files of expired and cancelled jobs are deleted.

Any number of processes (uvicorn workers, replicas on one database and one shared export
folder) may run workers; the conditional UPDATE in :func:`service.bulk.jobs.claim` makes
each job run in one place at a time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy import Engine

from service.bulk import jobs
from service.bulk.files import job_dir, remove_job_files
from service.bulk.runner import ExportRun, Stop
from service.bulk.settings import BulkSettings
from service.db.engine import active_engine
from service.fhir.outcome import FhirError

log = logging.getLogger("trialfhir.bulk")


class BulkWorker:
    def __init__(self, engine: Engine, settings: BulkSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_sweep = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.settings.worker or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._next_sweep = 0.0
        self._thread = threading.Thread(target=self._loop, name="bulk-export-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """A job was just queued in this process: look now rather than at the next poll."""
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        active_engine.set(self.engine)
        while not self._stop.is_set():
            ran = False
            try:
                if time.monotonic() >= self._next_sweep:
                    self.sweep()
                    self._next_sweep = time.monotonic() + max(1.0, min(30.0, self.settings.ttl_seconds / 4))
                ran = self.run_one()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one failure
                from service.errors import _is_unavailable

                if _is_unavailable(exc):  # database down, restarting or read-only: one line, not a traceback a second
                    log.warning("bulk export worker: database unavailable (%s); retrying", type(exc).__name__)
                else:
                    log.exception("bulk export worker iteration failed")
            if not ran:
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()

    def run_one(self) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        for job_id in jobs.claimable(self.engine, jobs.now_us()):
            job = jobs.claim(self.engine, job_id, self.owner, self.settings.lease_seconds, self.settings.max_attempts)
            if job is not None:
                self._run(job)
                return True
        return False

    def _run(self, job: jobs.Job) -> None:
        lost = threading.Event()
        done = threading.Event()
        interval = max(0.2, self.settings.lease_seconds / 3)

        def heartbeat() -> None:
            active_engine.set(self.engine)
            while not done.wait(interval):
                try:
                    if not jobs.renew(self.engine, job.id, self.owner, self.settings.lease_seconds):
                        lost.set()
                        return
                except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                    log.warning("bulk export lease renewal failed", exc_info=True)

        beat = threading.Thread(target=heartbeat, name=f"bulk-export-lease-{job.id[:8]}", daemon=True)
        beat.start()

        def should_stop() -> str | None:
            if self._stop.is_set():
                return "shutdown"
            if lost.is_set():
                return "lost"
            return None

        log.info("bulk export %s: attempt %d (%s level)", job.id, job.attempts, job.level)
        try:
            ExportRun(self.engine, self.settings, job, self.owner, should_stop).run()
            log.info("bulk export %s completed", job.id)
        except Stop as stop:
            reason = stop.reason
            if reason == "lost":
                current = jobs.get(self.engine, job.id)
                reason = "cancelled" if current is not None and current.status == "cancelled" else "lost"
            if reason == "cancelled":
                remove_job_files(self.settings.export_dir, job.id)
                log.info("bulk export %s cancelled", job.id)
            elif reason == "shutdown":
                jobs.release(self.engine, job.id, self.owner)
                log.info("bulk export %s handed back (server shutting down)", job.id)
            else:
                log.warning("bulk export %s: lease lost to another process; stopped", job.id)
        except (FhirError, LookupError) as exc:
            text = "; ".join(i.diagnostics for i in exc.issues) if isinstance(exc, FhirError) else str(exc)
            jobs.fail(self.engine, job.id, self.owner, {"status": 500, "code": "processing", "diagnostics": f"The export failed: {text}"}, self.settings.ttl_seconds)
        except Exception as exc:  # noqa: BLE001
            log.exception("bulk export %s failed (attempt %d)", job.id, job.attempts)
            if job.attempts < self.settings.max_attempts:
                jobs.release(self.engine, job.id, self.owner, count_attempt=True)
            else:
                jobs.fail(
                    self.engine,
                    job.id,
                    self.owner,
                    {
                        "status": 500,
                        "code": "exception",
                        "diagnostics": f"The export failed after {job.attempts} attempt(s) ({exc.__class__.__name__}); "
                        f"the server log has the details under job {job.id}.",
                    },
                    self.settings.ttl_seconds,
                )
        finally:
            done.set()
            beat.join(5)

    # --- cleanup ---------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Delete the files of expired and cancelled jobs."""
        expired, cancelled = jobs.due_for_cleanup(self.engine, jobs.now_us())
        for job_id in expired:
            remove_job_files(self.settings.export_dir, job_id)
        jobs.mark_expired(self.engine, expired)
        for job_id in cancelled:
            if job_dir(self.settings.export_dir, job_id).exists():
                remove_job_files(self.settings.export_dir, job_id)
