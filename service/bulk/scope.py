"""What a Patient- or Group-level export covers, as of the job's transactionTime T.

Group (one study's cohort) — https://hl7.org/fhir/uv/bulkdata/export.html#endpoint---group-of-patients:

- the Group as it was at T, and its members: ``Group.member.entity`` → ``Patient/x``
  (members marked ``inactive`` are left out; a member that does not exist at T is
  reported in the error file);
- every resource in the Patient compartment of those patients
  (``service/fhir/definitions/r4_compartments.json``: the parameters that link each type
  to a Patient) — Observations (derived ones included), ResearchSubjects,
  MedicationAdministrations, AdverseEvents, …;
- the study's own resources: the ResearchStudy whose ``enrollment`` references the
  Group, the PlanDefinitions of its ``protocol``, the Medications the exported
  MedicationAdministrations reference, the MeasureReports about the study (referencing
  the Group or the ResearchStudy, by a search parameter or by a top-level extension such
  as ``workflow-researchStudy``) and the Measure resources their ``measure`` canonical
  names (``http://trialfhir.org/fhir/Measure/{code}``).

Patient level: every Patient and every resource in some Patient's compartment.

Membership at T, not now
------------------------
The search index describes the *current* versions. A resource whose current version is
not later than T is described exactly; for the others — changed after T, or (with
``_since``) deleted — this module reads the version current at T from
``resource_version`` and evaluates its references itself (:func:`references`). So a
resource moved to another patient after T, or deleted after T, is exported as it was.

With ``_since``, a patient who joined the Group after ``_since`` (not a member of the
Group's version at ``_since``) is exported with all of its compartment whatever the
lastUpdated (``bulk_export_key.new_member``): a registry pulling increments has none of
that patient's history yet. The IG allows this for Group exports and it is what makes a
chain of incremental Group exports complete.

The result is materialised once per job into ``bulk_export_key`` (INSERT … SELECT in the
database for the indexed part, so a cohort of any size never passes through Python) and
the export then streams those keys in ``res_key`` order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, delete, false, func, insert, literal, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from service.db.schema import bulk_export_key, idx_reference, idx_uri, resource, resource_version
from service.fhir import jsonio
from service.fhir.outcome import Issue
from service.search.indexing import compiled_params, parse_reference, reference_values
from service.search.service import compartments
from service.storage.repository import StoredVersion

#: Types a Group export adds beside the Patient compartment (the study's own resources).
STUDY_TYPES = ("Group", "ResearchStudy", "PlanDefinition", "Medication", "MeasureReport", "Measure")
CHUNK = 500

_VERSION_COLS = (
    resource_version.c.res_key,
    resource_version.c.resource_type,
    resource_version.c.id,
    resource_version.c.version_id,
    resource_version.c.last_updated_us,
    resource_version.c.deleted,
    resource_version.c.content,
)


def patient_compartment() -> dict[str, list[str]]:
    """{type: [parameters linking it to a Patient]} without Patient itself (linked by id)."""
    return {t: list(p) for t, p in compartments()["Patient"].items() if t != "Patient" and p}


def compartment_types() -> list[str]:
    return sorted(patient_compartment())


def chunks(items: list[Any], size: int | None = None) -> Iterator[list[Any]]:
    size = size or CHUNK
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- versions as of T ----------------------------------------------------------------------------


def versions_at(conn: Connection, res_keys: list[int], t_us: int) -> dict[int, StoredVersion]:
    """The version of each resource that was current at ``t_us`` (possibly a deletion)."""
    out: dict[int, StoredVersion] = {}
    rv = resource_version.c
    for part in chunks(sorted(set(res_keys))):
        latest = (
            select(rv.res_key.label("k"), func.max(rv.version_id).label("v"))
            .where(rv.res_key.in_(part), rv.last_updated_us <= t_us)
            .group_by(rv.res_key)
            .subquery()
        )
        rows = conn.execute(select(*_VERSION_COLS).join(latest, and_(rv.res_key == latest.c.k, rv.version_id == latest.c.v))).all()
        for r in rows:
            out[r[0]] = StoredVersion(*r)
    return out


def previous_versions(conn: Connection, deletions: list[StoredVersion]) -> dict[int, StoredVersion]:
    """The version before each deletion (always a live one: deleting twice writes nothing)."""
    out: dict[int, StoredVersion] = {}
    rv = resource_version.c
    for part in chunks(deletions):
        pairs = [(d.res_key, d.version_id - 1) for d in part if d.version_id > 1]
        if not pairs:
            continue
        rows = conn.execute(select(*_VERSION_COLS).where(tuple_(rv.res_key, rv.version_id).in_(pairs))).all()
        for r in rows:
            out[r[0]] = StoredVersion(*r)
    return out


def state_at(conn: Connection, res_keys: list[int], t_us: int, since_us: int | None) -> dict[int, StoredVersion]:
    """For membership tests: the version at T; for one deleted at T (after ``_since``), the
    version it deleted — the resource is then reported as deleted if it was a member."""
    at = versions_at(conn, res_keys, t_us)
    deletions = [v for v in at.values() if v.deleted and since_us is not None and v.last_updated_us > since_us]
    before = previous_versions(conn, deletions)
    out: dict[int, StoredVersion] = {}
    for key, v in at.items():
        if not v.deleted:
            out[key] = v
        elif key in before:
            out[key] = before[key]
    return out


def references(resource_type: str, doc: dict[str, Any], codes: Iterable[str]) -> set[tuple[str | None, str | None]]:
    """(type, id) of every reference ``doc`` makes through the search parameters ``codes``."""
    wanted = set(codes)
    found: set[tuple[str | None, str | None]] = set()
    for param in compiled_params(resource_type):
        if param.code not in wanted or param.type != "reference":
            continue
        for path in param.paths:
            for value in path.values(doc):
                for row in reference_values(value, doc):
                    found.add((row["target_type"], row["target_id"]))
    return found


def _insert_ignore(conn: Connection, select_stmt: Any) -> None:
    """INSERT INTO bulk_export_key SELECT (job_id, res_key, new_member) … skipping keys already there."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(bulk_export_key).from_select(["job_id", "res_key", "new_member"], select_stmt).on_conflict_do_nothing()
    conn.execute(stmt)


