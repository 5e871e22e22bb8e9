"""Stored derived outputs (contract §5) on SQLite and PostgreSQL: outputs that are no longer
produced are deleted, never left as if valid; the Measures that MeasureReports point at
resolve in every case — at start-up, after ``trialfhir migrate``, after a derivation, with
non-default settings, and after someone deletes one.

Through the public routes (``client`` fixture: a clean store per test) unless the case is
about start-up, which needs a fresh database and app of its own.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from typing import Any

import pytest

from mappers import codes, ids
from service.derivation.catalog import INPUT_ENDPOINTS, OUTPUTS, SAFETY_CODE, Summary

RA = codes.RA
STUDY = "BM-CMSC-RA"
SID = ids.study_id(STUDY)
MEASURE_BASE = "http://trialfhir.org/fhir/Measure"
#: Every Measure a derivation can point at, whatever the study settings.
ALL_MEASURE_CODES = {o.code for o in OUTPUTS if o.summary is not Summary.NONE} | {e.code for e in INPUT_ENDPOINTS} | {SAFETY_CODE}


def _domain(client: Any) -> Any:
    from service.domain.service import DomainService

    state = client.app.state
    return DomainService(state.store.engine, state.store, state.bundles, "http://testserver/fhir")


@pytest.fixture()
def demo(client: Any) -> Any:
    from service.domain.demo import load_demo

    load_demo(_domain(client))
    return client


def endpoints(client: Any, study: str = STUDY) -> dict[str, Any]:
    r = client.get(f"/api/studies/{study}/endpoints")
    assert r.status_code == 200, r.text
    return r.json()


def bundle_resources(client: Any, study_id: str = SID) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/ResearchStudy/{study_id}/$endpoints")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json()["entry"]]


def total(client: Any, path: str, **params: str) -> int:
    r = client.get(f"/fhir/{path}", params={**params, "_total": "accurate", "_count": "1"})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def version(client: Any, key: str) -> str:
    r = client.get(f"/fhir/{key}")
    assert r.status_code == 200, (key, r.status_code)
    return str(r.json()["meta"]["versionId"])


def outputs_of(doc: dict[str, Any], subject: str) -> set[str]:
    """``Observation/{id}`` of every derived value of ``subject`` in an /api endpoints document."""
    s = next(x for x in doc["subjects"] if x["subject"] == subject)
    return {o["observation"] for v in s["visits"] for o in v["outputs"].values()}


def reports_of(doc: dict[str, Any], code: str) -> set[str]:
    return {b["measure_report"] for b in doc["summaries"]["binary"] + doc["summaries"]["continuous"] if b["code"] == code}


def _second_study(client: Any) -> str:
    """A one-subject study whose outputs must survive anything done to the demo's."""
    from schemas.trial import Assessment, Infusion, Study, Subject

    dom = _domain(client)
    code = "OTHER-1"
    dom.put_study(Study(code=code, title="another study", phase="phase-1"))
    dom.put_subject(Subject(study_code=code, subject_code="S01", sex="female", consent_date=date(2024, 1, 5)))
    dom.put_infusion(Infusion(study_code=code, subject_code="S01", infusion_code="W0", start="2024-01-15T09:00:00+01:00", dose_value=D(1)))
    for measure, value, unit in (("tjc28", "8", "{#}"), ("sjc28", "5", "{#}"), ("esr", "30", "mm/h"), ("ptga", "6", "{score}")):
        dom.put_assessment(Assessment(study_code=code, subject_code="S01", visit_name="BL", effective=date(2024, 1, 14), measure=measure, value=D(value), unit=unit))  # type: ignore[arg-type]
    return code


# ---------------------------------------------------------------------------------------------
# stale outputs
# ---------------------------------------------------------------------------------------------


