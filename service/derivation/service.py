"""Run the derivation for a study, store its outputs, and render them (contract §5).

:func:`derive` = load (:mod:`.inputs`) + compute (:func:`compute`: visits, outputs,
summaries, safety) — no writes. :func:`resources` turns a derivation into FHIR resources.
:class:`DerivationService` stores them through :meth:`DomainService.write` (the one write
path: validation, search index, history) so they are searchable and exported like any
resource, and renders the ``$endpoints`` Bundle, the ``/api`` JSON and the CSV.

Storing is idempotent: the current version of every output is read in bulk first, and a
resource whose stored bytes are exactly what storing it again would produce is not sent
(the store would keep its version anyway, :func:`service.rest.service.same_content`), so a
re-derivation without input changes writes nothing and one changed input makes new
versions of just the outputs whose content changed (contract §5: never a duplicate).
Stored outputs of the study that are no longer produced are deleted (:mod:`.storing`).

The Measures the MeasureReports point at are published at start-up
(:func:`publish_measures`) and with every derivation.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import Engine

from service.db.engine import read_transaction
from service.derivation import queries
from service.derivation.engine import Rules, SubjectOutputs, derive_subject
from service.derivation.inputs import load_study
from service.derivation.outputs import derived_observation
from service.derivation.catalog import DERIVED_IDENTIFIER_SYSTEM, OUTPUTS
from service.derivation.records import InputValue, SetAside, StudyContext, StudyData
from service.derivation.reports import binary_report, continuous_report, measures, report_id, safety_report
from service.derivation.safety import SafetySummary, summarise_safety
from service.derivation.storing import OUTPUT_TYPES, output_prefix, same_as_stored, stale_outputs
from service.derivation.summaries import Summaries, summarise
from service.derivation.visits import Schedule
from service.domain.service import DomainService
from service.fhir import jsonio
from service.fhir.http import instant
from service.rest.service import now_us

WRITE_CHUNK = 5000
_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a derivation builds millions of small,
    acyclic objects (reference counting frees them; collections would rescan them all,
    ~30 % of the time of building the outputs). Nested and concurrent pauses are counted.

    When the last pause ends, the objects allocated meanwhile are moved to the oldest
    generation in O(1) (``gc.freeze()`` + ``gc.unfreeze()``) before the collector is turned
    back on: re-enabling it with them still in the youngest generation would make the next
    allocation scan them all at once (measured: ~14 % of a derivation). They are still
    collected by the next full collection if they form cycles. A collector the caller had
    turned off stays off.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        _gc_pauses += 1
        if _gc_pauses == 1:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.freeze()
                gc.unfreeze()
                gc.enable()


@dataclass(slots=True)
class Derivation:
    """A computed derivation of one study (nothing stored yet)."""

    data: StudyData
    schedule: Schedule
    rules: Rules
    results: list[SubjectOutputs]
    summaries: Summaries
    safety: SafetySummary
    timings: dict[str, float] = field(default_factory=dict)


def compute(data: StudyData) -> Derivation:
    """Visits, outputs, summaries and safety from loaded inputs (contract §3, §4)."""
    with gc_paused():
        return _compute(data)


def _compute(data: StudyData) -> Derivation:
    t0 = time.perf_counter()
    schedule = Schedule(data.study.schedule)
    rules = Rules.of(data.study.settings)
    values: dict[str, list[InputValue]] = defaultdict(list)
    for v in data.values:
        values[v.patient].append(v)
    aside: dict[str, list[SetAside]] = defaultdict(list)
    for s in data.set_aside:
        aside[s.patient or ""].append(s)
    subjects = sorted(data.subjects, key=lambda s: (s.code, s.patient))  # as loaded; the outputs never depend on the order given
    results = [derive_subject(s, values.get(s.patient, ()), aside.get(s.patient, ()), schedule, rules, data.encounter_visits) for s in subjects]  # type: ignore[arg-type]
    t1 = time.perf_counter()
    summaries = summarise(results, schedule, rules)
    safety = summarise_safety(data.adverse_events, subjects)
    t2 = time.perf_counter()
    return Derivation(data, schedule, rules, results, summaries, safety, {"outputs_s": t1 - t0, "summaries_s": t2 - t1})


def derive(engine: Engine, study_id: str) -> Derivation:
    """Load and compute (no writes)."""
    t0 = time.perf_counter()
    with gc_paused():
        data = load_study(engine, study_id)
    t1 = time.perf_counter()
    derivation = compute(data)
    derivation.timings = {"load_s": t1 - t0, **derivation.timings}
    return derivation


@dataclass(slots=True)
class Resources:
    observations: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    measures: list[dict[str, Any]]

    def all(self) -> list[dict[str, Any]]:
        return self.measures + self.observations + self.reports


def resources(d: Derivation) -> Resources:
    """The FHIR resources of a derivation (contract §5)."""
    with gc_paused():
        return _resources(d)


def _resources(d: Derivation) -> Resources:
    study = d.data.study
    observations: list[dict[str, Any]] = []
    by_visit_code: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in d.results:
        for vo in r.visits:
            for out in vo.outputs.values():
                obs = derived_observation(study, r.subject, vo.visit, out)
                observations.append(obs)
                if r.subject.treated:
                    by_visit_code[(vo.visit.name, out.code)].append(f"Observation/{obs['id']}")
    reports: list[dict[str, Any]] = []
    periods = d.summaries.periods
    for row in d.summaries.binary:
        if row.visit.name in periods:
            reports.append(binary_report(study, row, periods[row.visit.name], by_visit_code[(row.visit.name, row.code)]))
    for row in d.summaries.continuous:
        if row.visit.name in periods:
            reports.append(continuous_report(study, row, periods[row.visit.name], by_visit_code.get((row.visit.name, row.code), [])))
    if periods:
        span = (min(p[0] for p in periods.values()), max(p[1] for p in periods.values()))
        reports.append(safety_report(study, d.safety, span))
    return Resources(observations, reports, measures(d.rules.codes))


@dataclass(slots=True)
class Stored:
    """What storing did, and the stored bytes of every output (for the Bundle)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    content: dict[str, bytes] = field(default_factory=dict)
    """``Type/id`` → the current stored JSON."""
    timings: dict[str, float] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    """``Type/id`` of the study's stored outputs no longer produced, now deleted (:mod:`.storing`)."""


