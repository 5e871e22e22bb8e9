"""Trial entities (schemas.trial) ↔ FHIR R4 (mappers): round trips, validity, ids, input recognition."""

from __future__ import annotations

import copy
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mappers import codes, ids
from mappers._fhir import MappingError
from mappers.adverse_event import adverse_event_to_fhir, fhir_to_adverse_event
from mappers.assessment import (
    assessment_to_observation,
    observation_to_assessment,
    read_observation,
)
from mappers.infusion import infusion_to_medication_administration, medication_administration_to_infusion
from mappers.study import (
    group_to_cohort,
    medication_to_product,
    plan_definition_to_visits,
    research_study_to_study,
    study_to_fhir,
    study_to_plan_definition,
    study_to_research_study,
)
from mappers.subject import patient_and_research_subject_to_subject, subject_to_fhir
from schemas.trial import (
    ACCEPTED_UNITS,
    DAS28_CRP_CUT_POINTS_ALTERNATIVE,
    AdverseEvent,
    Arm,
    Assessment,
    EndpointSettings,
    Infusion,
    Measure,
    Product,
    Study,
    StudyIdentifier,
    Subject,
    Visit,
)
from service.fhir.jsonio import dumps, loads
from service.fhir.validation import validation_issues

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
TEHRAN = timezone(timedelta(hours=3, minutes=30))
STUDY = "BM-cMSC-RA"


def wire(resource: dict[str, Any]) -> dict[str, Any]:
    """Serialise as the service does and parse back; assert the resource is valid R4."""
    assert validation_issues(resource) == []
    raw = dumps(resource)
    parsed = loads(raw)
    assert validation_issues(parsed, raw) == []
    assert FHIR_ID.match(parsed["id"]), parsed["id"]
    return parsed


def make_study(**overrides: Any) -> Study:
    values: dict[str, Any] = {
        "code": STUDY,
        "identifiers": [StudyIdentifier(value="IRCT20080728001031N29")],
        "title": "Allogeneic bone-marrow-derived clonal MSCs in refractory rheumatoid arthritis",
        "phase": "phase-1",
        "arms": [Arm(name="BM-cMSC", type="experimental", description="IV BM-cMSC at weeks 0, 4, 8")],
    }
    values.update(overrides)
    return Study(**values)


def make_subject(code: str = "S01", **overrides: Any) -> Subject:
    values: dict[str, Any] = {
        "study_code": STUDY,
        "subject_code": code,
        "sex": "female",
        "birth_year": 1971,
        "arm": "BM-cMSC",
        "consent_date": date(2024, 1, 10),
    }
    values.update(overrides)
    return Subject(**values)


