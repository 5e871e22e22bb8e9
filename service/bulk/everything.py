"""Synchronous ``$everything``: ``Patient/{id}/$everything`` and ``ResearchStudy/{id}/$everything``.

https://hl7.org/fhir/R4/patient-operation-everything.html: the patient, every resource in
its compartment, and the resources those reference (Medications, Practitioners,
Encounters, …) — not other Patients, and not what a Group references (the members of a
study cohort the patient is in are not about this patient). For a ResearchStudy the same for every patient of the study (members of
its ``enrollment`` Group and the ``individual`` of its ResearchSubjects), plus the study,
its Group, its PlanDefinitions, its ResearchSubjects, the MeasureReports about it and the
Measures those name.

Answered as a searchset Bundle of current versions, paged by keyset on ``res_key``
(``_cursor`` in the next link; ``_count`` per page), so pages stay correct while data
changes. ``_since`` (lastUpdated ≥) and ``_type`` filter; ``start``/``end`` are not
supported and reported in an OperationOutcome entry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, and_, false, or_, select, tuple_

from service.bulk.scope import patient_compartment, study_reports
from service.db.engine import read_transaction
from service.db.schema import idx_reference, idx_uri, resource
from service.fhir import jsonio
from service.fhir.bundles import bundle, page_url, search_entry
from service.fhir.outcome import Issue, error, operation_outcome
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.indexing import date_range, parse_reference
from service.storage.repository import ResourceRepository


#: "as of now" for the scope helpers that take a transactionTime
_NOW = 2**62


def _compartment_keys(patient_ids: list[str]) -> Any:
    x = idx_reference.c
    pairs = patient_compartment()
    return select(x.res_key).where(
        x.target_type == "Patient",
        x.target_id.in_(patient_ids),
        or_(*[and_(x.resource_type == t, x.param.in_(ps)) for t, ps in sorted(pairs.items())]),
    )


def _referenced_by(keys: Any) -> Any:
    """(type, id) pairs the resources with res_key in ``keys`` reference — except other
    Patients, and except what a Group references (its member list names everyone in it)."""
    x = idx_reference.alias("x2")
    return select(x.c.target_type, x.c.target_id).where(
        x.c.res_key.in_(keys), x.c.target_type.is_not(None), x.c.target_id.is_not(None), x.c.target_type != "Patient", x.c.resource_type != "Group"
    )


def _measures_named_by(keys: Any) -> Any:
    x = idx_reference.alias("x3")
    u = idx_uri.c
    urls = select(x.c.url).where(x.c.res_key.in_(keys), x.c.resource_type == "MeasureReport", x.c.param == "measure", x.c.url.is_not(None))
    return select(u.res_key).where(u.resource_type == "Measure", u.param == "url", u.value.in_(urls))


def _refs(doc: dict[str, Any], field: str, rtype: str) -> list[str]:
    value = doc.get(field)
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            t, i, _, _ = parse_reference(item["reference"])
            if t == rtype and i:
                out.append(i)
    return out


def _patient_condition(conn: Connection, patient_id: str) -> Any:
    found = ResourceRepository(conn).current("Patient", patient_id)
    if found is None:
        raise error(404, "not-found", f"Patient/{patient_id} does not exist.")
    if found.deleted:
        raise error(410, "deleted", f"Patient/{patient_id} was deleted.")
    r = resource.c
    own = select(r.res_key).where(r.res_key == found.res_key)
    comp = _compartment_keys([patient_id])
    base = own.union(comp)
    return or_(
        r.res_key == found.res_key,
        r.res_key.in_(comp),
        tuple_(r.resource_type, r.id).in_(_referenced_by(base)),
        r.res_key.in_(_measures_named_by(comp)),
    )


def _study_condition(conn: Connection, study_id: str) -> Any:
    repo = ResourceRepository(conn)
    study = repo.current("ResearchStudy", study_id)
    if study is None:
        raise error(404, "not-found", f"ResearchStudy/{study_id} does not exist.")
    if study.deleted:
        raise error(410, "deleted", f"ResearchStudy/{study_id} was deleted.")
    doc = jsonio.loads(study.content or b"{}")
    r = resource.c
    x = idx_reference.c
    group_ids = _refs(doc, "enrollment", "Group")
    patients: set[str] = set()
    for gid in group_ids:
        group = repo.current("Group", gid)
        if group is not None and not group.deleted:
            for m in jsonio.loads(group.content or b"{}").get("member") or []:
                ref = (m.get("entity") or {}).get("reference") if isinstance(m, dict) else None
                if isinstance(ref, str) and not m.get("inactive"):
                    t, i, _, _ = parse_reference(ref)
                    if t == "Patient" and i:
                        patients.add(i)
    subjects = select(x.res_key).where(x.resource_type == "ResearchSubject", x.param == "study", x.target_type == "ResearchStudy", x.target_id == study_id)
    for row in conn.execute(
        select(x.target_id).where(x.resource_type == "ResearchSubject", x.param == "individual", x.target_type == "Patient", x.res_key.in_(subjects))
    ).all():
        patients.add(row[0])
    targets = {("ResearchStudy", study_id)} | {("Group", g) for g in group_ids}
    reports = [v.res_key for v in study_reports(conn, targets, _NOW)]
    own = [study.res_key]
    conds = [
        r.res_key.in_(own),
        and_(r.resource_type == "Group", r.id.in_(group_ids)) if group_ids else false(),
        and_(r.resource_type == "PlanDefinition", r.id.in_(_refs(doc, "protocol", "PlanDefinition"))),
        r.res_key.in_(subjects),
        r.res_key.in_(reports),
        r.res_key.in_(_measures_named_by(reports)),
    ]
    if patients:
        ids = sorted(patients)
        comp = _compartment_keys(ids)
        conds += [
            and_(r.resource_type == "Patient", r.id.in_(ids)),
            r.res_key.in_(comp),
            tuple_(r.resource_type, r.id).in_(_referenced_by(comp)),
            r.res_key.in_(_measures_named_by(comp)),
        ]
    return or_(*conds)


def everything(
    engine: Engine,
    *,
    base_url: str,
    resource_type: str,
    id: str,
    params: list[tuple[str, str]],
    default_count: int,
    max_count: int,
    now_us: int,
) -> dict[str, Any]:
    """The searchset Bundle page of ``{resource_type}/{id}/$everything``."""
    last = {k: v for k, v in params}
    count_raw = last.get("_count")
    if count_raw is not None and not count_raw.isdigit():
        raise error(400, "invalid", f"_count={count_raw} is not a non-negative integer.")
    count = min(int(count_raw), max_count) if count_raw is not None else default_count
    count = max(count, 1)
    issues: list[Issue] = []
    r = resource.c
    where = [r.deleted == false()]
    if "_since" in last:
        found = date_range(last["_since"].replace(" ", "+"))
        if found is None:
            raise error(400, "invalid", f"_since={last['_since']} is not a FHIR instant.")
        where.append(r.last_updated_us >= found[0])
    types: list[str] = []
    for k, v in params:
        if k == "_type":
            types.extend(t.strip() for t in v.split(",") if t.strip())
    bad = [t for t in types if t not in RESOURCE_TYPES]
    if bad:
        raise error(400, "invalid", f"_type: {', '.join(bad)} is not a FHIR R4 resource type.")
    if types:
        where.append(r.resource_type.in_(types))
    for k in ("start", "end"):
        if k in last:
            issues.append(Issue("not-supported", f"'{k}' (care date range) is not supported by $everything here; it was not applied.", severity="warning"))
    cursor = last.get("_cursor")
    if cursor is not None:
        if not cursor.isdigit():
            raise error(400, "invalid", "_cursor is not a cursor this server issued; follow the Bundle's next link.")
        where.append(r.res_key > int(cursor))
    from service.auth import policy

    policy.require(resource_type, "r", "$everything")
    readable = policy.export_types(None, set(RESOURCE_TYPES), "$everything")
    if readable is not None:
        where.append(r.resource_type.in_(readable))
    with read_transaction(engine) as conn:
        focal = ResourceRepository(conn).current(resource_type, id)
        if focal is not None and not focal.deleted:
            policy.check_visible(conn, focal)
        visible = policy.search_condition(conn, None)
        if visible is not None:
            where.append(visible)
        cond = _patient_condition(conn, id) if resource_type == "Patient" else _study_condition(conn, id)
        keys = [row[0] for row in conn.execute(select(r.res_key).where(cond, *where).order_by(r.res_key).limit(count + 1)).all()]
        page = keys[:count]
        versions = ResourceRepository(conn).current_by_keys(page)
        policy.audit_read(versions)
    path = f"{resource_type}/{id}/$everything"
    shown = [(k, v) for k, v in params if k != "_cursor"]
    links = [("self", page_url(base_url, path, params))]
    if len(keys) > count:
        links.append(("next", page_url(base_url, path, shown, _cursor=str(page[-1]))))
    entries = [search_entry(base_url, v) for v in versions]
    if issues:
        entries.append({"resource": jsonio.fragment(jsonio.dumps(operation_outcome(issues))), "search": {"mode": "outcome"}})
    return bundle("searchset", entries, links, total=None, now_us=now_us)
