"""One attempt at one export job: scope → scan → manifest.

The scan reads rows in ``res_key`` order, ``TRIALFHIR_EXPORT_BATCH`` at a time (keyset
paging: ``res_key > last`` — no OFFSET, no long transaction), from ``resource`` for a
system export or from ``bulk_export_key ⨝ resource`` for a Patient/Group export, and
writes each row's stored bytes to its type's NDJSON part.

What is written is the state at transactionTime T (see :func:`service.bulk.jobs.kick_off`):

- a current version with ``lastUpdated`` ≤ T *is* the version at T: its bytes go out as
  they are (the fast path — nearly every row);
- a row changed after T is replaced by its version at T from ``resource_version``
  (none: created after T, skipped; a deletion: skipped, or listed under ``deleted``);
- ``_since`` keeps versions with ``lastUpdated`` > ``_since`` (and, in a Group export,
  everything about patients who joined the Group after ``_since``); resources deleted in
  (``_since``, T] are listed in ``deleted`` (transaction Bundles of DELETE entries,
  https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-output-file-request).

Checkpoints (last res_key, parts with counts and sizes) are written at most twice a second;
a resumed attempt continues after the checkpointed res_key.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, and_, delete, false, func, or_, select, text, true

from service.bulk import jobs
from service.bulk.files import OutputFiles, job_dir
from service.bulk.scope import materialise, versions_at
from service.bulk.settings import BulkSettings
from service.db.schema import bulk_export_key, idx_reference, resource
from service.fhir import jsonio
from service.fhir.http import instant
from service.fhir.outcome import Issue, operation_outcome
from service.search.sql import QueryCompiler

log = logging.getLogger("trialfhir.bulk")

_COLS = (
    resource.c.res_key,
    resource.c.resource_type,
    resource.c.id,
    resource.c.version_id,
    resource.c.last_updated_us,
    resource.c.deleted,
    resource.c.content,
)


def _raw_rows(conn: Any, stmt: Any) -> list[tuple[Any, ...]]:
    """The statement's rows as plain DB-API tuples: the export's hot path skips SQLAlchemy's
    per-row result processing (the values it reads — ints, strings, bytes, booleans as
    0/1 on SQLite — need none)."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    if compiled.positional:
        args: Any = tuple(params[name] for name in compiled.positiontup)
    else:
        args = params
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        return cursor.fetchall()
    finally:
        cursor.close()