def hospital_observation(code: str, value: Any, unit: str | None, system: str = codes.LOINC, **extra: Any) -> dict[str, Any]:
    """A plain hospital-feed Observation: no trialfhir identifiers or extensions."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "lab-123",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code, "display": "whatever the lab calls it"}]},
        "subject": {"reference": "Patient/mrn-889"},
        "effectiveDateTime": "2024-03-05T08:15:00+03:30",
    }
    if unit is None:
        obs["valueQuantity"] = {"value": value}
    else:
        obs["valueQuantity"] = {"value": value, "unit": unit, "system": codes.UCUM, "code": unit}
    obs.update(extra)
    return obs


# --- study --------------------------------------------------------------------------


def test_study_round_trip_default_schedule_and_settings():
    study = make_study()
    resources = study_to_fhir(study, [make_subject("S01"), make_subject("S02")])
    parsed = [wire(r) for r in resources]
    assert [r["resourceType"] for r in parsed] == ["ResearchStudy", "PlanDefinition", "Group", "Medication"]
    assert research_study_to_study(parsed[0], parsed[1]) == study
    assert [v.name for v in study.schedule] == ["BL", "W4", "W8", "W12", "W16", "W24"]


def test_study_round_trip_custom_schedule_and_settings():
    study = make_study(
        code="ra.pilot-2",
        status="completed",
        phase="phase-1-phase-2",
        condition={"system": codes.SNOMED, "code": "69896004"},
        arms=[Arm(name="A"), Arm(name="Placebo", type="placebo-comparator")],
        identifiers=[
            StudyIdentifier(value="IRCT20080728001031N29"),
            StudyIdentifier(system=codes.NCT_IDENTIFIER_SYSTEM, value="NCT00000000"),
        ],
        schedule=[
            Visit(name="W4", target_day=28, window_low=-3, window_high=5),
            Visit(name="SCR", target_day=-14, window_low=-14, window_high=7),
            Visit(name="BL", target_day=0, window_low=-6, window_high=0),
        ],
        settings=EndpointSettings(
            acr_acute_phase_reactant="esr",
            das28_crp_cut_points=DAS28_CRP_CUT_POINTS_ALTERNATIVE,
            haq_di_scoring="unadjusted",
            boolean_remission=[],
        ),
    )
    assert [v.name for v in study.schedule] == ["SCR", "BL", "W4"]  # kept sorted by target day
    rs, pd, group, med = (wire(r) for r in study_to_fhir(study))
    back = research_study_to_study(rs, pd)
    assert back == study
    assert back.settings.das28_crp_cut_points.remission == Decimal("2.4")
    assert back.settings.boolean_remission == []


def test_research_study_contents():
    rs = study_to_research_study(make_study())
    assert rs["id"] == "bm-cmsc-ra"
    assert rs["identifier"][0] == {"use": "official", "system": codes.STUDY_IDENTIFIER_SYSTEM, "value": STUDY}
    assert {"system": codes.IRCT_IDENTIFIER_SYSTEM, "value": "IRCT20080728001031N29"} in rs["identifier"]
    assert rs["protocol"] == [{"reference": "PlanDefinition/bm-cmsc-ra-soa"}]
    assert rs["enrollment"] == [{"reference": "Group/bm-cmsc-ra-enrolled"}]
    assert rs["focus"][0]["coding"][0] == {"system": codes.RA, "code": "bm-cmsc"}
    assert rs["condition"][0]["coding"][0]["code"] == "69896004"
    assert rs["phase"]["coding"][0]["system"] == codes.RESEARCH_STUDY_PHASE
    settings_ext = rs["extension"][0]
    assert settings_ext["url"] == codes.EXT_STUDY_ENDPOINT_SETTINGS
    assert {e["url"] for e in settings_ext["extension"]} == {
        "acrAcutePhaseReactant", "das28CrpCutPoints", "haqDiScoring", "booleanRemission2011", "booleanRemission2022",
    }


def test_settings_defaults_apply_when_absent():
    study = make_study(settings=EndpointSettings(acr_acute_phase_reactant="esr", haq_di_scoring="unadjusted"))
    rs = study_to_research_study(study)
    bare = copy.deepcopy(rs)
    del bare["extension"]
    assert research_study_to_study(bare).settings == EndpointSettings()
    partial = copy.deepcopy(rs)
    partial["extension"][0]["extension"] = [e for e in partial["extension"][0]["extension"] if e["url"] == "acrAcutePhaseReactant"]
    assert research_study_to_study(partial).settings == EndpointSettings(acr_acute_phase_reactant="esr")


def test_plan_definition_soa_representation():
    pd = study_to_plan_definition(make_study())
    actions = {a["id"]: a for a in pd["action"]}
    assert actions["day-0"]["title"] == "Day 0" and "relatedAction" not in actions["day-0"]
    w4 = actions["visit-W4"]
    assert w4["title"] == "W4"
    related = w4["relatedAction"][0]
    assert related["actionId"] == "day-0" and related["relationship"] == "after-start"
    assert related["offsetDuration"]["value"] == 28 and related["offsetDuration"]["code"] == "d"
    window = related["extension"][0]
    assert window["url"] == codes.EXT_VULCAN_OFFSET_RANGE
    assert (window["valueRange"]["low"]["value"], window["valueRange"]["high"]["value"]) == (21, 35)
    bl = actions["visit-BL"]["relatedAction"][0]["extension"][0]["valueRange"]
    assert (bl["low"]["value"], bl["high"]["value"]) == (-28, 0)


def test_plan_definition_reader_accepts_other_vulcan_forms():
    def rel(target: str, relationship: str, offset: dict[str, Any], low=None, high=None, unit="d") -> dict[str, Any]:
        out: dict[str, Any] = {"actionId": target, "relationship": relationship, "offsetDuration": offset}
        if low is not None:
            out["extension"] = [{
                "url": codes.EXT_VULCAN_OFFSET_RANGE,
                "valueRange": {"low": {"value": low, "system": codes.UCUM, "code": unit},
                               "high": {"value": high, "system": codes.UCUM, "code": unit}},
            }]
        return out

    d = lambda n: {"value": n, "system": codes.UCUM, "code": "d"}  # noqa: E731
    pd = {
        "resourceType": "PlanDefinition",
        "status": "active",
        "action": [
            {"title": "SCR", "relatedAction": [rel("Index", "before", d(13), 12, 15)]},
            {"id": "Index", "title": "BL"},  # a titled index event is a visit on day 0
            {"id": "V4", "title": "W4", "relatedAction": [rel("Index", "after", {"value": 4, "system": codes.UCUM, "code": "wk"}, 3, 5, unit="wk")]},
            {"title": "W6", "relatedAction": [rel("V4", "after", d(14))]},  # chained, no window
            {"title": "Not-a-visit"},  # neither timed nor an index: ignored
        ],
    }
    assert validation_issues(pd) == []
    visits = plan_definition_to_visits(pd)
    assert visits == [
        Visit(name="SCR", target_day=-13, window_low=-2, window_high=1),
        Visit(name="BL", target_day=0, window_low=0, window_high=0),
        Visit(name="W4", target_day=28, window_low=-7, window_high=7),
        Visit(name="W6", target_day=42, window_low=0, window_high=0),
    ]


def test_plan_definition_reader_rejects_unusable_timing():
    pd = study_to_plan_definition(make_study())
    bad = copy.deepcopy(pd)
    bad["action"][2]["relatedAction"][0]["offsetDuration"] = {"value": 1, "system": codes.UCUM, "code": "mo"}
    with pytest.raises(MappingError, match="days"):
        plan_definition_to_visits(bad)
    bad = copy.deepcopy(pd)
    bad["action"][2]["relatedAction"][0]["actionId"] = "nowhere"
    with pytest.raises(MappingError, match="unknown action"):
        plan_definition_to_visits(bad)


def test_research_study_without_protocol_gets_default_schedule():
    study = make_study(schedule=[Visit(name="BL", target_day=0, window_low=-7)])
    back = research_study_to_study(study_to_research_study(study))
    assert back.schedule == make_study().schedule


def test_group_and_medication():
    study = make_study()
    subjects = [make_subject("S01"), make_subject("s-02")]
    group = wire(study_to_fhir(study, subjects).group)
    assert group["type"] == "person" and group["actual"] is True and group["quantity"] == 2
    assert [m["entity"]["reference"] for m in group["member"]] == ["Patient/bm-cmsc-ra-s01", "Patient/bm-cmsc-ra-s-02"]
    assert group_to_cohort(group) == (STUDY, ["S01", "s-02"])
    empty = wire(study_to_fhir(study).group)
    assert "member" not in empty and group_to_cohort(empty) == (STUDY, [])
    with pytest.raises(MappingError):
        study_to_fhir(study, [make_subject(study_code="OTHER")])

    med = wire(study_to_fhir(study).medication)
    assert med["id"] == "bm-cmsc"
    assert med["code"]["coding"][0]["system"] == codes.RA and med["code"]["coding"][0]["code"] == "bm-cmsc"
    assert medication_to_product(med) == Product()


def test_study_schema_rules():
    with pytest.raises(ValidationError, match="overlap"):
        make_study(schedule=[Visit(name="BL", target_day=0, window_low=-28), Visit(name="W1", target_day=7, window_low=-7, window_high=7)])
    with pytest.raises(ValidationError, match="BL"):
        make_study(schedule=[Visit(name="W4", target_day=28)])
    with pytest.raises(ValidationError, match="reserved"):
        StudyIdentifier(system=codes.STUDY_IDENTIFIER_SYSTEM, value="x")
    with pytest.raises(ValidationError):
        make_study(extra_field=1)  # extra="forbid"
    with pytest.raises(ValidationError):
        make_study(code="has space")
    with pytest.raises(ValidationError):
        make_study(phase="phase-5")
    with pytest.raises(ValidationError, match="increasing"):
        EndpointSettings(das28_crp_cut_points={"remission": "3.2", "low": "2.6", "moderate": "5.1"})


# --- ids ----------------------------------------------------------------------------


def test_ids_are_deterministic_and_valid():
    study = make_study()
    subjects = [make_subject("S01")]
    first = [r["id"] for r in study_to_fhir(study, subjects)]
    second = [r["id"] for r in study_to_fhir(make_study(), [make_subject("S01")])]
    assert first == second == ["bm-cmsc-ra", "bm-cmsc-ra-soa", "bm-cmsc-ra-enrolled", "bm-cmsc"]
    patient, research_subject = subject_to_fhir(subjects[0])
    assert patient["id"] == research_subject["id"] == "bm-cmsc-ra-s01"
    assert ids.observation_id(STUDY, "S01", "W16", "haq_di") == "bm-cmsc-ra-s01-w16-haq-di"

    long_parts = ("A" * 40, "B" * 40, "W24", "tnf_alpha")
    long_id = ids.make_id(*long_parts)
    assert FHIR_ID.match(long_id) and len(long_id) == 64
    assert long_id == ids.make_id(*long_parts)
    assert long_id != ids.make_id("A" * 40, "B" * 40, "W24", "il10")


# --- subjects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        make_subject(),
        make_subject("S-07", sex="male", birth_year=None, arm=None, status="withdrawn"),
    ],
)
def test_subject_round_trip(subject: Subject):
    patient, research_subject = (wire(r) for r in subject_to_fhir(subject))
    assert patient_and_research_subject_to_subject(patient, research_subject) == subject
    assert patient["identifier"][0]["system"] == f"http://trialfhir.org/fhir/sid/study/{STUDY}/subject"
    assert patient["identifier"][0]["value"] == subject.subject_code
    assert "name" not in patient
    if subject.birth_year:
        assert patient["birthDate"] == str(subject.birth_year)
    assert research_subject["period"] == {"start": subject.consent_date.isoformat()}
    assert research_subject["study"] == {"reference": "ResearchStudy/bm-cmsc-ra"}
    assert research_subject["individual"] == {"reference": f"Patient/{patient['id']}"}


# --- infusions ----------------------------------------------------------------------


def test_infusion_round_trip():
    infusion = Infusion(
        study_code=STUDY,
        subject_code="S01",
        infusion_code="W0",
        start=datetime(2024, 2, 1, 9, 0, tzinfo=TEHRAN),
        end=datetime(2024, 2, 1, 9, 45, 30, tzinfo=TEHRAN),
        dose_value=Decimal("1.00"),
        lot="LOT-2024-017",
    )
    ma = wire(infusion_to_medication_administration(infusion))
    assert ma["id"] == "bm-cmsc-ra-s01-w0"
    assert ma["status"] == "completed"
    assert ma["medicationReference"] == {"reference": "Medication/bm-cmsc"}
    assert ma["dosage"]["route"]["coding"][0]["code"] == "47625008"
    assert ma["dosage"]["dose"]["code"] == "10*6/kg" and ma["dosage"]["dose"]["system"] == codes.UCUM
    assert {"url": codes.EXT_LOT_NUMBER, "valueString": "LOT-2024-017"} in ma["extension"]
    back = medication_administration_to_infusion(ma)
    assert back == infusion and str(back.dose_value) == "1.00"

    minimal = Infusion(study_code=STUDY, subject_code="S02", infusion_code="W4",
                       start=datetime(2024, 3, 1, 6, 0, tzinfo=timezone.utc), dose_value=Decimal(2), status="stopped")
    assert medication_administration_to_infusion(wire(infusion_to_medication_administration(minimal))) == minimal


def test_infusion_schema_rules():
    base = dict(study_code=STUDY, subject_code="S01", infusion_code="W0", dose_value=Decimal(1))
    with pytest.raises(ValidationError, match="before its start"):
        Infusion(**base, start=datetime(2024, 2, 1, 10, tzinfo=TEHRAN), end=datetime(2024, 2, 1, 9, tzinfo=TEHRAN))
    with pytest.raises(ValidationError):
        Infusion(**base, start=datetime(2024, 2, 1, 10))  # no time zone
    with pytest.raises(ValidationError):
        Infusion(**{**base, "dose_value": Decimal(0)}, start=datetime(2024, 2, 1, 10, tzinfo=TEHRAN))


# --- assessments --------------------------------------------------------------------


def _value_for(measure: Measure, unit: str | None) -> Decimal:
    if measure in (Measure.TJC28, Measure.SJC28):
        return Decimal(4)
    if measure is Measure.HAQ_DI:
        return Decimal("1.375")
    return Decimal("7.50")


@pytest.mark.parametrize(
    ("measure", "unit"),
    [(m, u) for m, units in ACCEPTED_UNITS.items() for u in units if u is not None],
)
def test_assessment_round_trip_every_measure_and_unit(measure: Measure, unit: str):
    assessment = Assessment(
        study_code=STUDY, subject_code="S01", visit_name="W16", effective=date(2024, 5, 22),
        measure=measure, value=_value_for(measure, unit), unit=unit,
    )
    obs = wire(assessment_to_observation(assessment))
    back = observation_to_assessment(obs)
    assert back == assessment and str(back.value) == str(assessment.value)
    system, measure_codes = codes.MEASURE_CODES[measure.value]
    assert obs["code"]["coding"][0] == {"system": system, "code": measure_codes[0], **({"display": codes.MEASURE_TEXT[measure.value]} if system == codes.RA else {})}
    assert obs["valueQuantity"]["system"] == codes.UCUM and obs["valueQuantity"]["code"] == unit
    assert obs["identifier"] == [{"system": codes.ASSESSMENT_IDENTIFIER_SYSTEM, "value": f"{STUDY}|S01|W16|{measure.value}"}]
    assert {"url": codes.EXT_STUDY_VISIT, "valueString": "W16"} in obs["extension"]
    assert obs["subject"] == {"reference": "Patient/bm-cmsc-ra-s01"}


def test_assessment_observation_shape_and_statuses():
    tjc = Assessment(study_code=STUDY, subject_code="S01", visit_name="BL", effective=datetime(2024, 1, 31, 9, 5, tzinfo=TEHRAN),
                     measure="tjc28", value=Decimal(12), unit=None, status="amended")
    assert tjc.unit == "{#}"  # a count without unit is stored as {#}
    obs = wire(assessment_to_observation(tjc))
    assert obs["valueQuantity"] == {"value": 12, "unit": "{#}", "system": codes.UCUM, "code": "{#}"}
    assert obs["category"][0]["coding"][0]["code"] == "exam"
    assert obs["effectiveDateTime"] == "2024-01-31T09:05:00+03:30"
    assert observation_to_assessment(obs) == tjc

    for status in ("corrected", "entered-in-error"):
        a = tjc.model_copy(update={"status": status})
        assert observation_to_assessment(wire(assessment_to_observation(a))).status == status
    for ignored in ("registered", "preliminary", "cancelled", "unknown"):
        assert observation_to_assessment({**obs, "status": ignored}) is None

    with pytest.raises(MappingError, match="visit_name"):
        assessment_to_observation(tjc.model_copy(update={"visit_name": None}))
    assert wire(assessment_to_observation(tjc.model_copy(update={"measure": Measure.PTGA, "unit": "mm", "value": Decimal(40)})))["category"][0]["coding"][0]["code"] == "survey"


@pytest.mark.parametrize(
    ("code", "value", "unit", "measure"),
    [
        ("1988-5", Decimal("1.2"), "mg/dL", Measure.CRP),
        ("30522-7", Decimal("3.40"), "mg/L", Measure.CRP),  # hs-CRP alternate
        ("4537-7", 28, "mm/h", Measure.ESR),
        ("30341-2", 31, "mm/h", Measure.ESR),  # method-unspecified alternate
        ("75844-1", Decimal("6.5"), "{score}", Measure.PTGA),  # alternate PtGA code
        ("33935-8", Decimal("250"), "U/mL", Measure.ANTI_CCP),
        ("11573-3", Decimal("45.0"), "[IU]/mL", Measure.RF),
        ("26848-2", Decimal("12.25"), "pg/mL", Measure.IL10),
    ],
)
def test_hospital_loinc_observation_maps_to_assessment(code, value, unit, measure):
    obs = loads(dumps(hospital_observation(code, value, unit)))
    assert validation_issues(obs) == []
    a = observation_to_assessment(obs, study_code=STUDY, subject_code="S03")
    assert a is not None
    assert (a.measure, a.value, a.unit, a.status) == (measure, Decimal(str(value)), unit, "final")
    assert str(a.value) == str(value)
    assert a.effective == datetime(2024, 3, 5, 8, 15, tzinfo=TEHRAN)
    assert (a.study_code, a.subject_code, a.visit_name) == (STUDY, "S03", None)


def test_hospital_observation_variants():
    # valueInteger joint count, date-only effectivePeriod, local IL-17A code
    obs = hospital_observation("88980-8", 0, None)
    del obs["valueQuantity"], obs["effectiveDateTime"]
    obs.update(valueInteger=3, effectivePeriod={"start": "2024-03-05", "end": "2024-03-05"})
    assert validation_issues(obs) == []
    a = observation_to_assessment(obs)
    assert (a.measure, a.value, a.unit, a.effective) == (Measure.SJC28, Decimal(3), "{#}", date(2024, 3, 5))

    unitless = observation_to_assessment(hospital_observation("88981-6", 5, None))
    assert unitless.unit == "{#}" and unitless.value == 5

    il17 = observation_to_assessment(hospital_observation("il17a", Decimal("8.1"), "pg/mL", system=codes.RA))
    assert il17.measure is Measure.IL17A

    # several codings: the recognised one counts, whatever comes first
    multi = hospital_observation("1988-5", Decimal("5"), "mg/L")
    multi["code"]["coding"].insert(0, {"system": "http://acme.org/labcodes", "code": "CRP"})
    assert observation_to_assessment(multi).measure is Measure.CRP


def test_observation_recognised_by_code_never_display():
    display_only = hospital_observation("1988-5", Decimal("5"), "mg/L")
    display_only["code"] = {"coding": [{"system": "http://acme.org/labcodes", "code": "X1", "display": "C reactive protein"}], "text": "CRP"}
    assert observation_to_assessment(display_only) is None
    assert observation_to_assessment(hospital_observation("2345-7", Decimal("90"), "mg/dL")) is None  # glucose
    assert observation_to_assessment(hospital_observation("1988-5", Decimal("5"), "mg/L", system="http://snomed.info/sct")) is None
    conflicting = hospital_observation("1988-5", Decimal("5"), "mg/L")
    conflicting["code"]["coding"].append({"system": codes.LOINC, "code": "4537-7"})
    with pytest.raises(MappingError, match="several measures"):
        observation_to_assessment(conflicting)


def test_recognised_observation_without_usable_value_or_date():
    no_value = hospital_observation("1988-5", Decimal("5"), "mg/L")
    del no_value["valueQuantity"]
    no_value["dataAbsentReason"] = {"text": "haemolysed"}
    with pytest.raises(MappingError, match="no valueQuantity"):
        observation_to_assessment(no_value)
    partial = hospital_observation("1988-5", Decimal("5"), "mg/L", effectiveDateTime="2024-03")
    with pytest.raises(MappingError, match="partial"):
        observation_to_assessment(partial)
    censored = hospital_observation("1988-5", Decimal("5"), "mg/L")
    censored["valueQuantity"]["comparator"] = "<"
    with pytest.raises(MappingError, match="comparator"):
        observation_to_assessment(censored)


def test_wrong_unit_is_read_by_the_mapper_and_refused_by_the_schema():
    """Decision: the mapper reads any unit as sent; the schema (Assessment) reports it."""
    obs = hospital_observation("1988-5", Decimal("40"), "mmol/L")
    reading = read_observation(obs)
    assert reading is not None
    assert (reading.measure, reading.value, reading.unit) == (Measure.CRP, Decimal("40"), "mmol/L")
    assert "accepted units: mg/L, mg/dL or any UCUM mass/volume unit" in reading.problem()
    with pytest.raises(ValidationError, match=r"'mmol/L' is not an accepted unit for crp; accepted units: mg/L, mg/dL"):
        observation_to_assessment(obs)
    with pytest.raises(ValidationError, match=r"accepted units: mm/h"):
        Assessment(effective=date(2024, 1, 1), measure="esr", value=Decimal(20), unit="mm/min")
    with pytest.raises(ValidationError, match="accepted units"):
        Assessment(effective=date(2024, 1, 1), measure="pain", value=Decimal(20), unit=None)


def test_units_that_convert_are_accepted():
    # CRP and IL-10: any UCUM mass/volume unit
    for unit in ("g/L", "ug/mL", "mg/m3"):
        assert Assessment(effective=date(2024, 1, 1), measure="crp", value=Decimal("0.5"), unit=unit).unit == unit
    assert Assessment(effective=date(2024, 1, 1), measure="il10", value=Decimal("5"), unit="ng/L").unit == "ng/L"
    # TNF-alpha: only pg/mL (contract §2)
    with pytest.raises(ValidationError, match="accepted units: pg/mL"):
        Assessment(effective=date(2024, 1, 1), measure="tnf_alpha", value=Decimal("5"), unit="ng/L")
    # text unit without a UCUM code is used when there is no code
    obs = hospital_observation("4537-7", 12, "mm/h")
    obs["valueQuantity"] = {"value": 12, "unit": "mm/h"}
    assert observation_to_assessment(obs).unit == "mm/h"


def test_values_off_the_scale_are_refused():
    def a(measure: str, value: str, unit: str | None) -> Assessment:
        return Assessment(effective=date(2024, 1, 1), measure=measure, value=Decimal(value), unit=unit)

    assert a("ptga", "75", "mm").value == 75
    for measure, value, unit in [("tjc28", "29", "{#}"), ("sjc28", "2.5", "1"), ("ptga", "12", "{score}"),
                                 ("pain", "11", "cm"), ("haq_di", "3.125", "{score}"), ("crp", "-1", "mg/L"),
                                 ("treg_pct", "101", "%")]:
        with pytest.raises(ValidationError):
            a(measure, value, unit)
    with pytest.raises(ValidationError):
        Assessment(effective=date(2024, 1, 1), measure="crp", value=Decimal("NaN"), unit="mg/L")
    with pytest.raises(ValidationError):
        Assessment(effective=datetime(2024, 1, 1, 9, 0), measure="crp", value=Decimal(1), unit="mg/L")  # naive


_SCALES = [
    (Measure.CRP, "mg/L", 1000),
    (Measure.CRP, "mg/dL", 100),
    (Measure.ESR, "mm/h", 150),
    (Measure.PTGA, "{score}", 10),
    (Measure.PAIN, "mm", 100),
    (Measure.HAQ_DI, "{score}", 3),
    (Measure.IL10, "pg/mL", 10000),
    (Measure.TH17_PCT, "%", 100),
]


@st.composite
def assessments(draw) -> Assessment:
    measure, unit, top = draw(st.sampled_from(_SCALES))
    places = draw(st.integers(min_value=0, max_value=6))
    value = draw(st.decimals(min_value=0, max_value=top, places=places, allow_nan=False, allow_infinity=False))
    effective = draw(st.one_of(
        st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                     timezones=st.sampled_from([timezone.utc, TEHRAN, timezone(timedelta(hours=-5))])),
    ))
    status = draw(st.sampled_from(["final", "amended", "corrected", "entered-in-error"]))
    return Assessment(study_code=STUDY, subject_code="S05", visit_name=draw(st.sampled_from(["BL", "W4", "W24"])),
                      effective=effective, measure=measure, value=value, unit=unit, status=status)


@settings(max_examples=150, deadline=None)
@given(assessments())
def test_assessment_round_trip_keeps_decimal_precision(assessment: Assessment):
    obs = assessment_to_observation(assessment)
    raw = dumps(obs)
    parsed = loads(raw)
    assert validation_issues(parsed, raw) == []
    back = observation_to_assessment(parsed)
    assert back == assessment
    assert str(back.value) == str(assessment.value)  # 1.50 stays 1.50
    assert back.value.as_tuple() == assessment.value.as_tuple()


def test_decimal_precision_examples():
    for text in ("1.50", "0.0", "100", "2.000001", "0.10"):
        a = Assessment(study_code=STUDY, subject_code="S01", visit_name="W4", effective=date(2024, 1, 1),
                       measure="crp", value=Decimal(text), unit="mg/L")
        raw = dumps(assessment_to_observation(a))
        assert f'"value":{text},' in raw.decode()
        assert str(observation_to_assessment(loads(raw)).value) == text


# --- adverse events -----------------------------------------------------------------


NON_SERIOUS_AE = AdverseEvent(
    study_code=STUDY, subject_code="S01", ae_code="AE1", term="Headache", meddra_code="10019211",
    onset=date(2024, 2, 1), end=date(2024, 2, 2), severity="mild", grade=1, relatedness="Possible",
    outcome="resolved", action_taken="dose-not-changed", infusion_code="W0",
)
SERIOUS_AE = AdverseEvent(
    study_code=STUDY, subject_code="S02", ae_code="AE7", term="Pneumonia",
    onset=datetime(2024, 3, 2, 22, 10, tzinfo=TEHRAN), end=datetime(2024, 3, 20, 8, 0, tzinfo=TEHRAN),
    severity="severe", grade=3, serious=True, seriousness_criteria=["life-threatening", "hospitalization"],
    relatedness="Unlikely", outcome="resolvedWithSequelae", action_taken="drug-withdrawn",
)


@pytest.mark.parametrize(
    "ae",
    [
        NON_SERIOUS_AE,
        SERIOUS_AE,
        AdverseEvent(study_code=STUDY, subject_code="S03", ae_code="AE2", term="Fatigue",
                     onset=date(2024, 4, 1), severity="moderate"),
        AdverseEvent(study_code=STUDY, subject_code="S04", ae_code="AE3", term="Death", onset=date(2024, 4, 1),
                     severity="severe", grade=5, serious=True, seriousness_criteria=["results-in-death"], outcome="fatal",
                     relatedness="Unassessable-Unclassifiable"),
        AdverseEvent(study_code=STUDY, subject_code="S04", ae_code="AE4", term="Fever", onset=date(2024, 4, 1),
                     severity="mild", grade=2, infusion_code="W8"),
        AdverseEvent(study_code=STUDY, subject_code="S04", ae_code="AE5", term="Nausea", onset=date(2024, 4, 1),
                     severity="mild", grade=4, relatedness="Certain"),
    ],
)
def test_adverse_event_round_trip(ae: AdverseEvent):
    resource = wire(adverse_event_to_fhir(ae))
    assert fhir_to_adverse_event(resource) == ae


def test_adverse_event_contents():
    r = adverse_event_to_fhir(NON_SERIOUS_AE)
    assert r["id"] == "bm-cmsc-ra-s01-ae1" and r["actuality"] == "actual"
    assert r["event"] == {"coding": [{"system": codes.MEDDRA, "code": "10019211", "display": "Headache"}], "text": "Headache"}
    assert r["seriousness"]["coding"][0] == {"system": codes.AE_SERIOUSNESS, "code": "Non-serious", "display": "Non-serious"}
    assert r["severity"]["coding"][0]["code"] == "mild"
    assert r["outcome"]["coding"][0]["code"] == "resolved"
    suspect = r["suspectEntity"][0]
    assert suspect["instance"]["reference"] == "MedicationAdministration/bm-cmsc-ra-s01-w0"
    assert suspect["causality"][0]["assessment"]["coding"][0] == {
        "system": codes.AE_CAUSALITY_ASSESS, "code": "Possible", "display": "Possible"}
    assert r["study"] == [{"reference": "ResearchStudy/bm-cmsc-ra"}]
    exts = {e["url"]: e for e in r["extension"]}
    assert exts[codes.EXT_AE_GRADE]["valueCodeableConcept"]["coding"][0]["code"] == "C41338"
    assert exts[codes.EXT_AE_RESOLVE_DATE]["valueDateTime"] == "2024-02-02"
    assert codes.EXT_AE_SERIOUSNESS_CRITERIA not in exts

    s = adverse_event_to_fhir(SERIOUS_AE)
    assert s["seriousness"]["coding"][0]["code"] == "Serious"
    criteria = [e for e in s["extension"] if e["url"] == codes.EXT_AE_SERIOUSNESS_CRITERIA]
    assert [c["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] for c in criteria] == ["33", "21"]
    assert all(c["extension"][1] == {"url": "criterionPresent", "valueBoolean": True} for c in criteria)
    assert s["suspectEntity"][0]["instance"] == {"reference": "Medication/bm-cmsc"}  # causality, no infusion
    grade5 = adverse_event_to_fhir(SERIOUS_AE.model_copy(update={"grade": 5}))
    assert [e for e in grade5["extension"] if e["url"] == codes.EXT_AE_GRADE][0]["valueCodeableConcept"]["coding"][0] == {
        "system": codes.RA, "code": "ctcae-grade-5", "display": "Grade 5 Death Related to Adverse Event"}


def test_adverse_event_schema_rules():
    base = dict(study_code=STUDY, subject_code="S01", ae_code="AE9", term="Rash", onset=date(2024, 2, 1), severity="mild")
    with pytest.raises(ValidationError, match="at least one seriousness criterion"):
        AdverseEvent(**base, serious=True)
    with pytest.raises(ValidationError, match="only given for a serious"):
        AdverseEvent(**base, seriousness_criteria=["hospitalization"])
    with pytest.raises(ValidationError, match="before its onset"):
        AdverseEvent(**base, end=date(2024, 1, 31))
    with pytest.raises(ValidationError):
        AdverseEvent(**base, grade=6)
    with pytest.raises(ValidationError):
        AdverseEvent(**base, relatedness="Probable")  # WHO-UMC R4 code is Probably-Likely
    with pytest.raises(ValidationError):
        AdverseEvent(**base, meddra_code="1234")
    assert AdverseEvent(**base, end=datetime(2024, 2, 1, 23, 0, tzinfo=TEHRAN)).end.day == 1  # same day is fine