def _insert_new(conn: Connection, job_id: str, select_stmt: Any, key_col: Any, *, guard: bool = True) -> None:
    """INSERT INTO bulk_export_key SELECT … [WHERE NOT EXISTS (the key is not there yet)].

    About twice as fast as ON CONFLICT DO NOTHING for large cohorts; ``select_stmt`` must
    be DISTINCT itself. ``guard`` False when no key of this statement's resource type can
    be there yet (its first statement: res_keys of different types never collide)."""
    if guard:
        k = bulk_export_key.alias("seen")
        select_stmt = select_stmt.where(~select(k.c.res_key).where(k.c.job_id == job_id, k.c.res_key == key_col).exists())
    conn.execute(insert(bulk_export_key).from_select(["job_id", "res_key", "new_member"], select_stmt))


def _add_keys(conn: Connection, job_id: str, keys: Iterable[int], *, new_member: bool = False) -> None:
    rows = [{"job_id": job_id, "res_key": k, "new_member": new_member} for k in sorted(set(keys))]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for part in chunks(rows, 1000):
        conn.execute(dialect.insert(bulk_export_key).on_conflict_do_nothing(), part)


def _late(conn: Connection, types: list[str], t_us: int, since_us: int | None) -> list[int]:
    """res_keys of resources of ``types`` the index may misdescribe at T: changed after T,
    or (with ``_since``) deleted after ``_since``."""
    if not types:
        return []
    r = resource.c
    cond = r.last_updated_us > t_us
    if since_us is not None:
        cond = or_(cond, and_(r.deleted == True, r.last_updated_us > since_us))  # noqa: E712
    return [row[0] for row in conn.execute(select(r.res_key).where(r.resource_type.in_(types), cond).order_by(r.res_key)).all()]


# --- the scope ---------------------------------------------------------------------------------


@dataclass
class Scope:
    """What :func:`materialise` found: keys are in ``bulk_export_key``; issues go to the error file."""

    issues: list[Issue] = field(default_factory=list)
    patients: int = 0