def test_a_subject_removed_from_the_study_loses_its_stored_outputs(demo: Any) -> None:
    other = _second_study(demo)
    other_doc = endpoints(demo, other)
    other_das = f"Observation/{ids.make_id(other, 'S01', 'BL', 'das28-esr')}"
    assert other_doc["stored"]["created"] > 0 and version(demo, other_das) == "1"
    first = endpoints(demo)
    s06 = outputs_of(first, "S06")
    assert len(s06) == 11 + 5 * 19 and all(version(demo, key) == "1" for key in sorted(s06)[:5])
    other_acr20 = 5  # the other study's subject, W4 … W24
    assert total(demo, "Observation", code=f"{RA}|acr20") == 6 * 5 + other_acr20

    research_subject = demo.get(f"/fhir/ResearchSubject/{ids.research_subject_id(STUDY, 'S06')}").json()
    assert demo.delete(f"/fhir/ResearchSubject/{research_subject['id']}").status_code in (200, 204)
    doc = endpoints(demo)
    assert set(doc["stored"]["deleted"]) == s06  # every output of S06, and nothing else
    assert "S06" not in {s["subject"] for s in doc["subjects"]}
    for key in sorted(s06):
        assert demo.get(f"/fhir/{key}").status_code == 410, key
    assert total(demo, "Observation", code=f"{RA}|acr20") == 5 * 5 + other_acr20
    history = demo.get(f"/fhir/{sorted(s06)[0]}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT"]  # the served version is kept
    # the cohort summaries now run over 5 subjects, in the same MeasureReport (a new version)
    w16 = f"MeasureReport/{ids.make_id(STUDY, 'acr20', 'W16')}"
    report = demo.get(f"/fhir/{w16}").json()
    assert report["meta"]["versionId"] == "2" and report["group"][0]["population"][0]["count"] == 5
    # the other study is untouched
    assert version(demo, other_das) == "1" and endpoints(demo, other)["stored"]["deleted"] == []

    # the subject comes back: the same ids again (a version after the deleted one), never a duplicate
    research_subject.pop("meta", None)
    assert demo.put(f"/fhir/ResearchSubject/{research_subject['id']}", json=research_subject).status_code in (200, 201)
    back = endpoints(demo)
    assert back["stored"]["created"] == len(s06) and back["stored"]["deleted"] == []
    assert outputs_of(back, "S06") == s06 and version(demo, sorted(s06)[0]) == "3"
    assert total(demo, "Observation", code=f"{RA}|acr20") == 6 * 5 + other_acr20


def test_an_input_that_disappears_leaves_its_output_without_a_value(demo: Any) -> None:
    endpoints(demo)
    das_crp = f"Observation/{ids.make_id(STUDY, 'S01', 'W16', 'das28-crp')}"
    das_esr = f"Observation/{ids.make_id(STUDY, 'S02', 'W8', 'das28-esr')}"
    assert "valueQuantity" in demo.get(f"/fhir/{das_crp}").json()
    # deleted input: S01's W16 CRP
    assert demo.delete(f"/fhir/Observation/{ids.observation_id(STUDY, 'S01', 'W16', 'crp')}").status_code in (200, 204)
    # entered-in-error input: S02's W8 ESR
    esr_id = ids.observation_id(STUDY, "S02", "W8", "esr")
    esr = demo.get(f"/fhir/Observation/{esr_id}").json()
    esr["status"] = "entered-in-error"
    assert demo.put(f"/fhir/Observation/{esr_id}", json=esr).status_code == 200
    doc = endpoints(demo)
    assert doc["stored"]["deleted"] == []  # the subject × visit × code still exists: updated, not deleted
    for key, missing in ((das_crp, "CRP"), (das_esr, "ESR")):
        now = demo.get(f"/fhir/{key}").json()
        assert now["meta"]["versionId"] == "2" and now["status"] == "final"
        assert "valueQuantity" not in now and now["dataAbsentReason"]["coding"][0]["code"] == "unknown"
        assert missing in now["note"][0]["text"]
        refs = {r["reference"] for r in now.get("derivedFrom", [])}
        assert f"Observation/{ids.observation_id(STUDY, 'S01', 'W16', 'crp')}" not in refs and f"Observation/{esr_id}" not in refs


