"""Properties of the whole derivation (issue 6 "Proof"), from stored FHIR Observations to
outputs — the read path, unit conversion, visit selection and every rule of contract §4:

- unit invariance: a visit whose CRP arrives in mg/dL (or g/L) instead of mg/L, whose
  patient and evaluator globals arrive in mm or cm instead of a 0–10 score, or whose pain
  arrives in cm instead of mm, gives the same value for every output;
- monotonicity: improving any single input of a visit never worsens a score, a category,
  a change or a EULAR response, and never turns a responder (ACR, Boolean remission,
  HAQ-DI MCID) into a non-responder;
- order invariance: shuffling subjects and input rows changes no output and no summary;
- exact reading: a number with more digits than a double holds is read exactly whatever
  the layout of the stored JSON; the cheap "would storing change anything" comparison
  agrees with re-stamping the resource.

Pure (no database): the Observations are serialised as the store keeps them and read back
with the derivation's own reader.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal as D
from typing import Any, Optional

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mappers import codes
from schemas.trial import EndpointSettings, default_schedule
from service.derivation.engine import Rules, derive_subject
from service.derivation.inputs import read_observation
from service.derivation.queries import Row
from service.derivation.reading import loads_observation
from service.derivation.records import Infusion, InputValue, StudyContext, StudyData, SubjectRecord
from service.derivation.service import compute
from service.derivation.storing import same_as_stored
from service.derivation.visits import Schedule
from service.fhir import jsonio
from service.rest.service import stamp

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
SCHEDULE = Schedule(default_schedule())
RULES = Rules.of(EndpointSettings())
DAY0 = date(2024, 1, 15)
VISIT_DAYS = {"BL": -1, "W16": 113}
CANONICAL_UNITS = {"tjc28": "{#}", "sjc28": "{#}", "ptga": "{score}", "ega": "{score}", "pain": "mm", "haq_di": "{score}",
                   "esr": "mm/h", "crp": "mg/L", "treg_pct": "%", "th17_pct": "%"}
#: measure → the same value in other units: (unit, factor the canonical value is multiplied by)
EQUIVALENT_UNITS: dict[str, list[tuple[str, D]]] = {
    "crp": [("mg/L", D(1)), ("mg/dL", D("0.1")), ("g/L", D("0.001"))],
    "ptga": [("{score}", D(1)), ("cm", D(1)), ("mm", D(10))],
    "ega": [("{score}", D(1)), ("cm", D(1)), ("mm", D(10))],
    "pain": [("mm", D(1)), ("cm", D("0.1")), ("{score}", D("0.1"))],
}
#: every measure here improves when it goes down (contract §4 scores and responses)
LOWER_IS_BETTER = ("tjc28", "sjc28", "ptga", "ega", "pain", "haq_di", "esr", "crp")

VALUES = {
    "tjc28": st.integers(0, 28).map(D),
    "sjc28": st.integers(0, 28).map(D),
    "ptga": st.integers(0, 20).map(lambda x: D(x) / 2),
    "ega": st.integers(0, 20).map(lambda x: D(x) / 2),
    "pain": st.integers(0, 100).map(D),
    "haq_di": st.integers(0, 24).map(lambda x: D(x) / 8),
    "esr": st.integers(1, 120).map(D),
    "crp": st.integers(0, 500).map(lambda x: D(x) / 10),
    "treg_pct": st.integers(1, 100).map(lambda x: D(x) / 10),
    "th17_pct": st.integers(1, 50).map(lambda x: D(x) / 10),
}


def observation(oid: str, measure: str, value: D, unit: str, day: int) -> dict[str, Any]:
    system, measure_codes = codes.MEASURE_CODES[measure]
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": system, "code": measure_codes[0]}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": (DAY0 + timedelta(days=day)).isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": codes.UCUM, "code": unit},
    }


def read(resource: dict[str, Any]) -> InputValue:
    """Store-and-read: the bytes the store keeps, parsed and read by the derivation."""
    content = stamp(resource, resource["id"], 1, 1)
    found = read_observation(Row(resource["id"], 1, 1, content), loads_observation(content))
    assert isinstance(found, InputValue), found
    return found


def subject() -> SubjectRecord:
    return SubjectRecord("S01", "p1", "rs1", DAY0, "MedicationAdministration/i0", [Infusion("MedicationAdministration/i0", DAY0.isoformat(), DAY0, 0)])


Visits = dict[str, dict[str, D]]


@st.composite
def two_visits(draw: Any) -> Visits:
    return {visit: {m: draw(s) for m, s in VALUES.items()} for visit in VISIT_DAYS}


def derive(visits: Visits, units: Optional[dict[tuple[str, str], tuple[str, D]]] = None) -> dict[str, dict[str, Any]]:
    """visit → output code → (value, reason) for inputs given in ``units`` (default canonical)."""
    rows = []
    for visit, values in visits.items():
        for measure, value in values.items():
            unit, factor = (units or {}).get((visit, measure), (CANONICAL_UNITS[measure], D(1)))
            rows.append(read(observation(f"{visit}-{measure}".lower().replace("_", "-"), measure, value * factor, unit, VISIT_DAYS[visit])))
    result = derive_subject(subject(), rows, [], SCHEDULE, RULES, {})
    return {vo.visit.name: {code: (o.value, o.reason) for code, o in vo.outputs.items()} for vo in result.visits if vo.visit.name in visits}


# ---------------------------------------------------------------------------------------------
# unit invariance (through the read path)
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(two_visits(), st.data())
def test_no_output_depends_on_the_unit_an_input_arrives_in(visits: Visits, data: Any) -> None:
    expected = derive(visits)
    units = {
        (visit, measure): data.draw(st.sampled_from(options), label=f"{visit} {measure}")
        for visit in visits for measure, options in EQUIVALENT_UNITS.items()
    }
    assume(any(factor != 1 for _, factor in units.values()))
    got = derive(visits, units)
    for visit in expected:
        for code, (value, reason) in expected[visit].items():
            other_value, other_reason = got[visit][code]
            assert other_value == value, (visit, code, units)
            assert (other_reason is None) == (reason is None), (visit, code, other_reason, reason)


# ---------------------------------------------------------------------------------------------
# monotonicity of single-input improvements (the visit after BL)
# ---------------------------------------------------------------------------------------------

_ACTIVITY = {"remission": 0, "low": 1, "moderate": 2, "high": 3}
_EULAR = {"good": 0, "moderate": 1, "none": 2}
SCORES = ("das28-esr", "das28-crp", "sdai", "cdai", "haq-di-change", "pain-change")
RESPONDERS = ("acr20", "acr50", "acr70", "boolean-remission-2011", "boolean-remission-2022", "haq-di-mcid")


@SETTINGS
@given(two_visits(), st.sampled_from(LOWER_IS_BETTER), st.floats(0, 1))
def test_improving_one_input_never_worsens_an_output(visits: Visits, measure: str, shrink: float) -> None:
    old = visits["W16"][measure]
    new = VALUES_FLOOR.get(measure, D(0)) + (old - VALUES_FLOOR.get(measure, D(0))) * D(repr(round(shrink, 2)))
    if measure in ("tjc28", "sjc28"):
        new = new.to_integral_value(rounding="ROUND_FLOOR")
    assume(new < old)
    better = {v: dict(values) for v, values in visits.items()}
    better["W16"][measure] = new
    before, after = derive(visits)["W16"], derive(better)["W16"]
    for code in before:
        (was, _), (now, _) = before[code], after[code]
        assert (was is None) == (now is None), (code, measure)  # improving a value never changes what is computable
        if was is None:
            continue
        if code in SCORES:
            assert now <= was, (code, measure, was, now)
        elif code.endswith("-activity"):
            assert _ACTIVITY[now] <= _ACTIVITY[was], (code, measure, was, now)
        elif code.startswith("eular-response"):
            assert _EULAR[now] <= _EULAR[was], (code, measure, was, now)
        elif code in RESPONDERS:
            assert now or not was, (code, measure)


VALUES_FLOOR = {"esr": D(1)}  # ESR 0 makes ln(ESR) undefined: improvements stop at 1 mm/h


# ---------------------------------------------------------------------------------------------
# order invariance over a whole study
# ---------------------------------------------------------------------------------------------


def _study(rng: random.Random, n_subjects: int) -> StudyData:
    from mappers.ids import make_id

    study = StudyContext("PROP", "prop", tuple(default_schedule()), EndpointSettings(), codes.PRODUCT_CODE, "default")
    subjects, values = [], []
    for i in range(n_subjects):
        patient = f"p{i}"
        day0 = DAY0 + timedelta(days=rng.randrange(200))
        treated = rng.random() < 0.8
        infusions = [Infusion(f"MedicationAdministration/i{i}", day0.isoformat(), day0, 0)] if treated else []
        subjects.append(SubjectRecord(f"S{i:02d}", patient, f"rs{i}", day0, None, infusions))
        for visit, target in (("BL", -2), ("W4", 28), ("W16", 112), ("W24", 170)):
            for measure, strategy_values in (("tjc28", range(0, 29)), ("sjc28", range(0, 29)), ("ptga", range(0, 11)), ("ega", range(0, 11)),
                                             ("pain", range(0, 101)), ("haq_di", range(0, 4)), ("esr", range(1, 80)), ("crp", range(0, 60)),
                                             ("il10", range(1, 20)), ("tnf_alpha", range(1, 40)), ("treg_pct", range(1, 10)), ("th17_pct", range(1, 5))):
                if rng.random() < 0.1:
                    continue  # missing
                unit = {"il10": "pg/mL", "tnf_alpha": "pg/mL"}.get(measure, CANONICAL_UNITS.get(measure))
                resource = observation(make_id("o", patient, visit, measure), measure, D(rng.choice(strategy_values)), unit or "", 0)
                resource["subject"] = {"reference": f"Patient/{patient}"}
                resource["effectiveDateTime"] = (day0 + timedelta(days=target + rng.randint(-2, 2))).isoformat()
                values.append(read(resource))
    return StudyData(study, subjects, values, [], {}, [])


def _fingerprint(data: StudyData) -> tuple[Any, ...]:
    d = compute(data)
    outputs = sorted(
        (r.subject.code, vo.visit.name, code, repr(o.value), o.reason, tuple(s.value.source.ref for s in o.inputs))
        for r in d.results for vo in r.visits for code, o in vo.outputs.items()
    )
    return tuple(outputs), repr(d.summaries), repr(d.safety)


@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(2, 8))
def test_shuffling_subjects_and_rows_changes_nothing(rng: random.Random, n_subjects: int) -> None:
    data = _study(rng, n_subjects)
    expected = _fingerprint(data)
    rng.shuffle(data.subjects)
    rng.shuffle(data.values)
    assert _fingerprint(data) == expected


# ---------------------------------------------------------------------------------------------
# exact reading and the "unchanged" comparison
# ---------------------------------------------------------------------------------------------

long_decimals = st.decimals(min_value=D("-1e6"), max_value=D("1e6"), allow_nan=False, allow_infinity=False, places=18)


@settings(deadline=None, max_examples=200)
@given(long_decimals, st.sampled_from(["value-first", "unit-first", "extension-inside", "component", "extension-before", "exponent"]))
def test_the_value_is_read_exactly_whatever_the_layout(number: D, layout: str) -> None:
    quantity: dict[str, Any] = {"value": number, "unit": "mg/L", "system": codes.UCUM, "code": "mg/L"}
    body: dict[str, Any] = {
        "resourceType": "Observation", "id": "o1", "status": "final", "code": {"coding": [{"system": codes.LOINC, "code": "1988-5"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-15",
    }
    if layout == "unit-first":
        quantity = {"unit": "mg/L", "system": codes.UCUM, "code": "mg/L", "value": number}
    elif layout == "extension-inside":
        quantity = {"extension": [{"url": "http://example.org/x", "valueQuantity": {"value": D("2.5")}}], **quantity}
    elif layout == "component":
        body["component"] = [{"code": {"text": "x"}, "valueQuantity": {"value": D("1.25")}}]
    elif layout == "extension-before":
        body["extension"] = [{"url": "http://example.org/x", "valueQuantity": {"value": D("3.5")}}]
    elif layout == "exponent":
        quantity["value"] = jsonio.JsonDecimal(f"{number.scaleb(-3):E}") if number else number
        number = D(str(quantity["value"]))
    body["valueQuantity"] = quantity
    content = stamp(body, "o1", 1, 1)
    got = loads_observation(content)["valueQuantity"]["value"]
    assert (D(repr(got)) if isinstance(got, float) else got) == number  # a float only when its repr is the number
    found = read_observation(Row("o1", 1, 1, content), loads_observation(content))
    assert isinstance(found, InputValue) or number < 0  # (a negative CRP is set aside)
    if isinstance(found, InputValue):
        assert found.canon["mg_l"] == number


def test_huge_integers_are_never_read_as_floats() -> None:
    content = b'{"resourceType":"Observation","id":"o1","valueInteger":123456789012345678901234567890}'
    assert loads_observation(content)["valueInteger"] == 123456789012345678901234567890
    content = b'{"resourceType":"Observation","id":"o1","valueQuantity":{"value":123456789012345678901234567890}}'
    assert loads_observation(content)["valueQuantity"]["value"] == D("123456789012345678901234567890")


resources = st.fixed_dictionaries({
    "resourceType": st.sampled_from(["Observation", "MeasureReport"]),
    "id": st.from_regex(r"[a-z0-9][a-z0-9\-.]{0,20}", fullmatch=True),
    "status": st.sampled_from(["final", "complete"]),
}, optional={
    "valueQuantity": st.fixed_dictionaries({"value": st.decimals(-100, 100, places=2), "unit": st.text(max_size=5)}),
    "note": st.lists(st.fixed_dictionaries({"text": st.text(max_size=20)}), max_size=2),
    "valueBoolean": st.booleans(),
})


@settings(deadline=None, max_examples=200)
@given(resources, st.integers(1, 10**6), st.integers(0, 4_000_000_000_000_000), st.sampled_from(["same", "other", "meta"]))
def test_same_as_stored_agrees_with_restamping(resource: dict[str, Any], version_id: int, last_updated_us: int, change: str) -> None:
    content = stamp(resource, resource["id"], version_id, last_updated_us)
    candidate = dict(resource)
    if change == "other":
        candidate["status"] = "amended"
    elif change == "meta":
        candidate["meta"] = {"tag": [{"code": "x"}]}
    same = stamp(candidate, candidate["id"], version_id, last_updated_us) == content
    if same_as_stored(content, candidate):  # never "unchanged" when storing would change something
        assert same
    # the outputs' own layout (resourceType, id first) is always recognised
    ordered = {"resourceType": candidate["resourceType"], "id": candidate["id"], **candidate}
    assert same_as_stored(content, ordered) == same