class Stop(Exception):
    """The attempt ends early: ``cancelled``, ``lost`` (lease taken over) or ``shutdown``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def type_filter_conditions(filters: list[str], base_url: str, types: set[str] | None) -> dict[str, list[Any]]:
    """{type: [condition per filter]} for ``_typeFilter`` values ``Type?query``."""
    from urllib.parse import parse_qsl

    out: dict[str, list[Any]] = {}
    compiler = QueryCompiler(base_url)
    for raw in filters:
        rtype, _, query = raw.partition("?")
        if types is not None and rtype not in types:
            continue
        compiled = compiler.compile(rtype, parse_qsl(query, keep_blank_values=True))
        out.setdefault(rtype, []).append(and_(true(), *compiled.conditions))
    return out


class ExportRun:
    def __init__(self, engine: Engine, settings: BulkSettings, job: jobs.Job, owner: str, should_stop: Callable[[], str | None]) -> None:
        self.engine = engine
        self.settings = settings
        self.job = job
        self.owner = owner
        self.should_stop = should_stop
        p = job.params
        self.types: list[str] | None = p.get("types")
        self.since_us: int | None = p.get("since_us")
        self.t_us = job.transaction_time_us
        self.keys_mode = job.level in ("patient", "group")
        self.provenance = "RelevantProvenanceResources" in (p.get("associated") or [])

    # --- checkpoints -------------------------------------------------------------------------

    def _save(self, cp: dict[str, Any], files: OutputFiles) -> None:
        files.sync()
        cp["parts"] = files.snapshot()
        if not jobs.save_checkpoint(self.engine, self.job.id, self.owner, cp, self.settings.lease_seconds):
            raise Stop(self._why_lost())

    def _why_lost(self) -> str:
        current = jobs.get(self.engine, self.job.id)
        return "cancelled" if current is None or current.status == "cancelled" else "lost"

    def _check(self) -> None:
        reason = self.should_stop()
        if reason:
            raise Stop(reason)

    # --- the attempt -------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        cp: dict[str, Any] = dict(job.checkpoint or {"phase": "scope", "after": 0, "parts": [], "written": 0})
        files = OutputFiles(job_dir(self.settings.export_dir, job.id), job.attempts, cp.get("parts") or [], self.settings.file_max_resources)
        try:
            started = time.monotonic()
            if cp["phase"] == "scope":
                self._scope(cp, files)
                cp["scope_seconds"] = round(time.monotonic() - started, 3)
                self._save(cp, files)
            elif self.keys_mode and self._key_count() != cp.get("total"):
                # bulk_export_key is UNLOGGED on PostgreSQL: a database crash empties it. The
                # keys are a function of T alone, so they are rebuilt and the scan goes on.
                self._materialise()
            scan_started = time.monotonic()
            self._scan(cp, files)
            cp["scan_seconds"] = round(cp.get("scan_seconds", 0) + time.monotonic() - scan_started, 3)
            files.close()
            files.trim()
            cp["phase"] = "done"
            cp["parts"] = files.snapshot()
            manifest = self._manifest(files)
            if not jobs.complete(self.engine, job.id, self.owner, cp, manifest, self.settings.ttl_seconds):
                raise Stop(self._why_lost())
        except Stop as stop:
            if stop.reason == "shutdown" and cp.get("phase") == "scan":
                try:  # every batch written so far is whole: record it, the next attempt goes on from there
                    self._save(cp, files)
                except Exception:  # noqa: BLE001 - the last checkpoint is still valid
                    log.warning("bulk export %s: no checkpoint at shutdown", job.id, exc_info=True)
            files.abandon()
            raise
        except BaseException:
            files.abandon()
            raise

    def _scope(self, cp: dict[str, Any], files: OutputFiles) -> None:
        job = self.job
        issues = [Issue(i.get("code", "processing"), i["diagnostics"], severity=i.get("severity", "warning")) for i in job.params.get("issues") or []]
        r = resource.c
        if self.keys_mode:
            scope, total = self._materialise()
            issues.extend(scope.issues)
            cp["total"] = total
            cp["max_key"] = None
        else:
            with jobs.read_tx(self.engine) as conn:
                lo, hi = conn.execute(select(func.min(r.res_key), func.max(r.res_key))).one()
            cp["min_key"], cp["max_key"] = lo or 0, hi or 0
            cp["total"] = None
        if issues:
            oo = operation_outcome(issues)
            files.append("error", "OperationOutcome", [jsonio.dumps(oo)])
        cp["phase"] = "scan"
        cp["after"] = 0

    def _materialise(self) -> tuple[Any, int]:
        job = self.job
        with jobs.write_tx(self.engine) as conn:
            conn.execute(delete(bulk_export_key).where(bulk_export_key.c.job_id == job.id))
            scope = materialise(
                conn,
                job_id=job.id,
                level=job.level,
                group_id=job.group_id,
                types=self.types,
                patient_ids=job.params.get("patients"),
                since_us=self.since_us,
                t_us=self.t_us,
                provenance=self.provenance,
            )
        if self.engine.dialect.name == "postgresql":
            # fresh statistics, or the planner takes the just-filled table for empty and
            # joins it by scanning ``resource`` for every batch
            with jobs.write_tx(self.engine) as conn:
                conn.execute(text("ANALYZE bulk_export_key"))
        return scope, self._key_count()

    def _key_count(self) -> int:
        with jobs.read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(bulk_export_key).where(bulk_export_key.c.job_id == self.job.id)).scalar_one())

    def _statement(self, cp: dict[str, Any]) -> Any:
        r = resource.c
        types = set(self.types) if self.types else None
        if self.keys_mode:
            k = bulk_export_key.c
            stmt = select(*_COLS, k.new_member).select_from(bulk_export_key.join(resource, r.res_key == k.res_key)).where(k.job_id == self.job.id)
            key_col = k.res_key
        else:
            stmt = select(*_COLS, false().label("new_member"))
            key_col = r.res_key
            if cp.get("max_key") is not None:
                stmt = stmt.where(r.res_key <= cp["max_key"])
            if types is not None:
                cond = r.resource_type.in_(sorted(types))
                if self.provenance and "Provenance" not in types:
                    x = idx_reference.c
                    cond = or_(
                        cond,
                        and_(
                            r.resource_type == "Provenance",
                            r.res_key.in_(select(x.res_key).where(x.resource_type == "Provenance", x.param == "target", x.target_type.in_(sorted(types)))),
                        ),
                    )
                stmt = stmt.where(cond)
        if self.keys_mode and types is not None:
            allowed = set(types) | ({"Provenance"} if self.provenance else set())
            stmt = stmt.where(r.resource_type.in_(sorted(allowed)))
        if self.since_us is not None:
            if self.keys_mode:
                stmt = stmt.where(or_(r.last_updated_us > self.since_us, bulk_export_key.c.new_member == true()))
            else:
                stmt = stmt.where(r.last_updated_us > self.since_us)
        studies = self.job.params.get("studies")
        if studies is not None:  # a client bound to studies exports only what they may see
            from service.auth.studies import StudyView

            with jobs.read_tx(self.engine) as conn:
                stmt = stmt.where(StudyView(conn, studies).condition(None))
        filters = type_filter_conditions(self.job.params.get("type_filters") or [], self.job.params.get("base_url", ""), types)
        for rtype, conds in sorted(filters.items()):
            keep = [r.resource_type != rtype, or_(*conds)]
            if self.since_us is not None:
                keep.append(r.deleted == true())  # deletions cannot be matched: report them all
            stmt = stmt.where(or_(*keep))
        return stmt, key_col

    def _scan(self, cp: dict[str, Any], files: OutputFiles) -> None:
        stmt, key_col = self._statement(cp)
        t_us, since = self.t_us, self.since_us
        batch = self.settings.batch_size
        delay = self.settings.batch_delay_ms / 1000.0
        last_save = time.monotonic()
        while True:
            self._check()
            with jobs.read_tx(self.engine) as conn:
                after = cp["after"]
                if self.keys_mode:
                    # bound both sides of the join to this batch's key range, so the join
                    # is a merge of two short index range scans (not a scan from the start)
                    k = bulk_export_key.c
                    upper = conn.execute(
                        select(k.res_key).where(k.job_id == self.job.id, k.res_key > after).order_by(k.res_key).offset(batch - 1).limit(1)
                    ).scalar()
                    query = stmt.where(key_col > after, resource.c.res_key > after)
                    if upper is not None:
                        query = query.where(key_col <= upper, resource.c.res_key <= upper)
                    rows = _raw_rows(conn, query.order_by(key_col).limit(batch))
                else:
                    rows = _raw_rows(conn, stmt.where(key_col > after).order_by(key_col).limit(batch))
                if not rows:
                    break
                late = [row[0] for row in rows if row[4] > t_us]
                at = versions_at(conn, late, t_us) if late else {}
            out: dict[str, list[bytes]] = {}
            gone: list[str] = []
            written = 0
            for row in rows:
                key, rtype, rid, _vid, lu, deleted, content, new_member = row
                if lu > t_us:
                    v = at.get(key)
                    if v is None:
                        continue  # created after T
                    lu, deleted, content = v.last_updated_us, v.deleted, v.content
                if since is not None and lu <= since and not new_member:
                    continue
                if deleted:
                    if since is not None and lu <= since:
                        continue
                    if since is not None:
                        gone.append(f"{rtype}/{rid}")
                    continue
                bucket = out.get(rtype)
                if bucket is None:
                    bucket = out[rtype] = []
                bucket.append(content)
                written += 1
            for rtype, lines in out.items():
                files.append("output", rtype, lines)
            if gone:
                files.append("deleted", "Bundle", [self._deleted_bundle(gone)])
            cp["after"] = rows[-1][0]
            cp["written"] = cp.get("written", 0) + written
            cp["scanned"] = cp.get("scanned", 0) + len(rows)
            if time.monotonic() - last_save >= 0.5:
                self._save(cp, files)
                last_save = time.monotonic()
            if delay:
                time.sleep(delay)
        self._save(cp, files)

    def _deleted_bundle(self, refs: list[str]) -> bytes:
        return jsonio.dumps(
            {
                "resourceType": "Bundle",
                "id": str(uuid.uuid4()),
                "meta": {"lastUpdated": instant(self.t_us)},
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in refs],
            }
        )

    def _manifest(self, files: OutputFiles) -> dict[str, Any]:
        def items(kind: str) -> list[dict[str, Any]]:
            return [{"type": p.type, "name": p.name, "count": p.count, "size": p.size} for p in files.parts if p.kind == kind and p.count]

        return {"output": items("output"), "deleted": items("deleted"), "error": items("error")}


__all__ = ["ExportRun", "Stop", "type_filter_conditions"]