def test_outputs_no_longer_reported_are_deleted(demo: Any) -> None:
    first = endpoints(demo)
    bool_2011 = {o["observation"] for s in first["subjects"] for v in s["visits"] for c, o in v["outputs"].items() if c == "boolean-remission-2011"}
    bool_2011_reports = reports_of(first, "boolean-remission-2011")
    w12 = {o["observation"] for s in first["subjects"] for v in s["visits"] if v["visit"] == "W12" for o in v["outputs"].values()}
    w12_reports = {b["measure_report"] for b in first["summaries"]["binary"] + first["summaries"]["continuous"] if b["visit"] == "W12"}
    assert len(bool_2011) == 36 and len(bool_2011_reports) == 6 and len(w12) == 6 * 19

    # the study stops reporting the 2011 Boolean remission (a study setting, contract §3)
    study = demo.get(f"/api/studies/{STUDY}").json()
    study["settings"]["boolean_remission"] = ["2022"]
    assert demo.put(f"/api/studies/{STUDY}", json=study).status_code in (200, 201)
    doc = endpoints(demo)
    assert set(doc["stored"]["deleted"]) == bool_2011 | bool_2011_reports
    assert total(demo, "Observation", code=f"{RA}|boolean-remission-2011") == 0
    assert total(demo, "MeasureReport", identifier=f"http://trialfhir.org/fhir/sid/derived|{STUDY}|boolean-remission-2011|W16") == 0
    assert total(demo, "Observation", code=f"{RA}|boolean-remission-2022") == 36

    # ... and drops W12 from its schedule: W12's outputs and reports go, its values are reported unused
    study["schedule"] = [v for v in study["schedule"] if v["name"] != "W12"]
    assert demo.put(f"/api/studies/{STUDY}", json=study).status_code in (200, 201)
    doc = endpoints(demo)
    w12_now = {o for o in w12 if not o.endswith("-boolean-remission-2011")}
    w12_reports_now = {r for r in w12_reports if "boolean-remission-2011" not in r}
    assert set(doc["stored"]["deleted"]) == w12_now | w12_reports_now
    assert all(demo.get(f"/fhir/{key}").status_code == 410 for key in sorted(w12_now)[:10])
    assert any("outside every visit window" in u["reason"] for u in doc["unused"])
    # a third derivation has nothing left to delete
    assert endpoints(demo)["stored"] == {"created": 0, "updated": 0, "unchanged": endpoints(demo)["stored"]["unchanged"], "deleted": []}


def test_store_without_a_study_deletes_nothing(demo: Any) -> None:
    """``DerivationService.store(items)`` (no study) only writes what it is given."""
    from service.derivation.service import DerivationService, derive, resources

    endpoints(demo)
    service = DerivationService(_domain(demo))
    res = resources(derive(service.engine, SID))
    stored = service.store(res.observations[:10])
    assert stored.deleted == [] and stored.unchanged == 10
    assert total(demo, "Observation", code=f"{RA}|acr20") == 30


# ---------------------------------------------------------------------------------------------
# Measures resolve in every case
# ---------------------------------------------------------------------------------------------


def assert_resolves(client: Any, canonical: str) -> None:
    """``MeasureReport.measure`` resolves: by canonical URL (search) and as Measure/{code}."""
    found = client.get("/fhir/Measure", params={"url": canonical}).json()
    assert [e["resource"]["url"] for e in found.get("entry", [])] == [canonical], canonical
    code = canonical.rsplit("/", 1)[1]
    read = client.get(f"/fhir/Measure/{code}")
    assert read.status_code == 200 and read.json()["url"] == canonical and read.json()["status"] == "active"


