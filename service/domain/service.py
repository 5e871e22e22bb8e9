"""The trial's own vocabulary over the FHIR store: studies, subjects, infusions,
assessments and adverse events.

Every write maps the entity to FHIR (:mod:`mappers`) and sends it through the same
transaction processor as ``POST /fhir`` — one write path, one set of rules. Resource ids
are derived from business keys (study + subject + visit + measure …), so a write is an
idempotent ``PUT``: the same assessment twice changes nothing, a corrected value makes a
new version of the same Observation, never a duplicate.

Reads go the other way: FHIR resources — including plain Observations pushed by a
hospital with LOINC codes — are mapped back to entities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError
from sqlalchemy import Engine

from mappers import ids
from mappers.adverse_event import adverse_event_to_fhir, fhir_to_adverse_event
from mappers.assessment import assessment_to_observation, observation_to_assessment
from mappers.infusion import infusion_to_medication_administration, medication_administration_to_infusion
from mappers.study import study_to_fhir, research_study_to_study
from mappers.subject import patient_and_research_subject_to_subject, subject_to_fhir
from mappers._fhir import MappingError
from schemas.trial import AdverseEvent, Assessment, Infusion, Study, Subject
from service.fhir import jsonio
from service.fhir.outcome import FhirError, error
from service.rest.service import FhirStore, now_us
from service.search.service import SearchRequest, run_search
from service.transactions.service import BundleProcessor


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a domain write did: created something, changed something, or nothing."""

    created: bool
    changed: bool
    versions: dict[str, str]

    @property
    def status_code(self) -> int:
        return 201 if self.created else 200


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