def materialise(
    conn: Connection,
    *,
    job_id: str,
    level: str,
    group_id: str | None,
    types: list[str] | None,
    patient_ids: list[str] | None,
    since_us: int | None,
    t_us: int,
    provenance: bool,
) -> Scope:
    """Fill ``bulk_export_key`` for a Patient- (``level`` "patient") or Group-level job."""
    scope = Scope()
    wanted = set(types) if types else None

    def want(t: str) -> bool:
        return wanted is None or t in wanted

    pairs = {t: ps for t, ps in patient_compartment().items() if want(t)}
    r = resource.c
    x = idx_reference.c

    members: list[str] | None
    group_version: StoredVersion | None = None
    cohorts: list[tuple[list[str] | None, bool]]
    if level == "group":
        assert group_id is not None
        group_version = _current_at(conn, "Group", [group_id], t_us).get(group_id)
        if group_version is None:
            raise LookupError(f"Group/{group_id} did not exist at the export's transactionTime.")
        members = _members(jsonio.loads(group_version.content or b"{}"), scope)
        if patient_ids is not None:
            allowed = set(patient_ids)
            outside = sorted(allowed - set(members))
            for pid in outside:
                scope.issues.append(Issue("not-found", f"patient Patient/{pid} is not a member of Group/{group_id}; it was not exported.", severity="warning"))
            members = [m for m in members if m in allowed]
        # With _since, patients who joined the Group after it are exported with all their
        # data (the IG allows it; a registry has none of their history yet). First, so their
        # keys carry the flag.
        if since_us is not None:
            then = _current_at(conn, "Group", [group_id], since_us).get(group_id)
            before = set(_members(jsonio.loads(then.content or b"{}"), Scope())) if then is not None else set()
            cohorts = [([m for m in members if m not in before], True), ([m for m in members if m in before], False)]
        else:
            cohorts = [(members, False)]
    else:
        members = list(patient_ids) if patient_ids is not None else None
        cohorts = [(members, False)]

    # 1. the Patients themselves (the scan resolves their version at T)
    if members is None:
        if want("Patient"):
            _insert_ignore(conn, select(literal(job_id), r.res_key, literal(False)).where(r.resource_type == "Patient"))
    else:
        existing = _current_at(conn, "Patient", members, t_us, keep_deleted=since_us is not None)
        for pid in members:
            if pid not in existing:
                scope.issues.append(Issue("not-found", f"Patient/{pid} (a member) does not exist at the export's transactionTime; nothing was exported for it.", severity="warning"))
        scope.patients = len(existing)
        if want("Patient"):
            for cohort, new in cohorts:
                assert cohort is not None
                _add_keys(conn, job_id, [existing[p].res_key for p in cohort if p in existing], new_member=new)

    # 2. the compartment, from the index — one statement per type, each an index range scan
    #    (ix_reference_target by patient id, ix_reference_lookup for every patient) ...
    if pairs:
        filled: set[str] = set()  # types with keys already (later statements must skip those)
        for cohort, new in cohorts:
            for rtype, params in sorted(pairs.items()):
                base = select(literal(job_id), x.res_key, literal(new)).distinct().where(x.target_type == "Patient", x.resource_type == rtype, x.param.in_(params))
                parts = [None] if cohort is None else [x.target_id.in_(part) for part in chunks(sorted(set(cohort)))]
                for cond in parts:
                    stmt = base if cond is None else base.where(cond)
                    # in res_key order: the key index grows at its right edge (10x faster on
                    # SQLite than in the order the rows are found). SQLite: "+ 0" sorts the rows
                    # found through ix_reference_target; ordering by the bare column makes it
                    # walk all of idx_reference in res_key order instead. (PostgreSQL wants
                    # the bare column, as DISTINCT requires, and plans the sort itself.)
                    order = x.res_key if conn.dialect.name == "postgresql" else x.res_key + 0
                    _insert_new(conn, job_id, stmt.order_by(order), x.res_key, guard=rtype in filled)
                    filled.add(rtype)
        # ... except that the index describes current versions: resources changed after T
        # (or deleted after _since) are judged again on their version at T
        new_set = {p for cohort, new in cohorts if new and cohort for p in cohort}
        member_set = set(members) if members is not None else None
        late = _late(conn, sorted(pairs), t_us, since_us)
        for part in chunks(late):
            conn.execute(delete(bulk_export_key).where(bulk_export_key.c.job_id == job_id, bulk_export_key.c.res_key.in_(part)))
            hits: list[int] = []
            new_hits: list[int] = []
            for key, v in state_at(conn, part, t_us, since_us).items():
                refs = references(v.resource_type, jsonio.loads(v.content or b"{}"), pairs.get(v.resource_type, ()))
                patients = {rid for rt, rid in refs if rt == "Patient" and rid is not None}
                if member_set is not None:
                    patients &= member_set
                if patients & new_set:
                    new_hits.append(key)
                elif patients:
                    hits.append(key)
            _add_keys(conn, job_id, new_hits, new_member=True)
            _add_keys(conn, job_id, hits)

    # 3. the study's own resources (Group level)
    if level == "group" and group_version is not None:
        study_keys: set[int] = set()
        if want("Group"):
            study_keys.add(group_version.res_key)
        studies = _referrers(conn, "ResearchStudy", {"enrollment"}, {("Group", group_id)}, t_us)
        if want("ResearchStudy"):
            study_keys.update(v.res_key for v in studies)
        if want("PlanDefinition"):
            plan_ids: set[str] = set()
            for v in studies:
                doc = jsonio.loads(v.content or b"{}")
                for ref in doc.get("protocol") or []:
                    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                        rt, rid, _, _ = parse_reference(ref["reference"])
                        if rt == "PlanDefinition" and rid:
                            plan_ids.add(rid)
            study_keys.update(v.res_key for v in _current_at(conn, "PlanDefinition", sorted(plan_ids), t_us).values())
        targets = {("Group", group_id)} | {("ResearchStudy", v.id) for v in studies}
        reports = study_reports(conn, targets, t_us)
        if want("MeasureReport"):
            study_keys.update(v.res_key for v in reports)
        _add_keys(conn, job_id, study_keys)
        if want("Medication"):
            med_ids = _targets_of_keys(conn, job_id, "MedicationAdministration", "medication", "Medication", t_us)
            _add_keys(conn, job_id, [v.res_key for v in _current_at(conn, "Medication", sorted(med_ids), t_us).values()])
        if want("Measure"):
            urls = {u for v in reports for u in _measure_urls(v)}
            urls |= _measure_urls_of_keys(conn, job_id, t_us)
            _add_keys(conn, job_id, _measures_at(conn, sorted(urls), t_us))

    # 4. includeAssociatedData=RelevantProvenanceResources: Provenance targeting what is exported
    if provenance:
        target = resource.alias("target")
        k = bulk_export_key.alias("k")
        prov = resource.alias("prov")
        _insert_ignore(
            conn,
            select(literal(job_id), x.res_key, literal(False))
            .distinct()
            .join(target, and_(target.c.resource_type == x.target_type, target.c.id == x.target_id))
            .join(k, and_(k.c.res_key == target.c.res_key, k.c.job_id == job_id))
            .join(prov, prov.c.res_key == x.res_key)
            .where(x.resource_type == "Provenance", x.param == "target", prov.c.last_updated_us <= t_us, prov.c.deleted == false()),
        )
        for part in chunks(_late(conn, ["Provenance"], t_us, since_us)):
            hits = []
            for key, v in state_at(conn, part, t_us, since_us).items():
                refs = [(rt, rid) for rt, rid in references("Provenance", jsonio.loads(v.content or b"{}"), {"target"}) if rt and rid]
                if refs and _any_exported(conn, job_id, refs):
                    hits.append(key)
            _add_keys(conn, job_id, hits)
    return scope