def test_measures_are_published_at_start_up_before_any_study(backend: str, databases: Any) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings
    from service.derivation.service import publish_measures

    app = create_app(Settings.from_env(database_url=databases.url(backend, "measures")))
    with TestClient(app, base_url="http://testserver") as client:
        assert total(client, "ResearchStudy") == 0
        for code in sorted(ALL_MEASURE_CODES):
            assert_resolves(client, f"{MEASURE_BASE}/{code}")
        assert total(client, "Measure") == len(ALL_MEASURE_CODES)
        # a study created through /api and derived points at exactly these Measures
        from service.domain.demo import load_demo

        state = client.app.state
        from service.domain.service import DomainService

        load_demo(DomainService(state.store.engine, state.store, state.bundles, "http://testserver/fhir"))
        reports = [r for r in bundle_resources(client) if r["resourceType"] == "MeasureReport"]
        assert {r["measure"] for r in reports} <= {f"{MEASURE_BASE}/{c}" for c in ALL_MEASURE_CODES}
        assert total(client, "Measure") == len(ALL_MEASURE_CODES)
        assert all(version(client, f"Measure/{c}") == "1" for c in sorted(ALL_MEASURE_CODES))  # published once, never rewritten
        again = publish_measures(state.store.engine)  # a restart writes nothing
        assert (again.created, again.updated, again.unchanged) == (0, 0, len(ALL_MEASURE_CODES))


def test_trialfhir_migrate_publishes_the_measures(backend: str, databases: Any) -> None:
    from service.cli import _migrate
    from service.config import Settings
    from service.db.engine import make_engine, read_transaction
    from service.derivation import queries
    from service.derivation.reading import loads

    url = databases.url(backend, "migrate")
    _migrate(Settings.from_env(database_url=url))
    _migrate(Settings.from_env(database_url=url))  # again: a no-op
    engine = make_engine(url, pool_size=1)
    try:
        with read_transaction(engine) as conn:
            rows = list(queries.by_ids(conn, "Measure", ALL_MEASURE_CODES))
    finally:
        engine.dispose()
    assert {loads(r.content)["url"] for r in rows} == {f"{MEASURE_BASE}/{c}" for c in ALL_MEASURE_CODES}
    assert {r.version_id for r in rows} == {1}


def test_every_measure_report_measure_resolves(demo: Any) -> None:
    reports = [r for r in bundle_resources(demo) if r["resourceType"] == "MeasureReport"]
    # per visit: binary Boolean remission ×2, continuous DAS28 ×2, SDAI, CDAI, ratio, 3 biomarkers;
    # after BL also ACR ×3 and HAQ MCID (binary), HAQ and pain changes (continuous); + safety
    assert len(reports) == 6 * (2 + 4 + 1 + 3) + 5 * (3 + 1 + 2) + 1
    for canonical in sorted({r["measure"] for r in reports}):
        assert_resolves(demo, canonical)
    # as stored and searched later, too
    stored = demo.get("/fhir/MeasureReport", params={"_count": "1000"}).json()
    assert {e["resource"]["measure"] for e in stored["entry"]} == {r["measure"] for r in reports}
    # with other settings (2022 Boolean remission only, ESR as reactant)
    study = demo.get(f"/api/studies/{STUDY}").json()
    study["settings"].update({"boolean_remission": ["2022"], "acr_acute_phase_reactant": "esr"})
    assert demo.put(f"/api/studies/{STUDY}", json=study).status_code in (200, 201)
    for canonical in sorted({r["measure"] for r in bundle_resources(demo) if r["resourceType"] == "MeasureReport"}):
        assert_resolves(demo, canonical)
    # a Measure deleted by someone is published again by the next derivation
    assert demo.delete("/fhir/Measure/acr20").status_code in (200, 204)
    assert demo.get("/fhir/Measure/acr20").status_code == 410
    bundle_resources(demo)
    assert_resolves(demo, f"{MEASURE_BASE}/acr20")