class DomainService:
    """Create, read, update and list trial entities (see module docstring)."""

    def __init__(self, engine: Engine, store: FhirStore, bundles: BundleProcessor, base_url: str = "") -> None:
        self.engine = engine
        self.store = store
        self.bundles = bundles
        self.base_url = base_url

    # --- plumbing ----------------------------------------------------------------------------

    def write(self, resources: Iterable[dict[str, Any]]) -> WriteOutcome:
        """PUT every resource in one transaction; report whether anything was created or changed."""
        resources = list(resources)
        response = self.bundles.process({"resourceType": "Bundle", "type": "transaction", "entry": [_entry(r) for r in resources]}, self.base_url, return_pref="minimal")
        entries = response.get("entry", [])
        created = any(e["response"]["status"].startswith("201") for e in entries)
        changed = any("outcome" not in e["response"] for e in entries)
        versions = {f"{r['resourceType']}/{r['id']}": e["response"].get("etag", "") for r, e in zip(resources, entries)}
        return WriteOutcome(created, changed, versions)

    def _version(self, resource_type: str, id: str) -> str | None:
        try:
            return f'W/"{self.store.read(resource_type, id).version_id}"'
        except FhirError:
            return None

    def _read(self, resource_type: str, id: str, what: str) -> dict[str, Any]:
        try:
            return jsonio.loads(self.store.read(resource_type, id).content or b"{}")
        except FhirError as exc:
            if exc.status in (404, 410):
                raise error(404, "not-found", f"{what} does not exist.") from None
            raise

    def _search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every match of a search (all pages), as parsed resources."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page_params = params + [("_count", "1000")] + ([("_cursor", cursor)] if cursor else [])
            found: list[Any] = []
            doc = run_search(self.engine, SearchRequest(resource_type, page_params, self.base_url or "http://localhost/fhir", True, 1000, 1000, now_us()), collect=found)
            out.extend(jsonio.loads(v.content) for v in found if v.content)
            nxt = [link["url"] for link in doc.get("link", []) if link["relation"] == "next"]
            if not nxt:
                return out
            cursor = nxt[0].split("_cursor=", 1)[1].split("&", 1)[0]

    # --- studies -----------------------------------------------------------------------------

    def put_study(self, study: Study) -> WriteOutcome:
        """Create or update a study: ResearchStudy, its schedule (PlanDefinition), the
        enrolled cohort (Group, members kept) and the study product (Medication)."""
        members: list[Subject] = []
        try:
            members = self.list_subjects(study.code)
        except FhirError:
            members = []
        resources = study_to_fhir(study, members)
        return self.write([resources.medication, resources.plan_definition, resources.group, resources.research_study])

    def get_study(self, code: str) -> Study:
        rs = self._read("ResearchStudy", ids.study_id(code), f"Study {code}")
        pd = None
        protocol = (rs.get("protocol") or [{}])[0].get("reference", "")
        if protocol.startswith("PlanDefinition/"):
            pd = self._read("PlanDefinition", protocol.split("/", 1)[1], f"the schedule of study {code}")
        return research_study_to_study(rs, pd)

    def list_studies(self) -> list[Study]:
        studies = []
        for rs in self._search("ResearchStudy", []):
            try:
                studies.append(self.get_study(self._study_code(rs)))
            except (MappingError, FhirError, ValidationError):
                continue  # a ResearchStudy posted through /fhir that is not a trialfhir study
        return studies

    @staticmethod
    def _study_code(rs: dict[str, Any]) -> str:
        from mappers import codes

        for ident in rs.get("identifier") or []:
            if ident.get("system") == codes.STUDY_IDENTIFIER_SYSTEM:
                return str(ident["value"])
        return str(rs.get("id"))

    # --- subjects -----------------------------------------------------------------------------

    def put_subject(self, subject: Subject) -> WriteOutcome:
        study = self.get_study(subject.study_code)
        patient, research_subject = subject_to_fhir(subject)
        members = {s.subject_code: s for s in self.list_subjects(study.code)}
        members[subject.subject_code] = subject
        group = study_to_fhir(study, members.values()).group
        return self.write([patient, research_subject, group])

    def get_subject(self, study_code: str, subject_code: str) -> Subject:
        rs = self._read("ResearchSubject", ids.research_subject_id(study_code, subject_code), f"Subject {subject_code} of study {study_code}")
        patient = self._read("Patient", ids.patient_id(study_code, subject_code), f"Patient of subject {subject_code}")
        return patient_and_research_subject_to_subject(patient, rs)

    def list_subjects(self, study_code: str) -> list[Subject]:
        self._read("ResearchStudy", ids.study_id(study_code), f"Study {study_code}")
        found = self._search("ResearchSubject", [("study", f"ResearchStudy/{ids.study_id(study_code)}")])
        subjects = []
        for rs in found:
            pid = ids.reference_id(rs.get("individual"), "Patient")
            if pid is None:
                continue
            try:
                subjects.append(patient_and_research_subject_to_subject(self._read("Patient", pid, "Patient"), rs))
            except (MappingError, ValidationError):
                continue
        return sorted(subjects, key=lambda s: s.subject_code)

    def _require_subject(self, study_code: str, subject_code: str) -> None:
        self.get_subject(study_code, subject_code)

    # --- infusions ----------------------------------------------------------------------------

    def put_infusion(self, infusion: Infusion) -> WriteOutcome:
        self._require_subject(infusion.study_code, infusion.subject_code)
        return self.write([infusion_to_medication_administration(infusion)])

    def get_infusion(self, study_code: str, subject_code: str, infusion_code: str) -> Infusion:
        ma = self._read("MedicationAdministration", ids.medication_administration_id(study_code, subject_code, infusion_code), f"Infusion {infusion_code}")
        return medication_administration_to_infusion(ma)

    def list_infusions(self, study_code: str) -> list[Infusion]:
        out = []
        for ma in self._search("MedicationAdministration", [("study", f"ResearchStudy/{ids.study_id(study_code)}")]):
            try:
                out.append(medication_administration_to_infusion(ma))
            except (MappingError, ValidationError):
                continue
        return sorted(out, key=lambda i: (i.subject_code, i.start))

    # --- assessments --------------------------------------------------------------------------

    def assessment_resources(self, assessment: Assessment) -> dict[str, Any]:
        if not (assessment.study_code and assessment.subject_code and assessment.visit_name):
            raise error(422, "required", "An assessment needs study, subject and visit.")
        return assessment_to_observation(assessment)

    def put_assessment(self, assessment: Assessment) -> WriteOutcome:
        self._require_subject(assessment.study_code or "", assessment.subject_code or "")
        study = self.get_study(assessment.study_code or "")
        if assessment.visit_name not in {v.name for v in study.schedule}:
            raise error(422, "business-rule", f"Visit {assessment.visit_name} is not in the schedule of study {study.code} ({', '.join(v.name for v in study.schedule)}).")
        return self.write([self.assessment_resources(assessment)])

    def get_assessment(self, study_code: str, subject_code: str, visit: str, measure: str) -> Assessment:
        obs = self._read("Observation", ids.observation_id(study_code, subject_code, visit, measure), f"Assessment {subject_code}/{visit}/{measure}")
        found = observation_to_assessment(obs, study_code=study_code, subject_code=subject_code)
        if found is None:
            raise error(404, "not-found", f"Assessment {subject_code}/{visit}/{measure} is not a usable value.")
        return found

    def list_assessments(self, study_code: str) -> list[Assessment]:
        """Every assessment of the study's subjects — entered here or pushed as FHIR by a hospital."""
        by_patient = {ids.patient_id(study_code, s.subject_code): s.subject_code for s in self.list_subjects(study_code)}
        out = []
        for obs in self._search("Observation", [("study", f"ResearchStudy/{ids.study_id(study_code)}")]):
            pid = ids.reference_id(obs.get("subject"), "Patient")
            if pid not in by_patient:
                continue
            try:
                found = observation_to_assessment(obs, study_code=study_code, subject_code=by_patient[pid])
            except (MappingError, ValidationError):
                continue
            if found is not None:
                out.append(found)
        return sorted(out, key=lambda a: (a.subject_code or "", str(a.effective), a.measure.value))

    # --- adverse events ---------------------------------------------------------------------

    def put_adverse_event(self, ae: AdverseEvent) -> WriteOutcome:
        self._require_subject(ae.study_code, ae.subject_code)
        return self.write([adverse_event_to_fhir(ae)])

    def get_adverse_event(self, study_code: str, subject_code: str, ae_code: str) -> AdverseEvent:
        return fhir_to_adverse_event(self._read("AdverseEvent", ids.adverse_event_id(study_code, subject_code, ae_code), f"Adverse event {ae_code}"))

    def list_adverse_events(self, study_code: str) -> list[AdverseEvent]:
        out = []
        for res in self._search("AdverseEvent", [("study", f"ResearchStudy/{ids.study_id(study_code)}")]):
            try:
                out.append(fhir_to_adverse_event(res))
            except (MappingError, ValidationError):
                continue
        return sorted(out, key=lambda a: (a.subject_code, a.ae_code))


__all__ = ["DomainService", "WriteOutcome", "urlencode"]
