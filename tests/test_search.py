"""FHIR search behaviours users rely on (https://hl7.org/fhir/R4/search.html).

Small, readable cases, each on a store holding only what the test wrote; every test
runs on SQLite and PostgreSQL (the ``client`` fixture is parametrised). The broad,
generated comparison against an independent evaluator is ``test_search_oracle.py``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from service.fhir import jsonio
from support import FHIR_JSON

BASE = "http://testserver/fhir"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")


# --- helpers --------------------------------------------------------------------------------


def put(client, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = client.put(f"/fhir/{body['resourceType']}/{body['id']}", content=jsonio.dumps(body), headers=FHIR_JSON)
    assert r.status_code in (200, 201), r.text
    return r.json()


def bundle(client, path: str, params: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = client.get(f"/fhir/{path}", params=params, headers={"accept": "application/fhir+json", **(headers or {})})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["resourceType"] == "Bundle" and doc["type"] == "searchset"
    return doc


def matches(doc: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in doc.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def ids(client, path: str, params: Any = None) -> set[str]:  # type: ignore[no-untyped-def]
    """The matched ids of a search (one page of up to 500)."""
    if isinstance(params, str):
        params = parse_qsl(params, keep_blank_values=True)
    params = list(params or []) + [("_count", "500")]
    return set(matches(bundle(client, path, params)))


def next_link(doc: dict[str, Any]) -> str | None:
    return next((link["url"] for link in doc.get("link", []) if link["relation"] == "next"), None)


def self_link(doc: dict[str, Any]) -> str:
    return next(link["url"] for link in doc["link"] if link["relation"] == "self")


def obs(id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "id": id, "status": "final",
                            "code": {"coding": [{"system": LOINC, "code": "1988-5"}]}}
    body.update(extra)
    return body


def qty(value: str, code: str) -> dict[str, Any]:
    from decimal import Decimal

    return {"value": Decimal(value), "unit": code, "system": UCUM, "code": code}


def subsetted(resource: dict[str, Any]) -> bool:
    return any((t.get("system"), t.get("code")) == SUBSETTED for t in resource.get("meta", {}).get("tag", []))


# --- token ----------------------------------------------------------------------------------


def test_token_system_and_code_forms(client) -> None:  # type: ignore[no-untyped-def]
    put(client, obs("a", code={"coding": [{"system": LOINC, "code": "1988-5", "display": "C reactive protein"},
                                         {"system": "urn:local", "code": "crp"}]}))
    put(client, obs("no-system", code={"coding": [{"code": "1988-5"}]}))
    put(client, obs("esr", code={"coding": [{"system": LOINC, "code": "4537-7", "display": "Erythrocyte sedimentation rate"}]}))
    put(client, obs("text-only", code={"text": "CRP (point of care)"}))

    assert ids(client, "Observation", f"code={LOINC}|1988-5") == {"a"}
    assert ids(client, "Observation", "code=1988-5") == {"a", "no-system"}
    assert ids(client, "Observation", "code=|1988-5") == {"no-system"}
    assert ids(client, "Observation", f"code={LOINC}|") == {"a", "esr"}
    assert ids(client, "Observation", f"code=urn:local|crp,{LOINC}|4537-7") == {"a", "esr"}
    assert ids(client, "Observation", "code=1988-5&code=urn:local|crp") == {"a"}  # repeated = AND
    # :not — resources without a matching value, including those without any coding
    assert ids(client, "Observation", "code:not=1988-5") == {"esr", "text-only"}
    # :text — a word of the display text or CodeableConcept.text starts with the value
    assert ids(client, "Observation", "code:text=reac") == {"a"}
    assert ids(client, "Observation", "code:text=crp") == {"text-only"}
    assert ids(client, "Observation", "code:text=SEDIMENT") == {"esr"}


def test_token_identifier_boolean_code(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p1", "active": True, "gender": "female",
                 "identifier": [{"system": "urn:mrn", "value": "123"}, {"value": "LEGACY-9"}]})
    put(client, {"resourceType": "Patient", "id": "p2", "active": False, "gender": "male",
                 "identifier": [{"system": "urn:other", "value": "123"}]})
    put(client, {"resourceType": "Patient", "id": "p3"})

    assert ids(client, "Patient", "identifier=urn:mrn|123") == {"p1"}
    assert ids(client, "Patient", "identifier=123") == {"p1", "p2"}
    assert ids(client, "Patient", "identifier=|LEGACY-9") == {"p1"}
    assert ids(client, "Patient", "identifier=urn:other|") == {"p2"}
    assert ids(client, "Patient", "active=true") == {"p1"}
    assert ids(client, "Patient", "active=false") == {"p2"}
    assert ids(client, "Patient", "gender=female,male") == {"p1", "p2"}
    assert ids(client, "Patient", "gender:not=male") == {"p1", "p3"}
    assert ids(client, "Patient", "gender:missing=true") == {"p3"}
    assert ids(client, "Patient", "gender:missing=false") == {"p1", "p2"}
    assert ids(client, "Patient", "_id=p1,p3") == {"p1", "p3"}


def test_missing_is_consistent_with_text_for_text_only_codeable_concepts(client) -> None:  # type: ignore[no-untyped-def]
    """A CodeableConcept carrying only ``text`` is a value of the parameter: ``:text``
    finds it, so ``:missing=true`` must not claim the element is absent (search.html:
    ``:missing=true`` returns resources that do not have a value for the parameter)."""
    put(client, obs("symptom", category=[{"text": "Signs and Symptoms"}]))
    put(client, obs("lab", category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]))
    put(client, obs("none"))

    assert ids(client, "Observation", "category:text=signs") == {"symptom"}
    assert ids(client, "Observation", "category:missing=false") == {"symptom", "lab"}
    assert ids(client, "Observation", "category:missing=true") == {"none"}


# --- string ---------------------------------------------------------------------------------


def test_string_starts_with_case_and_accent_insensitive(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "muller", "name": [{"family": "Müller", "given": ["José", "Maria"]}],
                 "address": [{"city": "Zürich", "line": ["Bahnhofstraße 1"]}]})
    put(client, {"resourceType": "Patient", "id": "mueller", "name": [{"family": "Mueller", "given": ["Anna"]}]})
    put(client, {"resourceType": "Patient", "id": "berg", "name": [{"family": "van der Berg", "prefix": ["Dr."]}]})

    assert ids(client, "Patient", "name=muller") == {"muller"}
    assert ids(client, "Patient", "family=MÜL") == {"muller"}
    assert ids(client, "Patient", "given=jose") == {"muller"}
    assert ids(client, "Patient", "name=maria") == {"muller"}          # every given name is a part
    assert ids(client, "Patient", "name=dr") == {"berg"}               # so is the prefix
    assert ids(client, "Patient", "name=van") == {"berg"}
    assert ids(client, "Patient", "family=berg") == set()              # starts-with, not contains
    assert ids(client, "Patient", "name:contains=ller") == {"muller", "mueller"}
    assert ids(client, "Patient", "family:contains=BERG") == {"berg"}
    assert ids(client, "Patient", "name:exact=Müller") == {"muller"}
    assert ids(client, "Patient", "name:exact=müller") == set()
    assert ids(client, "Patient", "name:exact=Muller") == set()
    assert ids(client, "Patient", "address-city=zurich") == {"muller"}
    assert ids(client, "Patient", "address=bahnhof") == {"muller"}
    assert ids(client, "Patient", "name=anna,jose") == {"muller", "mueller"}
    assert ids(client, "Patient", "name=muller&name=jose") == {"muller"}
    assert ids(client, "Patient", "name=muller&name=anna") == set()


# --- date -----------------------------------------------------------------------------------


@pytest.fixture()
def dated(client):  # type: ignore[no-untyped-def]
    put(client, obs("mid-march", effectiveDateTime="2024-03-15T10:30:00Z"))
    put(client, obs("march", effectiveDateTime="2024-03"))
    put(client, obs("into-april", effectivePeriod={"start": "2024-03-28", "end": "2024-04-02"}))
    put(client, obs("late-utc", effectiveDateTime="2024-04-01T00:30:00+02:00"))  # 2024-03-31T22:30Z
    put(client, obs("new-year-eve", effectiveDateTime="2023-12-31"))
    put(client, obs("open-ended", effectivePeriod={"start": "2024-06-01T08:00:00Z"}))
    return client


def test_date_precision_month_versus_period(dated) -> None:  # type: ignore[no-untyped-def]
    # the month 2024-03 contains 2024-03-15 but not a period reaching into April
    assert ids(dated, "Observation", "date=2024-03") == {"mid-march", "march", "late-utc"}
    assert ids(dated, "Observation", "date=eq2024-03") == {"mid-march", "march", "late-utc"}
    assert ids(dated, "Observation", "date=2024-03-15") == {"mid-march"}
    assert ids(dated, "Observation", "date=2024") == {"mid-march", "march", "into-april", "late-utc"}  # open-ended never ends
    assert ids(dated, "Observation", "date=ne2024-03") == {"into-april", "new-year-eve", "open-ended"}


def test_date_prefixes(dated) -> None:  # type: ignore[no-untyped-def]
    assert ids(dated, "Observation", "date=gt2024-03") == {"into-april", "open-ended"}
    assert ids(dated, "Observation", "date=lt2024-03") == {"new-year-eve"}
    assert ids(dated, "Observation", "date=ge2024-03") == {"mid-march", "march", "into-april", "late-utc", "open-ended"}
    assert ids(dated, "Observation", "date=le2024-03") == {"mid-march", "march", "late-utc", "new-year-eve"}
    assert ids(dated, "Observation", "date=sa2024-03-20") == {"into-april", "late-utc", "open-ended"}
    assert ids(dated, "Observation", "date=eb2024-03-20") == {"mid-march", "new-year-eve"}
    # a range as two ANDed values
    assert ids(dated, "Observation", "date=ge2024-03-10&date=lt2024-03-20") == {"mid-march", "march"}
    # time zones: late-utc is 2024-03-31T22:30Z
    assert ids(dated, "Observation", [("date", "ge2024-04-01T00:00:00Z")]) == {"into-april", "open-ended"}
    assert "late-utc" in ids(dated, "Observation", [("date", "lt2024-04-01T00:00:00Z")])
    assert "late-utc" in ids(dated, "Observation", [("date", "ge2024-04-01T00:00:00+02:00")])


def test_date_legacy_comparators(dated) -> None:  # type: ignore[no-untyped-def]
    """fhirclient still writes the DSTU1 comparators (``>=2024-03-01``)."""
    assert ids(dated, "Observation", [("date", ">=2024-03-01")]) == ids(dated, "Observation", "date=ge2024-03-01")
    assert ids(dated, "Observation", [("date", ">=2024-03-01")]) == {"mid-march", "march", "into-april", "late-utc", "open-ended"}
    assert ids(dated, "Observation", [("date", "<2024-03-01")]) == {"new-year-eve"}
    assert ids(dated, "Observation", [("date", "<=2024-03")]) == ids(dated, "Observation", "date=le2024-03")
    assert ids(dated, "Observation", [("date", ">2024-03")]) == {"into-april", "open-ended"}


def test_birthdate_precision(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "year", "birthDate": "1985"})
    put(client, {"resourceType": "Patient", "id": "month", "birthDate": "1985-06"})
    put(client, {"resourceType": "Patient", "id": "day", "birthDate": "1985-06-15"})
    assert ids(client, "Patient", "birthdate=1985") == {"year", "month", "day"}
    assert ids(client, "Patient", "birthdate=1985-06") == {"month", "day"}
    assert ids(client, "Patient", "birthdate=1985-06-15") == {"day"}
    assert ids(client, "Patient", "birthdate=ge1985-06") == {"year", "month", "day"}
    assert ids(client, "Patient", "birthdate=sa1985-05") == {"month", "day"}


# --- number and quantity --------------------------------------------------------------------


def test_number_precision_and_prefixes(client) -> None:  # type: ignore[no-untyped-def]
    from decimal import Decimal

    for rid, p in (("low", "0.25"), ("high", "0.8"), ("higher", "0.805")):
        put(client, {"resourceType": "RiskAssessment", "id": rid, "status": "final", "subject": {"reference": "Patient/x"},
                     "prediction": [{"probabilityDecimal": Decimal(p)}]})
    assert ids(client, "RiskAssessment", "probability=0.8") == {"high", "higher"}     # [0.75, 0.85)
    assert ids(client, "RiskAssessment", "probability=0.80") == {"high"}              # [0.795, 0.805)
    assert ids(client, "RiskAssessment", "probability=gt0.5") == {"high", "higher"}
    assert ids(client, "RiskAssessment", "probability=lt0.8") == {"low"}
    assert ids(client, "RiskAssessment", "probability=le0.8") == {"low", "high"}
    assert ids(client, "RiskAssessment", "probability=ne0.80") == {"low", "higher"}


@pytest.fixture()
def quantities(client):  # type: ignore[no-untyped-def]
    from decimal import Decimal

    put(client, obs("12-mg-l", valueQuantity=qty("12", "mg/L")))
    put(client, obs("1.2-mg-dl", valueQuantity=qty("1.2", "mg/dL")))
    put(client, obs("0.5-mg-dl", valueQuantity=qty("0.5", "mg/dL")))          # = 5 mg/L
    put(client, obs("esr", code={"coding": [{"system": LOINC, "code": "4537-7"}]}, valueQuantity=qty("12", "mm/h")))
    put(client, obs("unit-only", valueQuantity={"value": Decimal("12"), "unit": "mg/L"}))
    return client


def test_quantity_converts_ucum_units(quantities) -> None:  # type: ignore[no-untyped-def]
    assert ids(quantities, "Observation", f"value-quantity=1.2|{UCUM}|mg/dL") == {"12-mg-l", "1.2-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=12|{UCUM}|mg/L") == {"12-mg-l", "1.2-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=0.012|{UCUM}|g/L") == {"12-mg-l", "1.2-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=gt4|{UCUM}|mg/L") == {"12-mg-l", "1.2-mg-dl", "0.5-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=12|{UCUM}|mm/h") == {"esr"}
    assert ids(quantities, "Observation", f"value-quantity=ap13|{UCUM}|mg/L") == {"12-mg-l", "1.2-mg-dl"}


def test_quantity_comparisons_at_the_converted_boundary(quantities) -> None:  # type: ignore[no-untyped-def]
    """12 mg/L is exactly 1.2 mg/dL: it is not less than 1.2 mg/dL and it is ≥ 1.2 mg/dL."""
    assert ids(quantities, "Observation", f"value-quantity=lt1.2|{UCUM}|mg/dL") == {"0.5-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=ge1.2|{UCUM}|mg/dL") == {"12-mg-l", "1.2-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=le0.012|{UCUM}|g/L") == {"12-mg-l", "1.2-mg-dl", "0.5-mg-dl"}
    assert ids(quantities, "Observation", f"value-quantity=gt5|{UCUM}|mg/L") == {"12-mg-l", "1.2-mg-dl"}


def test_quantity_without_system(quantities) -> None:  # type: ignore[no-untyped-def]
    # no unit at all: any unit
    assert ids(quantities, "Observation", "value-quantity=12") == {"12-mg-l", "esr", "unit-only"}
    # number||code: "the unit - either the code (code) or the stated human unit (unit)"
    found = ids(quantities, "Observation", "value-quantity=12||mg/L")
    assert {"12-mg-l", "unit-only"} <= found
    assert not found & {"esr", "0.5-mg-dl"}


# --- reference ------------------------------------------------------------------------------


def test_reference_forms(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "a", "name": [{"family": "Alpha"}]})
    put(client, {"resourceType": "Group", "id": "a", "type": "person", "actual": True})
    put(client, obs("rel", subject={"reference": "Patient/a"}))
    put(client, obs("abs", subject={"reference": f"{BASE}/Patient/a"}))
    put(client, obs("group", subject={"reference": "Group/a"}))
    put(client, obs("other", subject={"reference": "Patient/b"}))
    put(client, obs("elsewhere", subject={"reference": "http://other.example.org/fhir/Patient/a"}))
    put(client, obs("by-identifier", subject={"identifier": {"system": "urn:mrn", "value": "42"}}))
    put(client, obs("none"))

    assert ids(client, "Observation", "subject=Patient/a") == {"rel", "abs"}
    assert ids(client, "Observation", f"subject={BASE}/Patient/a") == {"rel", "abs"}
    assert ids(client, "Observation", "subject=a") == {"rel", "abs", "group"}
    assert ids(client, "Observation", "subject:Patient=a") == {"rel", "abs"}
    assert ids(client, "Observation", "subject:Group=a") == {"group"}
    assert ids(client, "Observation", "subject=http://other.example.org/fhir/Patient/a") == {"elsewhere"}
    assert ids(client, "Observation", "subject:identifier=urn:mrn|42") == {"by-identifier"}
    assert ids(client, "Observation", "patient=a") == {"rel", "abs"}
    assert ids(client, "Observation", "subject=Patient/a,Patient/b") == {"rel", "abs", "other"}
    assert ids(client, "Observation", "subject:missing=true") == {"none"}


def test_references_to_another_server_never_resolve_locally(client) -> None:  # type: ignore[no-untyped-def]
    """``http://other.example.org/fhir/Patient/a`` is a Patient on another server, not
    this server's ``Patient/a`` (references.html: an absolute URL is the resource at that
    location). ``subject=Patient/a`` already excludes it; chains, ``_has``, includes and
    the Patient compartment must agree."""
    put(client, {"resourceType": "Patient", "id": "a", "name": [{"family": "Alpha"}]})
    put(client, obs("local", subject={"reference": "Patient/a"}))
    put(client, obs("elsewhere", subject={"reference": "http://other.example.org/fhir/Patient/a"}))

    assert ids(client, "Observation", "subject=Patient/a") == {"local"}
    assert ids(client, "Observation", "subject:Patient.name=alpha") == {"local"}
    assert ids(client, "Patient", "_has:Observation:subject:_id=elsewhere") == set()
    doc = bundle(client, "Observation", {"_id": "elsewhere", "_include": "Observation:subject"})
    assert [e["resource"]["id"] for e in doc["entry"]] == ["elsewhere"]
    doc = bundle(client, "Patient", {"_id": "a", "_revinclude": "Observation:subject"})
    assert {e["resource"]["id"] for e in doc["entry"]} == {"a", "local"}
    assert set(matches(bundle(client, "Patient/a/Observation"))) == {"local"}


def test_chains_and_has(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Organization", "id": "org", "name": "Klinik Zürich"})
    put(client, {"resourceType": "Patient", "id": "old", "birthDate": "1950-02-01", "managingOrganization": {"reference": "Organization/org"}})
    put(client, {"resourceType": "Patient", "id": "young", "birthDate": "2001-07-07"})
    put(client, obs("o-old", subject={"reference": "Patient/old"}))
    put(client, obs("o-young", subject={"reference": "Patient/young"}, code={"coding": [{"system": LOINC, "code": "4537-7"}]}))

    assert ids(client, "Observation", "subject:Patient.birthdate=lt1960") == {"o-old"}
    assert ids(client, "Observation", "subject:Patient.organization:Organization.name=klinik") == {"o-old"}
    assert ids(client, "Patient", "_has:Observation:subject:code=4537-7") == {"young"}
    assert ids(client, "Patient", "_has:Observation:patient:code=1988-5") == {"old"}


# --- uri, meta parameters -------------------------------------------------------------------


def test_meta_parameters(client) -> None:  # type: ignore[no-untyped-def]
    profile = "http://example.org/fhir/StructureDefinition/trial-patient"
    put(client, {"resourceType": "Patient", "id": "tagged", "meta": {
        "tag": [{"system": "urn:cohort", "code": "a"}], "profile": [profile], "source": "urn:site:bern#batch-1"}})
    put(client, {"resourceType": "Patient", "id": "v2", "meta": {"profile": [profile + "-v2"], "source": "urn:site:zurich"}})
    put(client, {"resourceType": "Patient", "id": "plain"})

    assert ids(client, "Patient", "_tag=urn:cohort|a") == {"tagged"}
    assert ids(client, "Patient", "_tag=a") == {"tagged"}
    assert ids(client, "Patient", "_tag:not=urn:cohort|a") == {"v2", "plain"}
    assert ids(client, "Patient", f"_profile={profile}") == {"tagged"}
    assert ids(client, "Patient", "_profile:below=http://example.org/fhir/StructureDefinition") == {"tagged", "v2"}
    assert ids(client, "Patient", f"_profile:above={profile}/x") == {"tagged"}
    assert ids(client, "Patient", "_source=urn:site:bern#batch-1") == {"tagged"}
    assert ids(client, "Patient", "_source:below=urn:site") == {"tagged", "v2"}
    assert ids(client, "Patient", "_profile:missing=true") == {"plain"}


def test_last_updated(client) -> None:  # type: ignore[no-untyped-def]
    first = put(client, {"resourceType": "Patient", "id": "first"})
    time.sleep(0.01)
    second = put(client, {"resourceType": "Patient", "id": "second"})
    t1, t2 = first["meta"]["lastUpdated"], second["meta"]["lastUpdated"]
    assert t1 < t2
    assert ids(client, "Patient", [("_lastUpdated", f"gt{t1}")]) == {"second"}
    assert ids(client, "Patient", [("_lastUpdated", f"le{t1}")]) == {"first"}
    assert ids(client, "Patient", [("_lastUpdated", f"eq{t2}")]) == {"second"}
    assert ids(client, "Patient", [("_lastUpdated", f"ge{t1[:10]}")]) == {"first", "second"}
    assert ids(client, "Patient", [("_lastUpdated", "lt2000-01-01")]) == set()


def test_missing_applies_to_every_parameter_type(client) -> None:  # type: ignore[no-untyped-def]
    """search.html: ``:missing`` is defined for all parameter types, _lastUpdated and
    _id included (every resource has both, so ``false`` finds all and ``true`` none)."""
    put(client, {"resourceType": "Patient", "id": "p"})
    doc = bundle(client, "Patient", [("_lastUpdated:missing", "true")])
    assert matches(doc) == [] and not [e for e in doc.get("entry", []) if e["search"]["mode"] == "outcome"]
    doc = bundle(client, "Patient", [("_lastUpdated:missing", "false")])
    assert matches(doc) == ["p"] and not [e for e in doc.get("entry", []) if e["search"]["mode"] == "outcome"]


# --- composite ------------------------------------------------------------------------------


def test_composite_code_value(client) -> None:  # type: ignore[no-untyped-def]
    put(client, obs("crp-high", valueQuantity=qty("25", "mg/L")))
    put(client, obs("crp-low", valueQuantity=qty("2", "mg/L")))
    put(client, obs("lmp", code={"coding": [{"system": LOINC, "code": "8665-2"}]}, valueDateTime="2016-12-30"))
    put(client, obs("bp", code={"coding": [{"system": LOINC, "code": "85354-9"}]}, component=[
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": qty("150", "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": qty("90", "mm[Hg]")}]))

    assert ids(client, "Observation", f"code-value-quantity={LOINC}|1988-5$gt10|{UCUM}|mg/L") == {"crp-high"}
    assert ids(client, "Observation", f"component-code-value-quantity={LOINC}|8480-6$gt140") == {"bp"}
    # both components from the same element: diastolic is not > 140
    assert ids(client, "Observation", f"component-code-value-quantity={LOINC}|8462-4$gt140") == set()
    assert ids(client, "Observation", f"code-value-date={LOINC}|8665-2$2016-12-30") == {"lmp"}
    assert ids(client, "Observation", f"code-value-date={LOINC}|8665-2$ge2016") == {"lmp"}


# --- sorting and paging ---------------------------------------------------------------------


def test_sort_several_keys(client) -> None:  # type: ignore[no-untyped-def]
    rows = [("a", "Berg", "1980-01-01"), ("b", "Adler", "1990-01-01"), ("c", "Berg", "1970-01-01"),
            ("d", "Adler", "1960-05-05"), ("e", "Chen", "1985-03-03")]
    for rid, family, born in rows:
        put(client, {"resourceType": "Patient", "id": rid, "name": [{"family": family}], "birthDate": born})
    assert matches(bundle(client, "Patient", {"_sort": "birthdate"})) == ["d", "c", "a", "e", "b"]
    assert matches(bundle(client, "Patient", {"_sort": "-birthdate"})) == ["b", "e", "a", "c", "d"]
    assert matches(bundle(client, "Patient", {"_sort": "family,-birthdate"})) == ["b", "d", "a", "c", "e"]
    assert matches(bundle(client, "Patient", {"_sort": "-family,birthdate"})) == ["e", "c", "a", "d", "b"]
    # sorted paging: the same order across pages
    got: list[str] = []
    doc = bundle(client, "Patient", {"_sort": "family,-birthdate", "_count": "2"})
    while True:
        got += matches(doc)
        url = next_link(doc)
        if not url:
            break
        doc = bundle(client, url.removeprefix(BASE + "/"))
    assert got == ["b", "d", "a", "c", "e"]


@pytest.mark.parametrize("sort", [None, "date", "-date", "status,-date"])
def test_paging_survives_inserts_between_pages(client, sort: str | None) -> None:  # type: ignore[no-untyped-def]
    for i in range(10):
        put(client, obs(f"o{i}", status="final" if i % 3 else "amended", effectiveDateTime=f"2024-03-{10 + i:02d}"))
    params: list[tuple[str, str]] = [("date", "ge2024-01-01"), ("date", "lt2025-01-01"), ("_count", "4")]
    if sort:
        params.append(("_sort", sort))
    doc = bundle(client, "Observation", params)
    seen = matches(doc)
    assert len(seen) == 4
    # new matching rows that sort first, last and in the middle
    put(client, obs("new-first", effectiveDateTime="2024-01-02"))
    put(client, obs("new-last", effectiveDateTime="2024-12-30"))
    put(client, obs("new-mid", effectiveDateTime="2024-03-14T12:00:00Z"))
    pages = 1
    while (url := next_link(doc)) is not None:
        parts = urlsplit(url)
        assert url.startswith(f"{BASE}/Observation?"), url                 # absolute
        query = parse_qsl(parts.query)
        assert [v for k, v in query if k == "date"] == ["ge2024-01-01", "lt2025-01-01"], url  # repeated, in order
        if sort:
            assert ("_sort", sort) in query
        doc = bundle(client, url.removeprefix(BASE + "/"))
        seen += matches(doc)
        pages += 1
        assert pages < 10
    assert len(seen) == len(set(seen)), f"repeated rows: {seen}"
    assert {f"o{i}" for i in range(10)} <= set(seen), f"pre-existing rows missing: {set(f'o{i}' for i in range(10)) - set(seen)}"


def test_total_and_count(client) -> None:  # type: ignore[no-untyped-def]
    for i in range(7):
        put(client, obs(f"o{i}"))
    doc = bundle(client, "Observation", {"_total": "accurate", "_count": "3"})
    assert doc["total"] == 7 and len(matches(doc)) == 3
    doc = bundle(client, "Observation", {"_count": "0"})
    assert doc["total"] == 7 and doc.get("entry", []) == []
    doc = bundle(client, "Observation", {"_count": "0", "code": "nope"})
    assert doc["total"] == 0
    doc = bundle(client, "Observation", {"_summary": "count"})
    assert doc["total"] == 7 and doc.get("entry", []) == []


# --- result shaping -------------------------------------------------------------------------


@pytest.fixture()
def full_patient(client):  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p", "active": True, "gender": "female", "birthDate": "1980-01-01",
                 "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ann</div>'},
                 "name": [{"family": "Smith", "given": ["Ann"]}],
                 "contact": [{"name": {"family": "Smith", "given": ["Bob"]}}]})
    return client


def only_resource(doc: dict[str, Any]) -> dict[str, Any]:
    [entry] = doc["entry"]
    return entry["resource"]


def test_summary_modes(full_patient) -> None:  # type: ignore[no-untyped-def]
    res = only_resource(bundle(full_patient, "Patient", {"_summary": "true"}))
    assert subsetted(res)
    assert res["name"] and res["gender"] == "female"
    assert "contact" not in res and "text" not in res

    res = only_resource(bundle(full_patient, "Patient", {"_summary": "text"}))
    assert subsetted(res) and res["text"]["status"] == "generated"
    assert "name" not in res and "contact" not in res

    res = only_resource(bundle(full_patient, "Patient", {"_summary": "data"}))
    assert subsetted(res) and "text" not in res
    assert res["contact"] and res["name"]

    res = only_resource(bundle(full_patient, "Patient", {"_summary": "false"}))
    assert not subsetted(res) and res["text"] and res["contact"]

    doc = bundle(full_patient, "Patient", {"_summary": "count"})
    assert doc["total"] == 1 and not doc.get("entry")


def test_elements(full_patient) -> None:  # type: ignore[no-untyped-def]
    res = only_resource(bundle(full_patient, "Patient", {"_elements": "gender,birthDate"}))
    assert subsetted(res)
    assert res["resourceType"] == "Patient" and res["id"] == "p"
    assert res["gender"] == "female" and res["birthDate"] == "1980-01-01"
    assert "name" not in res and "contact" not in res and "active" not in res


def test_include_revinclude_iterate_and_wildcard(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Organization", "id": "org", "name": "Clinic"})
    put(client, {"resourceType": "Practitioner", "id": "doc"})
    put(client, {"resourceType": "Patient", "id": "p", "managingOrganization": {"reference": "Organization/org"}})
    put(client, obs("o1", subject={"reference": "Patient/p"}, performer=[{"reference": "Practitioner/doc"}]))
    put(client, obs("o2", subject={"reference": "Patient/p"}))

    def modes(doc: dict[str, Any]) -> dict[str, str]:
        return {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["search"]["mode"] for e in doc["entry"]}

    doc = bundle(client, "Observation", {"_id": "o1,o2", "_include": "Observation:subject", "_total": "accurate"})
    assert modes(doc) == {"Observation/o1": "match", "Observation/o2": "match", "Patient/p": "include"}
    assert doc["total"] == 2  # included resources are not counted

    doc = bundle(client, "Observation", {"_id": "o1", "_include": "Observation:subject:Patient"})
    assert modes(doc) == {"Observation/o1": "match", "Patient/p": "include"}

    doc = bundle(client, "Observation", [("_id", "o1"), ("_include", "Observation:subject"), ("_include:iterate", "Patient:organization")])
    assert modes(doc) == {"Observation/o1": "match", "Patient/p": "include", "Organization/org": "include"}

    doc = bundle(client, "Observation", {"_id": "o1", "_include": "Observation:*"})  # "*" for the parameter name
    assert modes(doc) == {"Observation/o1": "match", "Patient/p": "include", "Practitioner/doc": "include"}

    doc = bundle(client, "Patient", {"_id": "p", "_revinclude": "Observation:subject"})
    assert modes(doc) == {"Patient/p": "match", "Observation/o1": "include", "Observation/o2": "include"}


def test_patient_compartment(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p"})
    put(client, obs("mine", subject={"reference": "Patient/p"}))
    put(client, obs("mine-esr", subject={"reference": "Patient/p"}, code={"coding": [{"system": LOINC, "code": "4537-7"}]}))
    put(client, obs("theirs", subject={"reference": "Patient/q"}))
    assert set(matches(bundle(client, "Patient/p/Observation"))) == {"mine", "mine-esr"}
    assert set(matches(bundle(client, "Patient/p/Observation", {"code": "4537-7"}))) == {"mine-esr"}


def test_post_search_with_form_body(client) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        put(client, obs(f"o{i}", subject={"reference": "Patient/p"}))
    put(client, obs("other", subject={"reference": "Patient/q"}))
    r = client.post("/fhir/Observation/_search", data={"subject": "Patient/p", "_count": "2"},
                    headers={"accept": "application/fhir+json"})
    assert r.status_code == 200, r.text
    doc = r.json()
    got = matches(doc)
    assert len(got) == 2
    url = next_link(doc)
    assert url and url.startswith(f"{BASE}/Observation") and "subject=Patient" in url.replace("%2F", "/")
    got += matches(bundle(client, url.removeprefix(BASE + "/")))
    assert sorted(got) == ["o0", "o1", "o2"]


def test_unknown_parameters_are_reported_or_refused(client) -> None:  # type: ignore[no-untyped-def]
    put(client, obs("o1"))
    doc = bundle(client, "Observation", [("bogus", "1"), ("code", "1988-5")])
    assert matches(doc) == ["o1"]
    outcomes = [e["resource"] for e in doc["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1 and outcomes[0]["resourceType"] == "OperationOutcome"
    assert "bogus" in str(outcomes[0]["issue"])
    # search.html: the self link SHALL carry the parameters that were actually used
    used = [k for k, _ in parse_qsl(urlsplit(self_link(doc)).query)]
    assert "code" in used and "bogus" not in used
    r = client.get("/fhir/Observation", params={"bogus": "1"}, headers={"prefer": "handling=strict", "accept": "application/fhir+json"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


# --- research parameters --------------------------------------------------------------------


def test_research_parameters(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "ResearchStudy", "id": "ra", "status": "active",
                 "condition": [{"coding": [{"system": SNOMED, "code": "69896004", "display": "Rheumatoid arthritis"}]}],
                 "enrollment": [{"reference": "Group/ra-arm"}]})
    put(client, {"resourceType": "ResearchStudy", "id": "psa", "status": "active",
                 "condition": [{"coding": [{"system": SNOMED, "code": "156370009"}]}]})
    for p in ("p1", "p2", "p3"):
        put(client, {"resourceType": "Patient", "id": p})
    put(client, {"resourceType": "ResearchSubject", "id": "s1", "status": "on-study",
                 "study": {"reference": "ResearchStudy/ra"}, "individual": {"reference": "Patient/p1"}})
    put(client, {"resourceType": "ResearchSubject", "id": "s2", "status": "on-study",
                 "study": {"reference": "ResearchStudy/psa"}, "individual": {"reference": "Patient/p2"}})
    put(client, {"resourceType": "AdverseEvent", "id": "ae", "actuality": "actual", "subject": {"reference": "Patient/p1"},
                 "study": [{"reference": "ResearchStudy/ra"}]})
    for p in ("p1", "p2", "p3"):
        put(client, obs(f"o-{p}", subject={"reference": f"Patient/{p}"}))
    put(client, {"resourceType": "MedicationAdministration", "id": "ma", "status": "completed",
                 "medicationCodeableConcept": {"text": "tocilizumab"}, "subject": {"reference": "Patient/p1"},
                 "effectiveDateTime": "2024-02-01T10:00:00Z"})

    assert ids(client, "ResearchStudy", f"condition={SNOMED}|69896004") == {"ra"}
    assert ids(client, "ResearchStudy", "enrollment=Group/ra-arm") == {"ra"}
    assert ids(client, "ResearchSubject", "study=ResearchStudy/ra") == {"s1"}
    assert ids(client, "AdverseEvent", "study=ResearchStudy/ra") == {"ae"}
    by_study = ids(client, "Observation", "study=ResearchStudy/ra")
    by_chain = ids(client, "Observation", "patient._has:ResearchSubject:individual:study=ResearchStudy/ra")
    assert by_study == by_chain == {"o-p1"}
    assert ids(client, "Observation", "study=ResearchStudy/ra,ResearchStudy/psa") == {"o-p1", "o-p2"}
    assert ids(client, "MedicationAdministration", "study=ResearchStudy/ra") == {"ma"}
    assert ids(client, "Patient", "_has:ResearchSubject:individual:study=ResearchStudy/psa") == {"p2"}
