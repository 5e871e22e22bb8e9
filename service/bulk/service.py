"""Bulk Data $export (https://hl7.org/fhir/uv/bulkdata/export.html, v2): kick-off
validation, job status and the manifest.

Kick-off parameters (query string for GET; query string and/or a ``Parameters`` body for
POST): ``_outputFormat`` (``application/fhir+ndjson``, ``application/ndjson``,
``ndjson``), ``_since``, ``_type``, ``_typeFilter``, ``includeAssociatedData``
(``RelevantProvenanceResources``) and, POST only at Patient/Group level, ``patient``.
Anything the server cannot honour is a 400 OperationOutcome, unless the client sent
``Prefer: handling=lenient``: then the request runs without it and the problem is written
to the job's error file (an OperationOutcome NDJSON listed under ``error`` in the
manifest), as the IG allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine

from service.bulk import jobs
from service.bulk.scope import STUDY_TYPES, compartment_types
from service.bulk.settings import BulkSettings
from service.bulk.worker import BulkWorker
from service.db.engine import read_transaction
from service.fhir.http import instant
from service.fhir.outcome import FhirError, Issue, error
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.indexing import date_range, parse_reference
from service.search.sql import QueryCompiler
from service.storage.repository import ResourceRepository

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
ASSOCIATED = ("RelevantProvenanceResources",)
_KNOWN = {"_outputFormat", "_since", "_type", "_typeFilter", "includeAssociatedData", "patient"}
_IGNORED = {"_format", "_pretty"}
#: Splits ``_typeFilter`` lists at the commas that start the next ``Type?``; commas inside
#: one filter's values (``code=a,b``) stay where they are.
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]*\?)")


@dataclass
class KickOff:
    level: str
    group_id: str | None
    types: list[str] | None = None
    since_us: int | None = None
    type_filters: list[str] = field(default_factory=list)
    associated: list[str] = field(default_factory=list)
    patients: list[str] | None = None
    issues: list[Issue] = field(default_factory=list)


def allowed_types(level: str, associated: list[str]) -> set[str]:
    if level == "system":
        return set(RESOURCE_TYPES)
    out = {"Patient", *compartment_types()}
    if level == "group":
        out |= set(STUDY_TYPES)
    if "RelevantProvenanceResources" in associated:
        out.add("Provenance")
    return out


def _values_from_parameters(body: Any) -> list[tuple[str, Any]]:
    """(name, value) pairs of a ``Parameters`` kick-off body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise error(400, "structure", "A POST $export body must be a FHIR Parameters resource.")
    out: list[tuple[str, Any]] = []
    for p in body.get("parameter") or []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise error(400, "structure", "Every Parameters.parameter needs a name.")
        values = [v for k, v in p.items() if k.startswith("value")]
        if len(values) != 1:
            raise error(400, "structure", f"Parameter '{p['name']}' needs exactly one value[x].")
        out.append((p["name"], values[0]))
    return out


def parse_kickoff(
    level: str,
    group_id: str | None,
    query: list[tuple[str, str]],
    body: Any | None,
    *,
    lenient: bool,
    base_url: str,
) -> KickOff:
    """Validate the kick-off request (400 for what cannot be honoured, see module docstring)."""
    ko = KickOff(level, group_id)
    problems: list[Issue] = []

    def problem(code: str, text: str) -> None:
        problems.append(Issue(code, text, severity="warning" if lenient else "error"))

    pairs: list[tuple[str, Any]] = [(k, v) for k, v in query if k not in _IGNORED]
    if body is not None:
        pairs.extend(_values_from_parameters(body))

    types: list[str] = []
    type_given = False
    filters: list[str] = []
    for name, value in pairs:
        if name not in _KNOWN:
            problem("not-supported", f"The parameter '{name}' is not supported by this server's $export.")
            continue
        if name == "patient":
            if body is None or level == "system":
                raise error(400, "not-supported", "'patient' is accepted only in a POST Parameters body of Patient/$export or Group/[id]/$export.")
            ref = value.get("reference") if isinstance(value, dict) else None
            rt, rid, _, _ = parse_reference(ref) if isinstance(ref, str) else (None, None, None, None)
            if rt != "Patient" or not rid:
                raise error(400, "invalid", f"patient must be a reference to a Patient, not {value!r}.")
            ko.patients = (ko.patients or []) + [rid]
            continue
        if not isinstance(value, str):
            raise error(400, "invalid", f"The parameter '{name}' must be a string value.")
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise error(400, "not-supported", f"_outputFormat={value}: this server writes only application/fhir+ndjson.")
        elif name == "_since":
            found = date_range(value.replace(" ", "+"))
            if found is None:
                raise error(400, "invalid", f"_since={value} is not a FHIR instant such as 2024-03-01T10:00:00Z.")
            ko.since_us = found[0]
        elif name == "_type":
            type_given = True
            types.extend(t.strip() for t in value.split(",") if t.strip())
        elif name == "_typeFilter":
            filters.extend(f.strip() for f in _FILTER_SPLIT.split(value) if f.strip())
        elif name == "includeAssociatedData":
            for item in (v.strip() for v in value.split(",") if v.strip()):
                if item in ASSOCIATED:
                    if item not in ko.associated:
                        ko.associated.append(item)
                else:
                    problem("not-supported", f"includeAssociatedData={item} is not supported (supported: {', '.join(ASSOCIATED)}).")

    allowed = allowed_types(level, ko.associated)
    if type_given:
        kept: list[str] = []
        for t in types:
            if t not in RESOURCE_TYPES:
                problem("not-supported", f"_type: '{t}' is not a FHIR R4 resource type.")
            elif t not in allowed:
                problem("not-supported", f"_type: {t} is not in the Patient compartment, so a {level}-level export cannot contain it.")
            elif t not in kept:
                kept.append(t)
        ko.types = kept
    elif level != "system":
        ko.types = None  # every allowed type

    compiler = QueryCompiler(base_url)
    for f in filters:
        rtype, sep, q = f.partition("?")
        if not sep or rtype not in RESOURCE_TYPES:
            raise error(400, "invalid", f"_typeFilter '{f}' is not of the form ResourceType?search-parameters.")
        if ko.types is not None and rtype not in ko.types:
            problem("not-supported", f"_typeFilter '{f}' is for {rtype}, which this export does not include (_type); it was ignored.")
            continue
        compiled = compiler.compile(rtype, parse_qsl(q, keep_blank_values=True))
        for issue in compiled.unknown:
            problem("not-supported", f"_typeFilter '{f}': {issue.diagnostics}")
        ko.type_filters.append(f)

    if problems and not lenient:
        raise FhirError(400, problems)
    ko.issues = problems
    if type_given and not ko.types:
        raise FhirError(400, [Issue("invalid", "None of the _type values can be exported.")] + problems)
    return ko