class DerivationService:
    """Derive, store and render the endpoints of a study."""

    def __init__(self, domain: DomainService) -> None:
        self.domain = domain
        self.engine = domain.engine

    def _current(self, wanted: dict[str, list[str]]) -> dict[str, queries.Row]:
        found: dict[str, queries.Row] = {}
        with read_transaction(self.engine) as conn:
            self._read_ids(conn, wanted, found)
        return found

    @staticmethod
    def _read_ids(conn: Any, wanted: dict[str, list[str]], found: dict[str, queries.Row]) -> None:
        for rtype, ids in wanted.items():
            for row in queries.by_ids(conn, rtype, ids):
                found[f"{rtype}/{row.id}"] = row

    def _stored(self, items: list[dict[str, Any]], study: Optional[StudyContext]) -> tuple[dict[str, queries.Row], dict[str, queries.Row]]:
        """(the current version of every item that exists, the stored outputs of ``study``):
        the study's derived Observations and MeasureReports found by identifier, then the
        other items by id, in one read transaction."""
        outputs: dict[str, queries.Row] = {}
        with read_transaction(self.engine) as conn:
            if study is not None:
                for rtype in OUTPUT_TYPES:
                    for row in queries.by_identifier_prefix(conn, rtype, DERIVED_IDENTIFIER_SYSTEM, output_prefix(study)):
                        outputs[f"{rtype}/{row.id}"] = row
            current = dict(outputs)
            missing: dict[str, list[str]] = defaultdict(list)
            for r in items:
                if f"{r['resourceType']}/{r['id']}" not in current:
                    missing[r["resourceType"]].append(r["id"])
            self._read_ids(conn, missing, current)
        return current, outputs

    def _delete(self, keys: list[str]) -> None:
        """FHIR ``DELETE`` of ``Type/id`` keys through the one write path, in transactions."""
        chunk = max(1, min(WRITE_CHUNK, getattr(self.domain.bundles, "max_entries", WRITE_CHUNK)))
        for i in range(0, len(keys), chunk):
            entries = [{"request": {"method": "DELETE", "url": key}} for key in keys[i : i + chunk]]
            self.domain.bundles.process({"resourceType": "Bundle", "type": "transaction", "entry": entries}, self.domain.base_url, return_pref="minimal")

    def store(self, items: list[dict[str, Any]], study: Optional[StudyContext] = None) -> Stored:
        """Write what changed (module docstring); return the stored bytes of all of them.

        With ``study``, the stored outputs of that study are read in one query, and those
        that ``items`` no longer contain are deleted (:mod:`.storing`); without it, only
        ``items`` are looked at."""
        t0 = time.perf_counter()
        current, stored_outputs = self._stored(items, study)
        out = Stored()
        changed: list[dict[str, Any]] = []
        for r in items:
            key = f"{r['resourceType']}/{r['id']}"
            row = current.get(key)
            if row is not None and same_as_stored(row.content, r):
                out.unchanged += 1
                out.content[key] = row.content
            else:
                changed.append(r)
                out.created += row is None
                out.updated += row is not None
        if study is not None:
            out.deleted = stale_outputs(stored_outputs, (f"{r['resourceType']}/{r['id']}" for r in items), study)
        t1 = time.perf_counter()
        chunk = max(1, min(WRITE_CHUNK, getattr(self.domain.bundles, "max_entries", WRITE_CHUNK)))
        for i in range(0, len(changed), chunk):  # one transaction per chunk; a re-run completes an interrupted one
            self.domain.write(changed[i : i + chunk])
        self._delete(out.deleted)
        t2 = time.perf_counter()
        if changed:
            written: dict[str, list[str]] = defaultdict(list)
            for r in changed:
                written[r["resourceType"]].append(r["id"])
            out.content.update({k: row.content for k, row in self._current(written).items()})
        out.timings = {"compare_s": t1 - t0, "write_s": t2 - t1, "read_back_s": time.perf_counter() - t2}
        return out

    def run(self, study_id: str) -> tuple[Derivation, Resources, Stored]:
        """Derive, build and store (the routes call this). Authorization: the caller must be
        able to read the study and the outputs (:func:`service.auth.policy.study_operation`);
        the derivation then runs with the server's rights (its outputs are the server's writes)."""
        from service.auth.policy import study_operation

        with study_operation(study_id, ("Observation", "MeasureReport", "Measure"), engine=self.engine):
            derivation = derive(self.engine, study_id)
            t0 = time.perf_counter()
            res = resources(derivation)
            derivation.timings["resources_s"] = time.perf_counter() - t0
            stored = self.store(res.all(), derivation.data.study)
        return derivation, res, stored


