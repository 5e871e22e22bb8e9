"""The trial domain API (/api) through a live server, the CSV importer, and the demo study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import FHIR_JSON, unique

from service.domain.router import AE_EXAMPLE, ASSESSMENT_EXAMPLE, INFUSION_EXAMPLE, STUDY_EXAMPLE, SUBJECT_EXAMPLE


def _study(code: str) -> dict:
    return {**STUDY_EXAMPLE, "code": code}


def _setup(api: httpx.Client, code: str) -> None:
    assert api.post("/api/studies", json=_study(code)).status_code == 201
    for subject in ("S01", "S02"):
        r = api.post(f"/api/studies/{code}/subjects", json={**SUBJECT_EXAMPLE, "study_code": code, "subject_code": subject})
        assert r.status_code == 201, r.text
    r = api.post(f"/api/studies/{code}/infusions", json={**INFUSION_EXAMPLE, "study_code": code})
    assert r.status_code == 201, r.text


@pytest.fixture()
def api(live_server):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


def test_entities_round_trip_through_fhir(api: httpx.Client, live_server) -> None:  # type: ignore[no-untyped-def]
    code = unique("ST").upper()
    _setup(api, code)
    assert api.get(f"/api/studies/{code}").json()["title"] == STUDY_EXAMPLE["title"]
    assert [s["subject_code"] for s in api.get(f"/api/studies/{code}/subjects").json()] == ["S01", "S02"]
    assert api.get(f"/api/studies/{code}/subjects/S01/infusions/W0").json()["lot"] == "LOT-001"
    ae = {**AE_EXAMPLE, "study_code": code}
    assert api.post(f"/api/studies/{code}/adverse-events", json=ae).status_code == 201
    assert api.get(f"/api/studies/{code}/subjects/S01/adverse-events/AE1").json()["term"] == "Headache"
    # the same data is FHIR: the study's Group lists both subjects, the AE points at the study
    rs = httpx.get(f"{live_server.base}/ResearchStudy?identifier={code}").json()
    assert rs["entry"][0]["resource"]["resourceType"] == "ResearchStudy"
    group_ref = rs["entry"][0]["resource"]["enrollment"][0]["reference"]
    group = httpx.get(f"{live_server.base}/{group_ref}").json()
    assert len(group["member"]) == 2


def test_assessments_are_idempotent_on_business_keys(api: httpx.Client, live_server) -> None:  # type: ignore[no-untyped-def]
    code = unique("ST").upper()
    _setup(api, code)
    body = {**ASSESSMENT_EXAMPLE, "study_code": code}
    first = api.post(f"/api/studies/{code}/assessments", json=body)
    assert first.status_code == 201 and first.headers["x-changed"] == "true"
    again = api.post(f"/api/studies/{code}/assessments", json=body)
    assert again.status_code == 200 and again.headers["x-changed"] == "false"
    corrected = api.post(f"/api/studies/{code}/assessments", json={**body, "value": "11.0"})
    assert corrected.status_code == 200 and corrected.headers["x-changed"] == "true"
    listed = [a for a in api.get(f"/api/studies/{code}/assessments").json() if a["measure"] == "crp"]
    assert len(listed) == 1 and listed[0]["value"] == "11.0"
    # one Observation with two versions — never a duplicate
    obs = httpx.get(f"{live_server.base}/Observation?subject:Patient.identifier=http://trialfhir.org/fhir/sid/study/{code}/subject|S01&code=http://loinc.org|1988-5").json()
    assert len(obs["entry"]) == 1
    assert obs["entry"][0]["resource"]["meta"]["versionId"] == "2"


def test_hospital_observations_show_up_in_the_domain_view(api: httpx.Client, live_server) -> None:  # type: ignore[no-untyped-def]
    code = unique("ST").upper()
    _setup(api, code)
    pid = httpx.get(f"{live_server.base}/Patient?identifier=http://trialfhir.org/fhir/sid/study/{code}/subject|S02").json()["entry"][0]["resource"]["id"]
    hospital = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4537-7", "display": "ESR"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-02-12T08:30:00+03:30",
        "valueQuantity": {"value": 31, "unit": "mm/h", "system": "http://unitsofmeasure.org", "code": "mm/h"},
    }
    assert httpx.post(f"{live_server.base}/Observation", json=hospital, headers=FHIR_JSON).status_code == 201
    esr = [a for a in api.get(f"/api/studies/{code}/assessments").json() if a["measure"] == "esr"]
    assert esr and esr[0]["subject_code"] == "S02" and esr[0]["value"] == "31" and esr[0]["unit"] == "mm/h"


def test_errors_are_problem_details(api: httpx.Client) -> None:
    missing = api.get("/api/studies/NOPE")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["status"] == 404 and "NOPE" in missing.json()["detail"]
    bad = api.post("/api/studies", json={"code": "X"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    code = unique("ST").upper()
    _setup(api, code)
    wrong_unit = api.post(f"/api/studies/{code}/assessments", json={**ASSESSMENT_EXAMPLE, "study_code": code, "unit": "mmol/L"})
    assert wrong_unit.status_code == 422 and "mmol/L" in wrong_unit.text
    unknown_subject = api.post(f"/api/studies/{code}/assessments", json={**ASSESSMENT_EXAMPLE, "study_code": code, "subject_code": "S99"})
    assert unknown_subject.status_code == 404
    unknown_visit = api.post(f"/api/studies/{code}/assessments", json={**ASSESSMENT_EXAMPLE, "study_code": code, "visit_name": "W99"})
    assert unknown_visit.status_code == 422 and "W99" in unknown_visit.text


def test_openapi_documents_every_api_route_with_examples(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    api_paths = {p: ops for p, ops in doc["paths"].items() if p.startswith("/api/")}
    assert "/api/studies/{study_code}/assessments:import" in api_paths
    for path, ops in api_paths.items():
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
            body = op.get("requestBody")
            if body and method in ("post", "put"):
                content = body["content"]
                media = next(iter(content.values()))
                assert media.get("examples") or media.get("example"), (method, path)
    assert api.get("/docs").status_code == 200


CSV_WITH_ERRORS = """subject,visit,date,tjc28,sjc28,crp [mmol/L],esr [mm/h],pain [mm]
S01,BL,2024-01-14,12,9,,38,70
S01,W4,2024-02-12,10,8,,30,60
S99,W8,2024-03-11,1,1,,1,1
S01,W4,2024-02-12,1,1,,1,1
S01,W8,2024-05-11,1,1,,1,1
S02,W12,2024-04-08,8,6,,20,500
"""


def test_csv_import_reports_every_error_and_writes_nothing(api: httpx.Client) -> None:
    code = unique("ST").upper()
    _setup(api, code)
    before = api.get(f"/api/studies/{code}/assessments").json()
    # a unit that cannot be a CRP unit is a header-level problem: reported, nothing read
    r = api.post(f"/api/studies/{code}/assessments:import", content=CSV_WITH_ERRORS.replace(",,", ",1,"), headers={"content-type": "text/csv"})
    report = r.json()
    assert r.status_code == 422 and not report["valid"] and report["written"] == 0
    reasons = {(e["row"], e["column"]): e["reason"] for e in report["errors"]}
    assert any("mmol/L" in reason for (_, col), reason in reasons.items() if col and col.startswith("crp")), reasons
    text = CSV_WITH_ERRORS.replace("crp [mmol/L]", "crp [mg/L]")
    r = api.post(f"/api/studies/{code}/assessments:import", content=text, headers={"content-type": "text/csv"})
    report = r.json()
    assert r.status_code == 422 and report["written"] == 0
    by_row = {e["row"]: e for e in report["errors"]}
    assert "not enrolled" in by_row[4]["reason"] and by_row[4]["column"] == "subject"  # unknown subject
    assert "duplicate" in by_row[5]["reason"]  # duplicate subject x visit
    assert "outside the W8 window" in by_row[6]["reason"] and by_row[6]["column"] == "date"  # out of window
    assert by_row[7]["column"] == "pain [mm]" and "scale" in by_row[7]["reason"]  # off-scale value
    assert api.get(f"/api/studies/{code}/assessments").json() == before
    dry = api.post(f"/api/studies/{code}/assessments:import?dry_run=true", content=text, headers={"content-type": "text/csv"}).json()
    assert dry["dry_run"] and dry["written"] == 0
    partial = api.post(f"/api/studies/{code}/assessments:import?partial=true", content=text, headers={"content-type": "text/csv"}).json()
    assert partial["written"] == 8  # rows 2 and 3: tjc28, sjc28, esr and pain (crp left empty)
    assert len(api.get(f"/api/studies/{code}/assessments").json()) == len(before) + 8


def test_csv_import_cli(live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = unique("ST").upper()
    with httpx.Client(base_url=live_server.url, timeout=60) as api:
        _setup(api, code)
    good = tmp_path / "good.csv"
    good.write_text("subject,visit,date,tjc28,sjc28,crp [mg/dL]\nS01,BL,2024-01-15,12,9,1.42\nS02,BL,2024-01-07,8,4,0.9\n")
    exe = str(Path(sys.executable).parent / "trialfhir")
    env = dict(os.environ, TRIALFHIR_DATABASE_URL=live_server.database_url)
    out = subprocess.run([exe, "import-csv", code, str(good), "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"written": 0' in out.stdout
    out = subprocess.run([exe, "import-csv", code, str(good)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and '"written": 6' in out.stdout, out.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("subject,visit,date,tjc28\nS77,BL,2024-01-15,12\n")
    out = subprocess.run([exe, "import-csv", code, str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "row 2, column subject" in out.stderr


def test_demo_has_the_pilot_shape(databases, backend: str) -> None:  # type: ignore[no-untyped-def]
    from service.cli import _domain_service
    from service.config import Settings
    from service.db.migrate import upgrade
    from service.domain import demo

    settings = Settings.from_env(database_url=databases.url(backend, "demo"))
    engine, service = _domain_service(settings)
    try:
        upgrade(engine)
        service.get_study  # warm imports
        from service.search.registry import base_registry

        base_registry()
        assert demo.load_demo(service) is True
        assert demo.load_demo(service) is False  # present: not loaded twice
        subjects = service.list_subjects(demo.STUDY_CODE)
        infusions = service.list_infusions(demo.STUDY_CODE)
        assessments = service.list_assessments(demo.STUDY_CODE)
        aes = service.list_adverse_events(demo.STUDY_CODE)
    finally:
        engine.dispose()
    assert len(subjects) == 6
    assert sorted({(i.subject_code, i.infusion_code) for i in infusions}) == sorted((s.subject_code, w) for s in subjects for w in ("W0", "W4", "W8"))
    visits = {(a.subject_code, a.visit_name) for a in assessments}
    assert visits == {(s.subject_code, v) for s in subjects for v in ("BL", "W4", "W8", "W12", "W16", "W24")}
    measures = {a.measure.value for a in assessments}
    assert measures == {"tjc28", "sjc28", "ptga", "ega", "pain", "haq_di", "esr", "crp", "anti_ccp", "rf", "il10", "tnf_alpha", "il17a", "treg_pct", "th17_pct"}
    assert 3 <= len(aes) <= 8 and not any(ae.serious for ae in aes)
