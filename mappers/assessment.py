"""Assessment ↔ Observation.

**Written** (:func:`assessment_to_observation`), one Observation
``{study}-{subject}-{visit}-{measure}``:

- ``identifier``: system ``http://trialfhir.org/fhir/sid/assessment``, value
  ``{study}|{subject}|{visit}|{measure}`` (the business key);
- ``status``; ``category`` ``exam`` (joint counts, evaluator global), ``survey`` (patient
  global, pain, HAQ-DI) or ``laboratory``; ``code`` = the measure's contract coding (the
  first LOINC code of contract §2, or the local code) with ``text``;
- ``subject`` → the Patient; ``effectiveDateTime`` (a date or an aware datetime);
- ``valueQuantity`` with UCUM ``system``/``code`` (``unit`` = the code), joint counts
  in ``{#}`` too;
- extensions: ``study-visit`` (``valueString``, the visit name) and the R4 core
  ``workflow-researchStudy`` (→ ResearchStudy).

**Read** (:func:`read_observation`, :func:`observation_to_assessment`), from any
Observation, hospital feeds included:

- the measure comes from ``code.coding`` (system + code, every contract code including
  the alternates; never display text); an Observation whose codings name no measure is
  not an assessment (``None``), one whose codings name two different measures is an
  error;
- only statuses ``final``/``amended``/``corrected``/``entered-in-error`` are read;
  ``registered``/``preliminary``/``cancelled``/``unknown`` give ``None`` (no derivation
  uses them, contract §2);
- the value from ``valueQuantity`` (UCUM ``code``; ``unit`` text when there is no code;
  no unit at all is allowed) or ``valueInteger`` (no unit); decimals keep their
  precision;
- the date from ``effectiveDateTime``, ``effectivePeriod.start`` or ``effectiveInstant``
  (full date or dateTime with zone);
- visit from the ``study-visit`` extension, study/subject from the business-key
  identifier when present (else from the caller, who resolves ``Observation.subject``).

**Which layer reports a wrong unit.** The mapper does not judge units: a recognised
Observation in any unit is read (:func:`read_observation` returns it with the unit as
sent, e.g. CRP in ``mmol/L``). The schema judges: building the :class:`Assessment`
(:func:`observation_to_assessment`, :meth:`ObservationReading.to_assessment`) raises a
pydantic ``ValidationError`` naming the accepted units, and
:meth:`ObservationReading.problem` returns that same message without raising (for the
derivation, which sets such values aside and reports why, contract §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Optional

from mappers import codes, ids
from mappers._fhir import (
    MappingError,
    concept,
    codings,
    extension,
    expect_type,
    fhir_datetime,
    identifier_value,
    parse_datetime,
    quantity,
    split_key,
    to_decimal,
)
from schemas.trial import Assessment, Measure, unit_problem

__all__ = [
    "ObservationReading",
    "assessment_to_observation",
    "measure_of",
    "observation_to_assessment",
    "read_observation",
]

_READ_STATUSES = frozenset({"final", "amended", "corrected", "entered-in-error"})


def assessment_to_observation(assessment: Assessment) -> dict[str, Any]:
    """The Observation of ``assessment`` (study, subject and visit must be known)."""
    s, p, v = assessment.study_code, assessment.subject_code, assessment.visit_name
    if s is None or p is None or v is None:
        raise MappingError("an assessment needs study_code, subject_code and visit_name to be written as FHIR")
    measure = assessment.measure.value
    system, measure_codes = codes.MEASURE_CODES[measure]
    display = codes.MEASURE_TEXT[measure] if system == codes.RA else None
    return {
        "resourceType": "Observation",
        "id": ids.observation_id(s, p, v, measure),
        "extension": [
            {"url": codes.EXT_STUDY_VISIT, "valueString": v},
            {
                "url": codes.EXT_WORKFLOW_RESEARCH_STUDY,
                "valueReference": ids.reference("ResearchStudy", ids.study_id(s)),
            },
        ],
        "identifier": [{"system": codes.ASSESSMENT_IDENTIFIER_SYSTEM, "value": f"{s}|{p}|{v}|{measure}"}],
        "status": assessment.status,
        "category": [concept(codes.OBSERVATION_CATEGORY, codes.MEASURE_CATEGORY[measure])],
        "code": concept(system, measure_codes[0], display, text=codes.MEASURE_TEXT[measure]),
        "subject": ids.reference("Patient", ids.patient_id(s, p)),
        "effectiveDateTime": fhir_datetime(assessment.effective),
        "valueQuantity": quantity(assessment.value, assessment.unit),
    }


def measure_of(observation: dict[str, Any]) -> Optional[Measure]:
    """The measure an Observation's ``code.coding`` names (``None`` when none).

    Raises :class:`MappingError` when its codings name two different measures.
    """
    found = {
        codes.CODING_TO_MEASURE[key]
        for c in codings(observation.get("code"))
        if (key := (c.get("system"), c.get("code"))) in codes.CODING_TO_MEASURE
    }
    if len(found) > 1:
        raise MappingError(f"Observation.code names several measures: {', '.join(sorted(found))}")
    return Measure(found.pop()) if found else None


@dataclass(frozen=True)
class ObservationReading:
    """What an Observation says about a measure, before the schema judges the unit."""

    measure: Measure
    value: Decimal
    unit: Optional[str]
    effective: date
    status: str
    visit_name: Optional[str] = None
    study_code: Optional[str] = None
    subject_code: Optional[str] = None

    def problem(self) -> Optional[str]:
        """Why the schema would refuse this value (unit not accepted, off-scale), or ``None``."""
        return unit_problem(self.measure, self.unit, self.value)

    def to_assessment(self) -> Assessment:
        """The validated Assessment (pydantic ``ValidationError`` when :meth:`problem`)."""
        return Assessment(
            study_code=self.study_code,
            subject_code=self.subject_code,
            visit_name=self.visit_name,
            effective=self.effective,
            measure=self.measure,
            value=self.value,
            unit=self.unit,
            status=self.status,
        )


def _value_and_unit(obs: dict[str, Any]) -> tuple[Decimal, Optional[str]]:
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        if not isinstance(q, dict) or "value" not in q:
            raise MappingError("Observation.valueQuantity has no value")
        if q.get("comparator"):
            raise MappingError(f"Observation.valueQuantity has a comparator ({q['comparator']}); an exact value is needed")
        value = to_decimal(q["value"], "Observation.valueQuantity.value")
        system, code, unit = q.get("system"), q.get("code"), q.get("unit")
        if code is not None and system in (None, codes.UCUM):
            return value, code
        return value, unit
    if "valueInteger" in obs:
        value = obs["valueInteger"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise MappingError("Observation.valueInteger is not an integer")
        return Decimal(value), None
    raise MappingError("Observation has no valueQuantity or valueInteger")


def _effective(obs: dict[str, Any]) -> date:
    if "effectiveDateTime" in obs:
        return parse_datetime(obs["effectiveDateTime"], "Observation.effectiveDateTime")
    if "effectivePeriod" in obs:
        return parse_datetime((obs["effectivePeriod"] or {}).get("start"), "Observation.effectivePeriod.start")
    if "effectiveInstant" in obs:
        return parse_datetime(obs["effectiveInstant"], "Observation.effectiveInstant")
    raise MappingError("Observation has no effectiveDateTime, effectivePeriod.start or effectiveInstant")


def read_observation(
    observation: dict[str, Any],
    *,
    study_code: Optional[str] = None,
    subject_code: Optional[str] = None,
) -> Optional[ObservationReading]:
    """Read a (hospital or service) Observation without judging its unit.

    ``None`` when the code names no contract measure or the status is one no derivation
    uses; :class:`MappingError` when a recognised Observation has no usable value or
    date. ``study_code``/``subject_code`` fill in what the Observation's business-key
    identifier (if any) does not say.
    """
    obs = expect_type(observation, "Observation")
    measure = measure_of(obs)
    if measure is None or obs.get("status") not in _READ_STATUSES:
        return None
    value, unit = _value_and_unit(obs)
    visit = extension(obs, codes.EXT_STUDY_VISIT)
    visit_name = visit.get("valueString") if visit is not None else None
    key = identifier_value(obs.get("identifier"), codes.ASSESSMENT_IDENTIFIER_SYSTEM)
    if key is not None:
        s, p, v, m = split_key(key, 4, "Observation")
        if m != measure.value:
            raise MappingError(f"Observation identifier names measure {m} but its code is {measure.value}")
        study_code, subject_code, visit_name = s, p, visit_name or v
    return ObservationReading(
        measure=measure,
        value=value,
        unit=unit,
        effective=_effective(obs),
        status=obs["status"],
        visit_name=visit_name,
        study_code=study_code,
        subject_code=subject_code,
    )


def observation_to_assessment(
    observation: dict[str, Any],
    *,
    study_code: Optional[str] = None,
    subject_code: Optional[str] = None,
) -> Optional[Assessment]:
    """The Assessment of an Observation (``None`` for unrecognised codes / unused statuses).

    A unit the contract does not accept for the measure raises pydantic's
    ``ValidationError`` from the schema (message names the accepted units); see the
    module docstring.
    """
    reading = read_observation(observation, study_code=study_code, subject_code=subject_code)
    return None if reading is None else reading.to_assessment()