class BulkExports:
    """The bulk export capability of one app: settings, the worker, kick-off and status."""

    def __init__(self, engine: Engine, settings: BulkSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.worker = BulkWorker(engine, settings)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def kick_off(self, ko: KickOff, *, request_url: str, base_url: str, client_id: str | None) -> jobs.Job:
        """Authorise (scopes per exported type; a study-bound caller exports only its
        studies, recorded in the job for the worker) and queue the job."""
        from service.auth import policy

        ko.types = policy.export_types(ko.types, allowed_types(ko.level, ko.associated), "$export")
        studies = policy.current_access().studies
        if ko.level == "group":
            assert ko.group_id is not None
            policy.require("Group", "r", "Group-level $export")
            with read_transaction(self.engine) as conn:
                group = ResourceRepository(conn).current("Group", ko.group_id)
                if group is not None and not group.deleted:
                    policy.check_visible(conn, group)
            if group is None or group.deleted:
                raise error(404, "not-found", f"Group/{ko.group_id} does not exist.")
        params = {
            "types": ko.types,
            "since_us": ko.since_us,
            "type_filters": ko.type_filters,
            "associated": ko.associated,
            "patients": ko.patients,
            "base_url": base_url,
            "issues": [{"code": i.code, "diagnostics": i.diagnostics, "severity": i.severity} for i in ko.issues],
            "requires_token": client_id is not None,
            "studies": sorted(studies) if studies is not None else None,
        }
        job_id, _ = jobs.kick_off(
            self.engine,
            {"level": ko.level, "group_id": ko.group_id, "request_url": request_url, "client_id": client_id, "params": params},
        )
        self.worker.wake()
        job = jobs.get(self.engine, job_id)
        assert job is not None
        return job

    def visible(self, job_id: str, client_id: str | None) -> jobs.Job | None:
        """The job, if it exists and belongs to this client (others get 404)."""
        job = jobs.get(self.engine, job_id)
        if job is None or (job.client_id is not None and job.client_id != client_id):
            return None
        return job


def progress_text(job: jobs.Job) -> str:
    cp = job.checkpoint or {}
    if job.status == "queued" or not cp:
        return "queued"
    if cp.get("phase") == "scope":
        return "selecting the resources to export"
    written = int(cp.get("written", 0))
    total = cp.get("total")
    if total:
        pct = min(99, int(100 * int(cp.get("scanned", 0)) / total))
    else:
        lo, hi = int(cp.get("min_key") or 0), int(cp.get("max_key") or 0)
        pct = min(99, int(100 * (int(cp.get("after", 0)) - lo) / (hi - lo))) if hi > lo else 0
    return f"exporting: {max(pct, 0)}% ({written} resources written)"


def manifest_document(job: jobs.Job, base_url: str) -> dict[str, Any]:
    """The complete-status body (https://hl7.org/fhir/uv/bulkdata/export.html#response---complete-status)."""
    m = job.manifest or {}

    def items(kind: str) -> list[dict[str, Any]]:
        return [{"type": p["type"], "url": f"{base_url}/$export-file/{job.id}/{p['name']}", "count": p["count"]} for p in m.get(kind, [])]

    return {
        "transactionTime": instant(job.transaction_time_us),
        "request": job.request_url,
        "requiresAccessToken": bool(job.params.get("requires_token")),
        "output": items("output"),
        "deleted": items("deleted"),
        "error": items("error"),
    }


def find_part(job: jobs.Job, name: str) -> dict[str, Any] | None:
    for kind in ("output", "deleted", "error"):
        for p in (job.manifest or {}).get(kind, []):
            if p["name"] == name:
                return p
    return None