def _members(group: dict[str, Any], scope: Scope) -> list[str]:
    out: list[str] = []
    for m in group.get("member") or []:
        if not isinstance(m, dict) or m.get("inactive") is True:
            continue
        ref = (m.get("entity") or {}).get("reference")
        if not isinstance(ref, str):
            continue
        rt, rid, _, _ = parse_reference(ref)
        if rt == "Patient" and rid:
            if rid not in out:
                out.append(rid)
        else:
            scope.issues.append(Issue("not-supported", f"Group member '{ref}' is not a Patient; it was not exported.", severity="warning"))
    return out


def _current_at(conn: Connection, resource_type: str, ids: list[str], t_us: int, *, keep_deleted: bool = False) -> dict[str, StoredVersion]:
    """{id: version at T} of the given resources; deleted ones only with ``keep_deleted``."""
    out: dict[str, StoredVersion] = {}
    r = resource.c
    for part in chunks(sorted(set(ids))):
        keys = [row[0] for row in conn.execute(select(r.res_key).where(r.resource_type == resource_type, r.id.in_(part))).all()]
        at = versions_at(conn, keys, t_us)
        for v in at.values():
            if not v.deleted:
                out[v.id] = v
            elif keep_deleted:
                out[v.id] = v
    return out


def _referrers(conn: Connection, source_type: str, params: set[str] | None, targets: set[tuple[str, str | None]], t_us: int) -> list[StoredVersion]:
    """Versions at T of ``source_type`` resources referencing one of ``targets`` (through
    ``params``, or any reference parameter when None)."""
    targets = {(t, i) for t, i in targets if i}
    if not targets:
        return []
    x = idx_reference.c
    r = resource.c
    cond = [x.resource_type == source_type, tuple_(x.target_type, x.target_id).in_(sorted(targets))]
    if params is not None:
        cond.append(x.param.in_(sorted(params)))
    indexed = [row[0] for row in conn.execute(select(x.res_key).distinct().join(resource, r.res_key == x.res_key).where(*cond, r.last_updated_us <= t_us)).all()]
    found = versions_at(conn, indexed, t_us)
    codes = params if params is not None else {p.code for p in compiled_params(source_type) if p.type == "reference"}
    late = [row[0] for row in conn.execute(select(r.res_key).where(r.resource_type == source_type, r.last_updated_us > t_us)).all()]
    for key, v in versions_at(conn, late, t_us).items():
        if not v.deleted and references(source_type, jsonio.loads(v.content or b"{}"), codes) & targets:
            found[key] = v
    return [v for v in found.values() if not v.deleted]


