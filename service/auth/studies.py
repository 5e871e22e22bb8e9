"""Per-study visibility: what a client bound to studies may see and write.

A client registered with ``--study S`` works inside those studies only:

- the studies themselves: ``ResearchStudy/S`` (by id, or by an ``identifier`` value S), the
  PlanDefinitions of their ``protocol``, the Groups of their ``enrollment``, the Medications
  of their ``focus`` (matched by code) and those their subjects' MedicationAdministrations
  reference, the MeasureReports about them (by reference or ``workflow-researchStudy``
  extension, :func:`service.bulk.scope.study_reports`) and the Measures those name;
- their subjects: the Patients that a ``ResearchSubject`` with ``study`` = S names as
  ``individual``, and every resource in those Patients' compartments
  (https://hl7.org/fhir/R4/compartmentdefinition-patient.html).

Everything is expressed as SQL over the search index, so the same rule filters a search
page, an ``_include``, ``$everything``, an ``$export`` scan, a read by id and the check
after a write (which sees the transaction's own, uncommitted index rows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, false, or_, select

from service.db.schema import idx_reference, idx_token, idx_uri, resource
from service.fhir import jsonio
from service.search.indexing import parse_reference

#: Types that belong to a study rather than to one of its subjects.
STUDY_LEVEL_TYPES = frozenset({"ResearchStudy", "PlanDefinition", "Group", "Medication", "MeasureReport", "Measure"})
#: "as of now" for the scope helpers that take a transactionTime
_NOW = 2**62


def _patient_compartment() -> dict[str, list[str]]:
    from service.bulk.scope import patient_compartment

    return patient_compartment()


def _refs(doc: dict[str, Any], field: str, rtype: str) -> list[str]:
    value = doc.get(field)
    out = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            t, i, _, _ = parse_reference(item["reference"])
            if t == rtype and i:
                out.append(i)
    return out


class StudyView:
    """The visibility rule of one set of bound studies, on one connection."""

    def __init__(self, conn: Connection, studies: Iterable[str]) -> None:
        self.conn = conn
        self.bound = sorted(set(studies))
        self._study_ids: list[str] | None = None
        self._study_keys: set[int] | None = None

    # --- the studies ---------------------------------------------------------------------

    def study_ids(self) -> list[str]:
        """ResearchStudy ids of the bound studies (a bound value may be an id or an identifier)."""
        if self._study_ids is None:
            t = idx_token.c
            r = resource.c
            found = {
                row[0]
                for row in self.conn.execute(
                    select(r.id).where(
                        r.resource_type == "ResearchStudy",
                        r.res_key.in_(select(t.res_key).where(t.resource_type == "ResearchStudy", t.param == "identifier", t.value.in_(self.bound))),
                    )
                ).all()
            }
            self._study_ids = sorted(found | set(self.bound))
        return self._study_ids

    def patients(self, exclude_subject_keys: Iterable[int] = ()) -> Any:
        """SELECT of the Patient ids enrolled in the studies (ResearchSubject.study → individual)."""
        x = idx_reference.alias("subj_individual")
        y = idx_reference.alias("subj_study")
        subjects = select(y.c.res_key).where(
            y.c.resource_type == "ResearchSubject", y.c.param == "study", y.c.target_type == "ResearchStudy", y.c.target_id.in_(self.study_ids())
        )
        stmt = select(x.c.target_id).where(
            x.c.resource_type == "ResearchSubject", x.c.param == "individual", x.c.target_type == "Patient", x.c.res_key.in_(subjects)
        )
        excluded = sorted(set(exclude_subject_keys))
        if excluded:
            stmt = stmt.where(x.c.res_key.not_in(excluded))
        return stmt

    def _compartment_keys(self, patients: Any, resource_type: str | None) -> Any:
        x = idx_reference.alias("comp")
        pairs = _patient_compartment()
        if resource_type is not None:
            pairs = {resource_type: pairs[resource_type]} if resource_type in pairs else {}
        if not pairs:
            return select(x.c.res_key).where(false())
        return select(x.c.res_key).where(
            x.c.target_type == "Patient",
            x.c.target_id.in_(patients),
            or_(*[and_(x.c.resource_type == t, x.c.param.in_(ps)) for t, ps in sorted(pairs.items())]),
        )

    def study_keys(self) -> set[int]:
        """res_keys of the studies' own resources (see module docstring)."""
        if self._study_keys is not None:
            return self._study_keys
        from service.bulk.scope import study_reports

        r = resource.c
        rows = self.conn.execute(
            select(r.res_key, r.id, r.content).where(r.resource_type == "ResearchStudy", r.id.in_(self.study_ids()), r.deleted == False)  # noqa: E712
        ).all()
        keys = {row[0] for row in rows}
        pairs: set[tuple[str, str]] = set()
        codings: set[tuple[str | None, str]] = set()
        for _, sid, content in rows:
            doc = jsonio.loads(content or b"{}")
            pairs |= {("PlanDefinition", i) for i in _refs(doc, "protocol", "PlanDefinition")}
            pairs |= {("Group", i) for i in _refs(doc, "enrollment", "Group")}
            for concept in doc.get("focus") or []:
                for c in (concept.get("coding") or []) if isinstance(concept, dict) else []:
                    if isinstance(c, dict) and isinstance(c.get("code"), str):
                        codings.add((c.get("system"), c["code"]))
        for rtype in ("PlanDefinition", "Group"):
            ids = sorted(i for t, i in pairs if t == rtype)
            if ids:
                keys |= {row[0] for row in self.conn.execute(select(r.res_key).where(r.resource_type == rtype, r.id.in_(ids))).all()}
        t = idx_token.c
        for system, code in sorted(codings, key=lambda p: (p[0] or "", p[1])):
            cond = [t.resource_type == "Medication", t.param == "code", t.value == code]
            if system:
                cond.append(t.system == system)
            keys |= {row[0] for row in self.conn.execute(select(t.res_key).where(*cond)).all()}
        targets = {("ResearchStudy", i) for i in self.study_ids()} | {p for p in pairs if p[0] == "Group"}
        reports = study_reports(self.conn, targets, _NOW)
        keys |= {v.res_key for v in reports}
        urls = set()
        for v in reports:
            url = jsonio.loads(v.content or b"{}").get("measure")
            if isinstance(url, str) and url:
                urls.add(url.split("|", 1)[0])
        if urls:
            u = idx_uri.c
            keys |= {row[0] for row in self.conn.execute(select(u.res_key).where(u.resource_type == "Measure", u.param == "url", u.value.in_(sorted(urls)))).all()}
        self._study_keys = keys
        return keys

    # --- the rule ------------------------------------------------------------------------------

    def condition(self, resource_type: str | None = None, *, exclude_subject_keys: Iterable[int] = ()) -> Any:
        """A WHERE condition on ``resource`` true for the rows these studies may see
        (``resource_type`` narrows it to one type's rules; None = any type)."""
        r = resource.c
        patients = self.patients(exclude_subject_keys)
        comp = _patient_compartment()
        parts: list[Any] = []
        if resource_type in (None, "Patient"):
            parts.append(and_(r.resource_type == "Patient", r.id.in_(patients)))
        if resource_type is None or resource_type in comp:
            parts.append(r.res_key.in_(self._compartment_keys(patients, resource_type)))
        if resource_type in (None, "Medication"):
            x = idx_reference.alias("med")
            administered = select(x.c.target_id).where(
                x.c.resource_type == "MedicationAdministration",
                x.c.param == "medication",
                x.c.target_type == "Medication",
                x.c.res_key.in_(self._compartment_keys(patients, "MedicationAdministration")),
            )
            parts.append(and_(r.resource_type == "Medication", r.id.in_(administered)))
        if resource_type in (None, "Measure"):
            x = idx_reference.alias("named")
            u = idx_uri.alias("murl")
            named = select(x.c.url).where(
                x.c.resource_type == "MeasureReport", x.c.param == "measure", x.c.url.is_not(None), x.c.res_key.in_(self._compartment_keys(patients, "MeasureReport"))
            )
            parts.append(r.res_key.in_(select(u.c.res_key).where(u.c.resource_type == "Measure", u.c.param == "url", u.c.value.in_(named))))
        if resource_type is None or resource_type in STUDY_LEVEL_TYPES:
            keys = self.study_keys()
            if keys:
                parts.append(r.res_key.in_(sorted(keys)))
        return or_(*parts) if parts else false()

    def visible_keys(self, keys: Iterable[int], *, exclude_subject_keys: Iterable[int] = ()) -> set[int]:
        """Which of ``keys`` (current rows) these studies may see."""
        wanted = sorted(set(keys))
        out: set[int] = set()
        r = resource.c
        cond = self.condition(None, exclude_subject_keys=exclude_subject_keys)
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            out |= {row[0] for row in self.conn.execute(select(r.res_key).where(r.res_key.in_(part), cond)).all()}
        return out

    def enrolled(self, patient_ids: Iterable[str], *, exclude_subject_keys: Iterable[int] = ()) -> set[str]:
        """Which of ``patient_ids`` are subjects of these studies."""
        ids = sorted(set(patient_ids))
        if not ids:
            return set()
        stmt = self.patients(exclude_subject_keys)
        col = stmt.selected_columns[0]
        return {row[0] for row in self.conn.execute(stmt.where(col.in_(ids))).all()}


__all__ = ["STUDY_LEVEL_TYPES", "StudyView"]
