"""Load one study's inputs from the store in bulk (contract §2, §3).

What is read, each with one SQL statement (:mod:`service.derivation.queries`):

- the ``ResearchStudy`` (+ the ``study-endpoint-settings`` extension, :mod:`mappers.codes`)
  and its schedule: the ``PlanDefinition`` of ``ResearchStudy.protocol`` when there is
  one, otherwise the default RA schedule (contract §3);
- ``ResearchSubject?study=…`` and their ``Patient``\\ s;
- ``MedicationAdministration`` of those patients: the ``completed`` ones of the study
  product (``medicationReference`` → the product ``Medication``, or a medication coded
  ``{local system}|{product}``) are the infusions; day 0 = the start of the first one,
  else ``ResearchSubject.period.start`` (contract §3);
- ``Observation`` of those patients whose ``code`` is one of contract §2's (system
  checked here), ``QuestionnaireResponse`` of those patients (HAQ, :mod:`.haq_qr`), the
  ``Encounter``\\ s the Observations reference (study-visit extension), and
  ``AdverseEvent?study=…``.

Each Observation is read once: status (only ``final``/``amended``/``corrected`` are used;
the store holds the current version only, so an amended value replaces the original),
measure (system + code), value and unit, converted to the scales the scores need or set
aside with the reason (:mod:`.canonical`), the date as written (:mod:`.reading`).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Union

from sqlalchemy import Engine

from mappers import codes, ids
from mappers._fhir import MappingError
from mappers.study import plan_definition_to_visits, settings_from_research_study
from schemas.trial import Visit, default_schedule
from service.db.engine import read_transaction
from service.derivation import queries
from service.derivation.canonical import canonical_of
from service.derivation.haq_qr import USED_STATUSES as QR_STATUSES
from service.derivation.haq_qr import haq_di_of_response, has_haq_items
from service.derivation.reading import ParseStats, When, code_of, extension_value, loads, loads_observation, reference_id, when, when_text
from service.derivation.records import (
    Infusion,
    InputValue,
    SetAside,
    Source,
    StudyContext,
    StudyData,
    SubjectRecord,
)
from service.endpoints.result import Computed, NotComputable
from service.fhir.outcome import error

USED_STATUSES = codes.USED_OBSERVATION_STATUSES
#: (system, code) of every contract §2 Observation the derivation reads (not anti-CCP, RF).
READ_CODINGS: dict[tuple[str, str], str] = {k: m for k, m in codes.CODING_TO_MEASURE.items() if m not in ("anti_ccp", "rf")}
_CODE_VALUES = sorted({code for _, code in READ_CODINGS})


# --- study and schedule -----------------------------------------------------------------------


def _check_schedule(visits: list[Visit], where: str) -> None:
    if "BL" not in {v.name for v in visits}:
        raise error(422, "business-rule", f"The schedule of {where} has no baseline visit named 'BL' (contract §3).")
    ordered = sorted(visits, key=lambda v: v.target_day)
    for before, after in zip(ordered, ordered[1:]):
        if after.first_day <= before.last_day:
            raise error(422, "business-rule", f"The visit windows of {before.name} and {after.name} in {where} overlap.")


def study_context(conn: Any, study_id: str) -> tuple[StudyContext, list[str]]:
    """The study's code, schedule, settings and product (404 when it does not exist)."""
    rows = list(queries.by_ids(conn, "ResearchStudy", [study_id]))
    if not rows:
        raise error(404, "not-found", f"ResearchStudy/{study_id} does not exist.")
    rs = loads(rows[0].content)
    warnings: list[str] = []
    code = next(
        (i.get("value") for i in rs.get("identifier") or () if isinstance(i, dict) and i.get("system") == codes.STUDY_IDENTIFIER_SYSTEM and i.get("value")),
        study_id,
    )
    try:
        settings = settings_from_research_study(rs)
    except (MappingError, ValueError) as exc:
        raise error(422, "business-rule", f"The endpoint settings of ResearchStudy/{study_id} are invalid: {exc}") from None
    product = next((c for f in rs.get("focus") or () if (c := code_of(f, codes.RA))), codes.PRODUCT_CODE)
    schedule, source = default_schedule(), "default"
    protocol = next((pid for p in rs.get("protocol") or () if (pid := reference_id(p, "PlanDefinition"))), None)
    if protocol is not None:
        found = list(queries.by_ids(conn, "PlanDefinition", [protocol]))
        if not found:
            warnings.append(f"ResearchStudy.protocol references PlanDefinition/{protocol}, which does not exist: the default schedule is used")
        else:
            try:
                schedule, source = plan_definition_to_visits(loads(found[0].content)), f"PlanDefinition/{protocol}"
            except (MappingError, ValueError) as exc:
                raise error(422, "business-rule", f"The schedule PlanDefinition/{protocol} cannot be read: {exc}") from None
    _check_schedule(schedule, source)
    ctx = StudyContext(code, study_id, tuple(sorted(schedule, key=lambda v: v.target_day)), settings, product, source)
    return ctx, warnings