def _extension_targets(doc: dict[str, Any]) -> set[tuple[str | None, str | None]]:
    """(type, id) that top-level extensions reference (e.g. workflow-researchStudy)."""
    out: set[tuple[str | None, str | None]] = set()
    for ext in doc.get("extension") or []:
        ref = ext.get("valueReference") if isinstance(ext, dict) else None
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            rt, rid, _, _ = parse_reference(ref["reference"])
            out.add((rt, rid))
    return out


def study_reports(conn: Connection, targets: set[tuple[str, str | None]], t_us: int) -> list[StoredVersion]:
    """MeasureReports about a study, as of T: those referencing the study's Group or
    ResearchStudy through a search parameter (``subject`` …) or through a top-level
    extension — the derived endpoints name their study in the ``workflow-researchStudy``
    extension, which no search parameter indexes. MeasureReports are few (some per study
    and visit), so the extension check reads them in chunks."""
    targets = {(t, i) for t, i in targets if i}
    found = {v.res_key: v for v in _referrers(conn, "MeasureReport", None, targets, t_us)}
    r = resource.c
    after = 0
    while True:
        rows = conn.execute(
            select(r.res_key, r.resource_type, r.id, r.version_id, r.last_updated_us, r.deleted, r.content)
            .where(r.resource_type == "MeasureReport", r.res_key > after)
            .order_by(r.res_key)
            .limit(CHUNK)
        ).all()
        if not rows:
            return list(found.values())
        after = rows[-1][0]
        at = versions_at(conn, [row[0] for row in rows if row[4] > t_us], t_us)
        for row in rows:
            v = StoredVersion(*row) if row[4] <= t_us else at.get(row[0])
            if v is None or v.deleted or v.res_key in found:
                continue
            if _extension_targets(jsonio.loads(v.content or b"{}")) & targets:
                found[v.res_key] = v


def _late_keys_of_type(conn: Connection, job_id: str, resource_type: str, t_us: int) -> list[int]:
    r = resource.c
    k = bulk_export_key.c
    return [
        row[0]
        for row in conn.execute(
            select(r.res_key).join(bulk_export_key, and_(k.res_key == r.res_key, k.job_id == job_id)).where(r.resource_type == resource_type, r.last_updated_us > t_us)
        ).all()
    ]