def publish_measures(engine: Engine) -> Stored:
    """Store the Measure of every summarised endpoint and of safety (contract §5), unless
    already stored as is, so that ``MeasureReport.measure`` resolves from the start — before
    any study is derived, whatever study settings are used. Called after the migrations
    (:func:`service.app.create_app`, ``trialfhir migrate``); every derivation stores them
    again (unchanged: nothing written)."""
    from service.rest.service import FhirStore
    from service.transactions.service import BundleProcessor

    domain = DomainService(engine, FhirStore(engine), BundleProcessor(engine))
    return DerivationService(domain).store(measures(tuple(o.code for o in OUTPUTS)))


def bundle(base_url: str, res: Resources, stored: Stored) -> bytes:
    """The ``$endpoints`` collection Bundle: derived Observations, then MeasureReports, as stored."""
    entries = []
    for r in res.observations + res.reports:
        key = f"{r['resourceType']}/{r['id']}"
        content = stored.content.get(key)
        entries.append({"fullUrl": f"{base_url}/{key}", "resource": jsonio.fragment(content) if content else r})
    doc: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now_us())},
        "type": "collection",
    }
    if entries:
        doc["entry"] = entries
    return jsonio.dumps(doc)


__all__ = ["Derivation", "DerivationService", "Resources", "Stored", "bundle", "compute", "derive", "publish_measures", "resources", "report_id"]