# --- subjects, infusions, day 0 -----------------------------------------------------------------


def _subject_code(resource: dict[str, Any], system: str) -> Optional[str]:
    for ident in resource.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("system") == system and isinstance(ident.get("value"), str):
            return ident["value"]
    return None


def _is_product(ma: dict[str, Any], product: str, product_medications: set[str]) -> bool:
    med_id = reference_id(ma.get("medicationReference"), "Medication")
    if med_id is not None:
        return med_id in product_medications
    return code_of(ma.get("medicationCodeableConcept"), codes.RA) == product


def _infusions(conn: Any, study: StudyContext, patient_ids: list[str], warnings: list[str]) -> dict[str, list[Infusion]]:
    rows = [(r, loads(r.content)) for r in queries.of_patients(conn, "MedicationAdministration", patient_ids)]
    product_meds = {ids.medication_id(study.product_code)}
    other = {m for _, ma in rows if (m := reference_id(ma.get("medicationReference"), "Medication")) and m not in product_meds}
    for med in queries.by_ids(conn, "Medication", other):
        if code_of(loads(med.content).get("code"), codes.RA) == study.product_code:
            product_meds.add(med.id)
    out: dict[str, list[Infusion]] = {}
    for row, ma in rows:
        if ma.get("status") != "completed" or not _is_product(ma, study.product_code, product_meds):
            continue
        patient = reference_id(ma.get("subject"), "Patient")
        start = (ma.get("effectivePeriod") or {}).get("start") if "effectivePeriod" in ma else ma.get("effectiveDateTime")
        moment = when(start, f"MedicationAdministration/{row.id} start")
        if patient is None:
            continue
        if isinstance(moment, str):
            warnings.append(f"{moment}: not used for day 0")
            continue
        out.setdefault(patient, []).append(Infusion(f"MedicationAdministration/{row.id}", moment.text, moment.day, moment.instant_us))
    for infusions in out.values():
        infusions.sort(key=lambda i: (i.instant_us, i.ref))
    return out


def _subjects(conn: Any, study: StudyContext, patient_ids: list[str], warnings: list[str]) -> list[SubjectRecord]:
    system = codes.subject_identifier_system(study.code)
    patients = {r.id: loads(r.content) for r in queries.by_ids(conn, "Patient", patient_ids)}
    infusions = _infusions(conn, study, patient_ids, warnings)
    subjects: dict[str, SubjectRecord] = {}
    for row in queries.research_subjects(conn, study.resource_id):
        rs = loads(row.content)
        patient = reference_id(rs.get("individual"), "Patient")
        if patient is None or patient not in patients:
            warnings.append(f"ResearchSubject/{row.id}: its individual is not a stored Patient; not derived")
            continue
        code = _subject_code(rs, system) or _subject_code(patients[patient], system) or patient
        own = infusions.get(patient, [])
        day0, source = None, None
        if own:
            day0, source = own[0].day, own[0].ref
        else:
            start = when((rs.get("period") or {}).get("start"), "ResearchSubject.period.start")
            if not isinstance(start, str):
                day0, source = start.day, "ResearchSubject.period.start"
        if patient in subjects:
            warnings.append(f"Patient/{patient} has two ResearchSubjects in the study; ResearchSubject/{row.id} is ignored")
            continue
        subjects[patient] = SubjectRecord(code, patient, row.id, day0, source, own)
    return sorted(subjects.values(), key=lambda s: (s.code, s.patient))