def _indexed_refs_in_job(conn: Connection, job_id: str, source_type: str, param: str, t_us: int) -> list[tuple[str | None, str | None, str | None]]:
    """(target_type, target_id, url) of the ``param`` references of the job's ``source_type``
    resources unchanged since T. Two steps on purpose: the reference rows of that one
    parameter first (an index range), then which of them are in the job — a join would
    let the planner walk every key of a large cohort."""
    x = idx_reference.c
    r = resource.c
    k = bulk_export_key.c
    by_key: dict[int, list[tuple[str | None, str | None, str | None]]] = {}
    for key, rt, rid, url in conn.execute(
        select(x.res_key, x.target_type, x.target_id, x.url).join(resource, r.res_key == x.res_key).where(x.resource_type == source_type, x.param == param, r.last_updated_us <= t_us)
    ).all():
        by_key.setdefault(key, []).append((rt, rid, url))
    out: list[tuple[str | None, str | None, str | None]] = []
    for part in chunks(sorted(by_key), 1000):
        for (key,) in conn.execute(select(k.res_key).where(k.job_id == job_id, k.res_key.in_(part))).all():
            out.extend(by_key[key])
    return out


def _targets_of_keys(conn: Connection, job_id: str, source_type: str, param: str, target_type: str, t_us: int) -> set[str]:
    """Ids of ``target_type`` resources that the job's ``source_type`` resources reference (at T)."""
    x = idx_reference.c
    r = resource.c
    k = bulk_export_key.c
    ids = {rid for rt, rid, _ in _indexed_refs_in_job(conn, job_id, source_type, param, t_us) if rt == target_type and rid}
    for part in chunks(_late_keys_of_type(conn, job_id, source_type, t_us)):
        for v in versions_at(conn, part, t_us).values():
            if not v.deleted:
                ids |= {rid for rt, rid in references(source_type, jsonio.loads(v.content or b"{}"), {param}) if rt == target_type and rid}
    return ids


def _measure_urls(v: StoredVersion) -> set[str]:
    doc = jsonio.loads(v.content or b"{}")
    url = doc.get("measure")
    return {url} if isinstance(url, str) and url else set()


def _measure_urls_of_keys(conn: Connection, job_id: str, t_us: int) -> set[str]:
    """``MeasureReport.measure`` of the MeasureReports already in the job (patient compartment)."""
    x = idx_reference.c
    r = resource.c
    k = bulk_export_key.c
    urls = {url for _, _, url in _indexed_refs_in_job(conn, job_id, "MeasureReport", "measure", t_us) if url}
    for part in chunks(_late_keys_of_type(conn, job_id, "MeasureReport", t_us)):
        for v in versions_at(conn, part, t_us).values():
            if not v.deleted:
                urls |= _measure_urls(v)
    return urls


def _measures_at(conn: Connection, urls: list[str], t_us: int) -> list[int]:
    """res_keys of the Measure resources whose ``url`` is one of the canonicals (``|version`` ignored)."""
    if not urls:
        return []
    plain = sorted({u.split("|", 1)[0] for u in urls})
    u = idx_uri.c
    r = resource.c
    keys = [
        row[0]
        for row in conn.execute(
            select(u.res_key).distinct().join(resource, r.res_key == u.res_key).where(u.resource_type == "Measure", u.param == "url", u.value.in_(plain), r.last_updated_us <= t_us)
        ).all()
    ]
    late = [row[0] for row in conn.execute(select(r.res_key).where(r.resource_type == "Measure", r.last_updated_us > t_us)).all()]
    for key, v in versions_at(conn, late, t_us).items():
        if not v.deleted and jsonio.loads(v.content or b"{}").get("url") in plain:
            keys.append(key)
    return keys


def _any_exported(conn: Connection, job_id: str, refs: list[tuple[str, str]]) -> bool:
    r = resource.c
    k = bulk_export_key.c
    row = conn.execute(
        select(r.res_key).join(bulk_export_key, and_(k.res_key == r.res_key, k.job_id == job_id)).where(tuple_(r.resource_type, r.id).in_(refs)).limit(1)
    ).first()
    return row is not None


__all__ = ["Scope", "materialise", "versions_at", "state_at", "references", "patient_compartment", "compartment_types", "STUDY_TYPES"]