# --- Observations and QuestionnaireResponses ---------------------------------------------------------


def _measure(observation: dict[str, Any]) -> tuple[Optional[str], Optional[str]]:
    """(measure, problem): the contract §2 measure its codings name."""
    codings = (observation.get("code") or {}).get("coding") or ()
    if type(codings) is list and len(codings) == 1 and type(only := codings[0]) is dict:  # the common case
        return READ_CODINGS.get((only.get("system"), only.get("code"))), None  # type: ignore[arg-type]
    found = set()
    for c in codings:
        if isinstance(c, dict):
            m = READ_CODINGS.get((c.get("system"), c.get("code")))  # type: ignore[arg-type]
            if m is not None:
                found.add(m)
    if len(found) > 1:
        return None, f"Observation.code names several measures ({', '.join(sorted(found))})"
    return (found.pop() if found else None), None


def _value(observation: dict[str, Any]) -> tuple[Any, Optional[str], Optional[str]]:
    """(written number, unit, problem)."""
    q = observation.get("valueQuantity")
    if q is not None or "valueQuantity" in observation:
        if not isinstance(q, dict) or "value" not in q:
            return None, None, "valueQuantity has no value"
        if q.get("comparator"):
            return None, None, f"valueQuantity has a comparator ({q['comparator']}); an exact value is needed"
        code, system = q.get("code"), q.get("system")
        return q["value"], (code if code is not None and (system is None or system == codes.UCUM) else q.get("unit")), None
    if "valueInteger" in observation:
        return observation["valueInteger"], None, None
    absent = code_of(observation.get("dataAbsentReason"), "http://terminology.hl7.org/CodeSystem/data-absent-reason")
    return None, None, "no valueQuantity or valueInteger" + (f" (dataAbsentReason {absent})" if absent else "")


def _effective(doc: dict[str, Any]) -> Union[When, str]:
    """``effective[x]`` as a :class:`~.reading.When` (a Period by its start), or why not."""
    if "effectiveDateTime" in doc:
        return when(doc["effectiveDateTime"], "effectiveDateTime")
    if "effectivePeriod" in doc:
        return when((doc["effectivePeriod"] or {}).get("start"), "effectivePeriod.start")
    return when(doc.get("effectiveInstant"), "effective[x]")


def read_observation(row: queries.Row, doc: dict[str, Any]) -> InputValue | SetAside | None:
    """One stored Observation as an input value, a set-aside value, or ``None`` (not used)."""
    return _read_observation(row.id, row.version_id, row.last_updated_us, doc)


def _read_observation(id_: str, version: int, last_updated_us: int, doc: dict[str, Any]) -> InputValue | SetAside | None:
    if doc.get("status") not in USED_STATUSES:
        return None
    measure, problem = _measure(doc)
    if measure is None and problem is None:
        return None
    ref = f"Observation/{id_}"
    patient = reference_id(doc.get("subject"), "Patient")
    encounter = reference_id(doc["encounter"], "Encounter") if "encounter" in doc else None
    effective = doc.get("effectiveDateTime")
    moment = when_text(effective, "effectiveDateTime") if type(effective) is str else _effective(doc)  # the common case first
    if type(moment) is str:
        return SetAside(ref, patient, measure, problem or moment, None, encounter)
    if problem is None:
        written, unit, problem = _value(doc)
        if problem is None:
            converted = canonical_of(measure, written, unit)  # type: ignore[arg-type]
            if type(converted) is Computed:
                source = Source(ref, version, moment.text, moment.day, moment.instant_us, last_updated_us)  # type: ignore[union-attr]
                return InputValue(patient or "", measure, converted.value, source, encounter)  # type: ignore[arg-type]
            problem = converted.reason  # type: ignore[union-attr]
    return SetAside(ref, patient, measure, problem, moment.day, encounter)  # type: ignore[union-attr]


def read_questionnaire_response(row: queries.Row, doc: dict[str, Any], scoring: str) -> InputValue | SetAside | None:
    """A HAQ QuestionnaireResponse as a ``haq_di_qr`` input (see :mod:`.haq_qr`)."""
    if doc.get("status") not in QR_STATUSES or not has_haq_items(doc):
        return None
    ref = f"QuestionnaireResponse/{row.id}"
    patient = reference_id(doc.get("subject"), "Patient")
    encounter = reference_id(doc.get("encounter"), "Encounter")
    moment = when(doc.get("authored"), "QuestionnaireResponse.authored")
    if isinstance(moment, str):
        return SetAside(ref, patient, "haq_di", moment, None, encounter)
    score = haq_di_of_response(doc, scoring)
    if isinstance(score, NotComputable):
        return SetAside(ref, patient, "haq_di", score.reason, moment.day, encounter)
    source = Source(ref, row.version_id, moment.text, moment.day, moment.instant_us, row.last_updated_us)
    return InputValue(patient or "", "haq_di_qr", {"haq": score.value}, source, encounter)


# --- everything --------------------------------------------------------------------------------------


def observation_statement(conn: Any, patient_ids: list[str]) -> Any:
    """The SQL of every contract §2 Observation of ``patient_ids`` (codes filtered on value;
    the system is checked when read)."""
    return queries.of_patients_statement(conn, "Observation", patient_ids, code_values=_CODE_VALUES)


def _observations(conn: Any, patient_ids: list[str], stats: ParseStats, values: list[InputValue], set_aside: list[SetAside]) -> int:
    """Read the patients' Observations into ``values`` / ``set_aside``; the number of rows."""
    if not patient_ids:
        return 0
    n_rows = 0
    add_value, add_aside = values.append, set_aside.append
    for id_, version, last_updated_us, content in queries.stream(conn, observation_statement(conn, patient_ids)):
        n_rows += 1
        if content is None:
            continue
        found = _read_observation(id_, version, last_updated_us, loads_observation(content, stats))
        if type(found) is InputValue:
            add_value(found)
        elif found is not None:
            add_aside(found)  # type: ignore[arg-type]
    return n_rows


def load_study(engine: Engine, study_id: str) -> StudyData:
    """Read every input of ``ResearchStudy/{study_id}`` in one read transaction."""
    timings: dict[str, float] = {}
    stats = ParseStats()
    with read_transaction(engine) as conn:
        t0 = time.perf_counter()
        queries.prepare_bulk_read(conn)
        study, warnings = study_context(conn, study_id)
        patient_ids = queries.study_patient_ids(conn, study_id)
        subjects = _subjects(conn, study, patient_ids, warnings)
        timings["subjects_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        values: list[InputValue] = []
        set_aside: list[SetAside] = []
        n_rows = _observations(conn, patient_ids, stats, values, set_aside)
        for row in queries.of_patients(conn, "QuestionnaireResponse", patient_ids):
            n_rows += 1
            found = read_questionnaire_response(row, loads(row.content, stats), study.settings.haq_di_scoring)
            if isinstance(found, InputValue):
                values.append(found)
            elif found is not None:
                set_aside.append(found)
        timings["inputs_s"] = time.perf_counter() - t1
        encounters = {e for e in (v.encounter for v in values) if e} | {e for e in (s.encounter for s in set_aside) if e}
        encounter_visits: dict[str, Optional[str]] = {e: None for e in encounters}
        for row in queries.by_ids(conn, "Encounter", encounters):
            visit = extension_value(loads(row.content), codes.EXT_STUDY_VISIT, "valueString")
            encounter_visits[row.id] = visit if isinstance(visit, str) else None
        adverse_events = [{"id": r.id, **loads(r.content)} for r in queries.of_study(conn, "AdverseEvent", study_id)]
    data = StudyData(study, subjects, values, set_aside, encounter_visits, adverse_events, warnings)
    data.stats = {"rows_read": n_rows, "json_fast": stats.fast, "json_exact": stats.exact, **timings}
    return data


__all__ = ["READ_CODINGS", "load_study", "observation_statement", "read_observation", "read_questionnaire_response", "study_context"]
