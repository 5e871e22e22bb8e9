"""Bulk Data $export (system, Patient, Group), incremental and resumable, and $everything.

Every test runs on SQLite and PostgreSQL. In-process tests use their own app (its own
database and export folder) so they can change the export settings; the restart tests
run real ``trialfhir serve`` processes on one database and kill them with SIGKILL.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import clean_store, start_server

ASYNC = {"prefer": "respond-async", "accept": "application/fhir+json"}
FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
LOINC = "http://loinc.org"
RA = "http://trialfhir.org/fhir/CodeSystem/ra"


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bulk_app(backend: str, databases, tmp_path_factory):  # type: ignore[no-untyped-def]
    import logging

    from service.app import create_app
    from service.config import Settings

    export_dir = tmp_path_factory.mktemp("exports")
    app = create_app(
        Settings.from_env(
            database_url=databases.url(backend, "bulk"),
            extra={"TRIALFHIR_EXPORT_DIR": str(export_dir), "TRIALFHIR_EXPORT_POLL_SECONDS": "0.05"},
        )
    )
    logging.getLogger("trialfhir").setLevel(logging.WARNING)
    return app


@pytest.fixture()
def client(bulk_app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    clean_store(bulk_app)
    with TestClient(bulk_app, base_url="http://testserver") as c:
        yield c


@contextmanager
def bulk_settings(app: Any, **changes: Any) -> Iterator[Any]:
    """Run the app's export worker with other settings for the duration of a test."""
    bulk = app.state.bulk
    old = bulk.settings
    new = dataclasses.replace(old, **changes)
    bulk.worker.stop()
    bulk.settings = bulk.worker.settings = new
    bulk.worker.start()
    try:
        yield new
    finally:
        bulk.worker.stop()
        bulk.settings = bulk.worker.settings = old
        bulk.worker.start()


def put(client: Any, res: dict[str, Any]) -> dict[str, Any]:
    r = client.put(f"/fhir/{res['resourceType']}/{res['id']}", content=json.dumps(res), headers=FHIR)
    assert r.status_code in (200, 201), r.text
    return r.json()


def kick_off(client: Any, path: str, params: Any = None, headers: dict[str, str] | None = None, body: Any = None) -> str:
    h = dict(ASYNC, **(headers or {}))
    if body is not None:
        r = client.post(path, params=params, content=json.dumps(body), headers=dict(h, **{"content-type": "application/fhir+json"}))
    else:
        r = client.get(path, params=params, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    return r.headers["content-location"]


def wait(client: Any, status_url: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(status_url, headers={"accept": "application/json"})
        if r.status_code != 202:
            return r
        assert r.headers["x-progress"] and int(r.headers["retry-after"]) >= 1
        time.sleep(0.05)
    raise AssertionError(f"export {status_url} did not finish in {timeout} s")


def export(client: Any, path: str, params: Any = None, **kw: Any) -> dict[str, Any]:
    r = wait(client, kick_off(client, path, params, **kw))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def download(client: Any, manifest: dict[str, Any], kind: str = "output") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest[kind]:
        r = client.get(item["url"], headers={"accept": "application/fhir+ndjson"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = r.content.decode().splitlines()
        assert len(lines) == item["count"]
        assert r.content.endswith(b"\n")
        docs = [json.loads(line) for line in lines]
        assert all(d["resourceType"] == item["type"] for d in docs)
        out.setdefault(item["type"], []).extend(docs)
    return out


def ids(found: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {t: {d["id"] for d in docs} for t, docs in found.items()}


def obs(id: str, patient: str, code: str = "1988-5", system: str = LOINC, category: str = "laboratory", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2024-03-01T10:00:00Z",
        "valueQuantity": {"value": 4.5, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"},
    }
    body.update(extra)
    return body


def load_studies(client: Any) -> None:
    """Two studies (A: grp-a, B: grp-b) and a patient in neither."""
    for pid in ("pa1", "pa2", "pa3", "pb1", "px"):
        put(client, {"resourceType": "Patient", "id": pid, "name": [{"family": pid.upper()}]})
    put(client, {"resourceType": "Practitioner", "id": "doc1", "name": [{"family": "Who"}]})
    put(
        client,
        {
            "resourceType": "Group",
            "id": "grp-a",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/pa1"}},
                {"entity": {"reference": "Patient/pa2"}},
                {"entity": {"reference": "Patient/pa3"}, "inactive": True},
                {"entity": {"reference": "Patient/ghost"}},
                {"entity": {"reference": "Practitioner/doc1"}},
            ],
        },
    )
    put(client, {"resourceType": "Group", "id": "grp-b", "type": "person", "actual": True, "member": [{"entity": {"reference": "Patient/pb1"}}]})
    put(client, {"resourceType": "PlanDefinition", "id": "pd-a", "status": "active"})
    put(
        client,
        {
            "resourceType": "ResearchStudy",
            "id": "rs-a",
            "status": "active",
            "protocol": [{"reference": "PlanDefinition/pd-a"}],
            "enrollment": [{"reference": "Group/grp-a"}],
        },
    )
    put(client, {"resourceType": "ResearchStudy", "id": "rs-b", "status": "active", "enrollment": [{"reference": "Group/grp-b"}]})
    for sid, pid, study in (("rsub-a1", "pa1", "rs-a"), ("rsub-a2", "pa2", "rs-a"), ("rsub-b1", "pb1", "rs-b")):
        put(client, {"resourceType": "ResearchSubject", "id": sid, "status": "on-study", "study": {"reference": f"ResearchStudy/{study}"}, "individual": {"reference": f"Patient/{pid}"}})
    for mid in ("med-a", "med-b", "med-unused"):
        put(client, {"resourceType": "Medication", "id": mid, "code": {"coding": [{"system": RA, "code": "bm-cmsc"}]}})
    for maid, pid, med in (("ma-a1", "pa1", "med-a"), ("ma-b1", "pb1", "med-b")):
        put(
            client,
            {
                "resourceType": "MedicationAdministration",
                "id": maid,
                "status": "completed",
                "medicationReference": {"reference": f"Medication/{med}"},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": "2024-01-10T09:00:00Z",
            },
        )
    put(client, obs("obs-a1", "pa1"))
    put(client, obs("obs-a2", "pa2", category="exam"))
    put(client, obs("obs-a-der", "pa1", code="acr20", system=RA, category="survey", derivedFrom=[{"reference": "Observation/obs-a1"}]))
    put(client, obs("obs-b1", "pb1"))
    put(client, obs("obs-x", "px"))
    put(
        client,
        {
            "resourceType": "AdverseEvent",
            "id": "ae-a1",
            "actuality": "actual",
            "subject": {"reference": "Patient/pa1"},
            "study": [{"reference": "ResearchStudy/rs-a"}],
        },
    )
    put(client, {"resourceType": "Measure", "id": "meas-acr20", "status": "active", "url": "http://trialfhir.org/fhir/Measure/acr20"})
    put(client, {"resourceType": "Measure", "id": "meas-acr50", "status": "active", "url": "http://trialfhir.org/fhir/Measure/acr50"})
    put(
        client,
        {
            "resourceType": "MeasureReport",
            "id": "mr-a",
            "status": "complete",
            "type": "summary",
            "measure": "http://trialfhir.org/fhir/Measure/acr20",
            "subject": {"reference": "Group/grp-a"},
            "period": {"start": "2024-01-01", "end": "2024-12-31"},
        },
    )
    # as the derived endpoints store them: the study named only in the workflow-researchStudy extension
    put(
        client,
        {
            "resourceType": "MeasureReport",
            "id": "mr-a-ext",
            "extension": [
                {"url": "http://trialfhir.org/fhir/StructureDefinition/study-visit", "valueString": "W16"},
                {"url": "http://hl7.org/fhir/StructureDefinition/workflow-researchStudy", "valueReference": {"reference": "ResearchStudy/rs-a"}},
            ],
            "status": "complete",
            "type": "summary",
            "measure": "http://trialfhir.org/fhir/Measure/acr50",
            "period": {"start": "2024-01-01", "end": "2024-12-31"},
        },
    )


STUDY_A = {
    "Patient": {"pa1", "pa2"},
    "Group": {"grp-a"},
    "ResearchStudy": {"rs-a"},
    "PlanDefinition": {"pd-a"},
    "ResearchSubject": {"rsub-a1", "rsub-a2"},
    "Medication": {"med-a"},
    "MedicationAdministration": {"ma-a1"},
    "Observation": {"obs-a1", "obs-a2", "obs-a-der"},
    "AdverseEvent": {"ae-a1"},
    "MeasureReport": {"mr-a", "mr-a-ext"},
    "Measure": {"meas-acr20", "meas-acr50"},
}


# --- the flow ----------------------------------------------------------------------------------------


def test_system_export_round_trip(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    status_url = kick_off(client, "/fhir/$export")
    assert "/fhir/$export-status/" in status_url
    r = wait(client, status_url)
    assert r.status_code == 200 and "expires" in r.headers
    manifest = r.json()
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert manifest["requiresAccessToken"] is False
    assert manifest["transactionTime"].endswith("Z") and manifest["error"] == [] and manifest["deleted"] == []
    found = download(client, manifest)
    assert sum(len(v) for v in found.values()) == 29
    assert ids(found)["Observation"] == {"obs-a1", "obs-a2", "obs-a-der", "obs-b1", "obs-x"}
    # every line is the stored resource, byte for byte
    for rtype, docs in found.items():
        for d in docs:
            stored = client.get(f"/fhir/{rtype}/{d['id']}").json()
            assert d == stored
    raw = client.get(manifest["output"][0]["url"]).content.splitlines()[0]
    first = manifest["output"][0]
    assert raw == client.get(f"/fhir/{first['type']}/{json.loads(raw)['id']}").content


def test_group_export_is_exactly_one_study(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    manifest = export(client, "/fhir/Group/grp-a/$export")
    assert ids(download(client, manifest)) == STUDY_A
    errors = download(client, manifest, "error")["OperationOutcome"]
    text = " ".join(i["diagnostics"] for oo in errors for i in oo["issue"])
    assert "Patient/ghost" in text and "Practitioner/doc1" in text
    # the other study
    other = ids(download(client, export(client, "/fhir/Group/grp-b/$export")))
    assert other == {
        "Patient": {"pb1"},
        "Group": {"grp-b"},
        "ResearchStudy": {"rs-b"},
        "ResearchSubject": {"rsub-b1"},
        "Medication": {"med-b"},
        "MedicationAdministration": {"ma-b1"},
        "Observation": {"obs-b1"},
    }


def test_group_export_in_chunks(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A cohort larger than one statement's id list: a resource about two members in
    different chunks is exported once."""
    import service.bulk.scope as scope

    monkeypatch.setattr(scope, "CHUNK", 2)
    members = [f"m{i}" for i in range(5)]
    for pid in members:
        put(client, {"resourceType": "Patient", "id": pid})
        put(client, obs(f"o-{pid}", pid))
    put(client, obs("shared", "m0", performer=[{"reference": "Patient/m3"}]))
    put(client, {"resourceType": "Group", "id": "big", "type": "person", "actual": True, "member": [{"entity": {"reference": f"Patient/{p}"}} for p in members]})
    found = download(client, export(client, "/fhir/Group/big/$export"))
    assert [d["id"] for d in found["Observation"]].count("shared") == 1
    assert ids(found) == {"Patient": set(members), "Group": {"big"}, "Observation": {f"o-{p}" for p in members} | {"shared"}}


def test_patient_level_export(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    found = ids(download(client, export(client, "/fhir/Patient/$export")))
    assert found["Patient"] == {"pa1", "pa2", "pa3", "pb1", "px"}
    assert found["Observation"] == {"obs-a1", "obs-a2", "obs-a-der", "obs-b1", "obs-x"}
    assert found["MedicationAdministration"] == {"ma-a1", "ma-b1"}
    assert found["Group"] == {"grp-a", "grp-b"}
    assert "Medication" not in found and "ResearchStudy" not in found and "Practitioner" not in found
    only = ids(download(client, export(client, "/fhir/Patient/$export", {"_type": "Patient,AdverseEvent"})))
    assert only == {"Patient": {"pa1", "pa2", "pa3", "pb1", "px"}, "AdverseEvent": {"ae-a1"}}


def test_post_kickoff_with_parameters(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "patient", "valueReference": {"reference": "Patient/pa2"}},
        ],
    }
    found = ids(download(client, export(client, "/fhir/Group/grp-a/$export", body=body)))
    assert found == {"Patient": {"pa2"}, "Observation": {"obs-a2"}}


def test_kickoff_errors(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    r = client.get("/fhir/$export", headers={"accept": "application/fhir+json"})
    assert r.status_code == 400 and "respond-async" in r.text
    assert client.get("/fhir/$export", params={"_outputFormat": "text/csv"}, headers=ASYNC).status_code == 400
    assert client.get("/fhir/$export", params={"_since": "yesterday"}, headers=ASYNC).status_code == 400
    r = client.get("/fhir/$export", params={"_type": "Patient,Nonsense"}, headers=ASYNC)
    assert r.status_code == 400 and "Nonsense" in r.text and r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/fhir/Patient/$export", params={"_type": "Organization"}, headers=ASYNC)
    assert r.status_code == 400 and "compartment" in r.text
    assert client.get("/fhir/Group/nope/$export", headers=ASYNC).status_code == 404
    assert client.get("/fhir/$export", params={"_elements": "id"}, headers=ASYNC).status_code == 400
    assert client.get("/fhir/$export", params={"_typeFilter": "Observation?nonsense-param=1"}, headers=ASYNC).status_code == 400
    assert client.get("/fhir/$export", params={"includeAssociatedData": "LatestProvenanceResources"}, headers=ASYNC).status_code == 400
    assert client.get("/fhir/$export", headers=dict(ASYNC, accept="application/xml")).status_code == 406
    # lenient: the request runs, the problems go to the error file
    manifest = export(
        client,
        "/fhir/$export",
        {"_type": "Patient,Nonsense", "_typeFilter": "Patient?nonsense-param=1", "_elements": "id"},
        headers={"prefer": "respond-async, handling=lenient"},
    )
    assert set(ids(download(client, manifest))) == {"Patient"}
    issues = [i for oo in download(client, manifest, "error")["OperationOutcome"] for i in oo["issue"]]
    text = " ".join(i["diagnostics"] for i in issues)
    assert "Nonsense" in text and "nonsense-param" in text and "_elements" in text
    assert all(i["severity"] == "warning" for i in issues)
    # unknown jobs and files
    assert client.get("/fhir/$export-status/nope").status_code == 404
    assert client.delete("/fhir/$export-status/nope").status_code == 404
    assert client.get("/fhir/$export-file/nope/Patient-1-001.ndjson").status_code == 404
    job = manifest["output"][0]["url"].split("/")[-2]
    assert client.get(f"/fhir/$export-file/{job}/..%2F..%2Fsecret.ndjson").status_code == 404
    assert client.get(f"/fhir/$export-file/{job}/Other-9-001.ndjson").status_code == 404


def test_type_filter(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)

    def run(*filters: str, **params: str) -> dict[str, set[str]]:
        return ids(download(client, export(client, "/fhir/$export", {"_type": "Observation,Patient", "_typeFilter": list(filters), **params})))

    crp = f"Observation?code={LOINC}|1988-5"
    assert run(crp) == {"Observation": {"obs-a1", "obs-a2", "obs-b1", "obs-x"}, "Patient": {"pa1", "pa2", "pa3", "pb1", "px"}}
    # several filters for one type are ORed; a filter per type; comma-separated or repeated
    assert run(f"Observation?category=exam,Observation?code={RA}|acr20", "Patient?_id=pa1")["Observation"] == {"obs-a2", "obs-a-der"}
    assert run(f"Observation?category=exam,Observation?code={RA}|acr20", "Patient?_id=pa1")["Patient"] == {"pa1"}
    # a comma inside one filter's value (an OR there), bare or URL-quoted as smart-fetch sends it
    assert run("Observation?category=exam,survey")["Observation"] == {"obs-a2", "obs-a-der"}
    assert run("Observation?category=exam%2Csurvey")["Observation"] == {"obs-a2", "obs-a-der"}
    # chained and _has criteria work too (the whole search engine is behind _typeFilter)
    assert run("Observation?subject:Patient.name=PB1")["Observation"] == {"obs-b1"}
    assert run("Patient?_has:Observation:subject:category=exam")["Patient"] == {"pa2"}
    # Group export + _typeFilter
    group = ids(download(client, export(client, "/fhir/Group/grp-a/$export", {"_type": "Observation", "_typeFilter": "Observation?category=survey"})))
    assert group == {"Observation": {"obs-a-der"}}


def test_associated_provenance(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    put(client, {"resourceType": "Provenance", "id": "prov-a1", "target": [{"reference": "Observation/obs-a1"}], "recorded": "2024-03-01T10:00:00Z", "agent": [{"who": {"reference": "Practitioner/doc1"}}]})
    put(client, {"resourceType": "Provenance", "id": "prov-x", "target": [{"reference": "Observation/obs-x"}], "recorded": "2024-03-01T10:00:00Z", "agent": [{"who": {"reference": "Practitioner/doc1"}}]})
    plain = ids(download(client, export(client, "/fhir/Group/grp-a/$export")))
    assert "Provenance" not in plain
    found = ids(download(client, export(client, "/fhir/Group/grp-a/$export", {"includeAssociatedData": "RelevantProvenanceResources"})))
    assert found["Provenance"] == {"prov-a1"}
    system = ids(download(client, export(client, "/fhir/$export", {"_type": "Patient", "includeAssociatedData": "RelevantProvenanceResources"})))
    assert "Provenance" not in system  # no Provenance targets a Patient
    system = ids(download(client, export(client, "/fhir/$export", {"_type": "Observation", "includeAssociatedData": "RelevantProvenanceResources"})))
    assert system["Provenance"] == {"prov-a1", "prov-x"}


def test_files_are_split_and_counted(client, bulk_app) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p1"})
    for i in range(23):
        put(client, obs(f"o{i}", "p1"))
    with bulk_settings(bulk_app, file_max_resources=5, batch_size=7):
        manifest = export(client, "/fhir/$export", {"_type": "Observation"})
    counts = [item["count"] for item in manifest["output"]]
    assert counts == [5, 5, 5, 5, 3]
    assert len({item["url"] for item in manifest["output"]}) == 5
    assert ids(download(client, manifest))["Observation"] == {f"o{i}" for i in range(23)}


def test_status_while_running_then_cancel(client, bulk_app) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p1"})
    for i in range(40):
        put(client, obs(f"o{i}", "p1"))
    with bulk_settings(bulk_app, batch_size=2, batch_delay_ms=100) as s:
        status_url = kick_off(client, "/fhir/$export")
        seen = []
        for _ in range(100):
            r = client.get(status_url)
            assert r.status_code == 202
            assert r.headers["retry-after"] == "1"
            seen.append(r.headers["x-progress"])
            if "exporting" in seen[-1] and "(0 resources" not in seen[-1]:
                break
            time.sleep(0.05)
        assert any(p.startswith("exporting: ") for p in seen), seen
        job = status_url.rsplit("/", 1)[1]
        folder = s.export_dir / job
        assert folder.exists()
        r = client.delete(status_url)
        assert r.status_code == 202 and r.json()["resourceType"] == "OperationOutcome"
        assert client.get(status_url).status_code == 404
        assert client.delete(status_url).status_code == 404
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()
    # a completed export can be deleted too (the client is done with the files)
    manifest_url = kick_off(client, "/fhir/$export", {"_type": "Patient"})
    assert wait(client, manifest_url).status_code == 200
    assert client.delete(manifest_url).status_code == 202
    assert client.get(manifest_url).status_code == 404


def test_files_expire(client, bulk_app) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p1"})
    with bulk_settings(bulk_app, ttl_seconds=1.0) as s:
        status_url = kick_off(client, "/fhir/$export")
        manifest = wait(client, status_url).json()
        url = manifest["output"][0]["url"]
        assert client.get(url).status_code == 200
        folder = s.export_dir / status_url.rsplit("/", 1)[1]
        assert folder.exists()
        time.sleep(1.2)
        r = client.get(url)
        assert r.status_code == 410 and r.json()["resourceType"] == "OperationOutcome"
        assert client.get(status_url).status_code == 410
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists(), "the worker deletes expired files"


# --- consistency at transactionTime ----------------------------------------------------------------------


def test_export_reads_the_state_at_transaction_time(client, bulk_app) -> None:  # type: ignore[no-untyped-def]
    """Writes after the kick-off never leak into the export; the next _since export has them."""
    put(client, {"resourceType": "Patient", "id": "p1"})
    put(client, {"resourceType": "Patient", "id": "p2"})
    put(client, {"resourceType": "Group", "id": "g", "type": "person", "actual": True, "member": [{"entity": {"reference": "Patient/p1"}}]})
    put(client, obs("keep", "p1"))
    put(client, obs("change", "p1", note=[{"text": "before"}]))
    put(client, obs("move", "p1"))
    put(client, obs("remove", "p1"))
    bulk = bulk_app.state.bulk
    bulk.worker.stop()  # hold the jobs back: they run after the writes below
    try:
        system_url = kick_off(client, "/fhir/$export")
        group_url = kick_off(client, "/fhir/Group/g/$export")
        put(client, obs("change", "p1", note=[{"text": "after"}]))
        put(client, obs("move", "p2"))  # moved out of the group after T
        assert client.delete("/fhir/Observation/remove").status_code == 204
        put(client, obs("new", "p1"))
        put(client, {"resourceType": "Group", "id": "g", "type": "person", "actual": True, "member": [{"entity": {"reference": "Patient/p2"}}]})
    finally:
        bulk.worker.start()
    system = wait(client, system_url).json()
    found = download(client, system)
    by_id = {d["id"]: d for d in found["Observation"]}
    assert set(by_id) == {"keep", "change", "move", "remove"}
    assert by_id["change"]["note"][0]["text"] == "before" and by_id["change"]["meta"]["versionId"] == "1"
    assert by_id["move"]["subject"]["reference"] == "Patient/p1"
    assert ids(found)["Group"] == {"g"} and found["Group"][0]["member"][0]["entity"]["reference"] == "Patient/p1"
    group = ids(download(client, wait(client, group_url).json()))
    assert group == {"Patient": {"p1"}, "Group": {"g"}, "Observation": {"keep", "change", "move", "remove"}}
    # the incremental export from that transactionTime has exactly the later changes
    later = export(client, "/fhir/$export", {"_since": system["transactionTime"]})
    changed = download(client, later)
    assert ids(changed) == {"Observation": {"change", "move", "new"}, "Group": {"g"}}
    deleted = download(client, later, "deleted")["Bundle"]
    assert [e["request"] for b in deleted for e in b["entry"]] == [{"method": "DELETE", "url": "Observation/remove"}]
    assert all(b["type"] == "transaction" for b in deleted)
    # the Group export _since T: p2 joined after T, so all of p2's data comes (p2 and the
    # Observation moved to p2), with the changed Group; p1 left, so nothing more of p1's
    g_later = export(client, "/fhir/Group/g/$export", {"_since": system["transactionTime"]})
    assert ids(download(client, g_later)) == {"Group": {"g"}, "Patient": {"p2"}, "Observation": {"move"}}
    assert download(client, g_later, "deleted") == {}


def test_kickoff_waits_for_writes_in_flight(client, bulk_app) -> None:  # type: ignore[no-untyped-def]
    """The write fence: a write that took its lastUpdated before the kick-off but commits
    after it is in the export (the kick-off waited for it), so no later _since misses it."""
    from service.db.engine import run_in_transaction
    from service.rest.service import pending_write
    from service.storage.repository import ResourceRepository

    put(client, {"resourceType": "Patient", "id": "p1"})
    engine = bulk_app.state.store.engine
    written = threading.Event()
    result: dict[str, int] = {}
    committed: dict[str, float] = {}

    def slow_write() -> None:
        def work(conn: Any) -> int:
            w = pending_write("Observation", "inflight", obs("inflight", "p1"), "PUT", None)
            ResourceRepository(conn).write_many([w])
            written.set()
            time.sleep(1.5)
            committed["at"] = time.monotonic()  # the commit follows right after
            return w.last_updated_us

        result["lu"] = run_in_transaction(engine, work)

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert written.wait(10)
    status_url = kick_off(client, "/fhir/$export", {"_type": "Observation"})
    kicked_off = time.monotonic()
    writer.join()
    manifest = wait(client, status_url).json()
    assert kicked_off >= committed["at"], "the kick-off must wait until the write in flight commits"
    from service.search.indexing import date_range

    t_us = date_range(manifest["transactionTime"])[0]  # type: ignore[index]
    assert result["lu"] < t_us
    assert ids(download(client, manifest)) == {"Observation": {"inflight"}}


def test_since_chain_with_racing_writes(client, bulk_app) -> None:  # type: ignore[no-untyped-def]
    """Exports chained by _since while writers race them: each export is exactly the
    versions current at its transactionTime changed after the previous one, and replaying
    the chain gives the final state — nothing leaks in, nothing is missed."""
    from service.db.schema import resource, resource_version

    store = bulk_app.state.store
    put(client, {"resourceType": "Patient", "id": "p1"})
    names = [f"r{i}" for i in range(25)]
    stop = threading.Event()
    errors: list[BaseException] = []
    counter = iter(range(10**9))
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            rid = rnd.choice(names)
            try:
                if rnd.random() < 0.15:
                    store.delete("Observation", rid)
                else:
                    with lock:
                        n = next(counter)
                    store.update("Observation", rid, obs(rid, "p1", note=[{"text": f"v{n}"}]), None)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 409:
                    errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    manifests = []
    since: str | None = None
    try:
        for _ in range(4):
            time.sleep(0.3)
            params = {"_type": "Observation"}
            if since:
                params["_since"] = since
            m = export(client, "/fhir/$export", params)
            manifests.append((since, m))
            since = m["transactionTime"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    m = export(client, "/fhir/$export", {"_type": "Observation", "_since": since})
    manifests.append((since, m))

    from service.search.indexing import date_range

    def us(text: str | None) -> int | None:
        return date_range(text)[0] if text else None  # type: ignore[index]

    with store.engine.connect() as conn:
        history = conn.execute(
            select(resource_version.c.id, resource_version.c.version_id, resource_version.c.last_updated_us, resource_version.c.deleted)
            .where(resource_version.c.resource_type == "Observation")
        ).all()
        current = {r.id: r.version_id for r in conn.execute(select(resource.c.id, resource.c.version_id).where(resource.c.resource_type == "Observation", resource.c.deleted == False)).all()}  # noqa: E712
    assert len(history) > 50, "the writers must have raced the exports"
    replay: dict[str, str] = {}
    for since_text, manifest in manifests:
        t_us, s_us = us(manifest["transactionTime"]), us(since_text)
        expected_out: dict[str, int] = {}
        expected_gone: set[str] = set()
        latest: dict[str, tuple[int, int, bool]] = {}
        for rid, vid, lu, deleted in history:
            if lu <= t_us and (rid not in latest or vid > latest[rid][0]):
                latest[rid] = (vid, lu, deleted)
        for rid, (vid, lu, deleted) in latest.items():
            if s_us is not None and lu <= s_us:
                continue
            if deleted:
                if s_us is not None:
                    expected_gone.add(rid)
            else:
                expected_out[rid] = vid
        out = download(client, manifest).get("Observation", [])
        got = {d["id"]: int(d["meta"]["versionId"]) for d in out}
        assert len(got) == len(out), "a resource appears once per export"
        assert got == expected_out
        gone = {e["request"]["url"].split("/")[1] for b in download(client, manifest, "deleted").get("Bundle", []) for e in b["entry"]}
        assert gone == expected_gone
        for d in out:
            assert us(d["meta"]["lastUpdated"]) <= t_us
        for rid in gone:
            replay.pop(rid, None)
        replay.update({rid: str(v) for rid, v in got.items()})
    assert replay == {rid: str(v) for rid, v in current.items()}


# --- restarts (live servers, SIGKILL) ---------------------------------------------------------------


def _load_live(base: str, n: int) -> None:
    entries = [{"resource": {"resourceType": "Patient", "id": "p0"}, "request": {"method": "PUT", "url": "Patient/p0"}}]
    for i in range(n):
        res = obs(f"o{i}", "p0")
        entries.append({"resource": res, "request": {"method": "PUT", "url": f"Observation/o{i}"}})
    for start in range(0, len(entries), 500):
        r = httpx.post(base, json={"resourceType": "Bundle", "type": "transaction", "entry": entries[start : start + 500]}, headers=FHIR, timeout=120)
        assert r.status_code == 200, r.text


def _live_env(export_dir: Path, **extra: str) -> dict[str, str]:
    env = {"TRIALFHIR_EXPORT_DIR": str(export_dir), "TRIALFHIR_EXPORT_POLL_SECONDS": "0.1", "TRIALFHIR_EXPORT_LEASE_SECONDS": "2"}
    env.update(extra)
    return env


def _poll(url: str, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(url, timeout=30)
        if r.status_code != 202:
            return r
        time.sleep(0.1)
    raise AssertionError("export did not finish")


def _run_until_checkpointed(server: Any, n: int) -> str:
    r = httpx.get(server.base + "/$export", headers=ASYNC, timeout=30)
    assert r.status_code == 202, r.text
    status_url = r.headers["content-location"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = httpx.get(status_url, timeout=30)
        assert s.status_code == 202, "the job must still be running when the server is killed"
        progress = s.headers["x-progress"]
        if progress.startswith("exporting") and "(0 resources" not in progress:
            return status_url
        time.sleep(0.05)
    raise AssertionError("the export never started")


def _check_complete(manifest: dict[str, Any], n: int) -> None:
    """Every resource exactly once, every file as long as the manifest says, no URL twice."""
    urls = [item["url"] for item in manifest["output"]]
    assert len(urls) == len(set(urls))
    seen: list[str] = []
    for item in manifest["output"]:
        if item["type"] == "Measure":  # the endpoint Measures every store publishes itself
            continue
        body = httpx.get(item["url"], timeout=60)
        assert body.status_code == 200
        lines = body.content.splitlines()
        assert len(lines) == item["count"]
        seen.extend(json.loads(line)["id"] for line in lines)
    assert len(seen) == len(set(seen)) == n + 1


@pytest.mark.slow
def test_restart_during_a_job_resumes_it(backend: str, databases, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = databases.url(backend, "bulkrestart")
    export_dir = tmp_path / "exports"
    n = 1200
    a = start_server(url, tmp_path, extra_env=_live_env(export_dir, TRIALFHIR_EXPORT_BATCH="40", TRIALFHIR_EXPORT_BATCH_DELAY_MS="100", TRIALFHIR_EXPORT_FILE_MAX_RESOURCES="300"))
    try:
        _load_live(a.base, n)
        status_url = _run_until_checkpointed(a, n)
        time.sleep(0.6)  # past at least one checkpoint with data
    finally:
        a.process.kill()  # SIGKILL: no shutdown, the lease is simply never renewed
        a.process.wait(10)
    b = start_server(url, tmp_path, extra_env=_live_env(export_dir))
    try:
        status_url = status_url.replace(a.base, b.base)
        r = _poll(status_url)
        assert r.status_code == 200, r.text
        manifest = r.json()
        names = [item["url"].rsplit("/", 1)[1] for item in manifest["output"]]
        assert any("-1-" in name for name in names) and any("-2-" in name for name in names), f"resumed, not restarted: {names}"
        _check_complete(manifest, n)
    finally:
        b.stop()


@pytest.mark.slow
def test_restart_fails_a_job_after_max_attempts_and_a_clean_stop_hands_it_over(backend: str, databases, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = databases.url(backend, "bulkgiveup")
    export_dir = tmp_path / "exports"
    slow = dict(TRIALFHIR_EXPORT_BATCH="20", TRIALFHIR_EXPORT_BATCH_DELAY_MS="100", TRIALFHIR_EXPORT_MAX_ATTEMPTS="1")
    a = start_server(url, tmp_path, extra_env=_live_env(export_dir, **slow))
    try:
        _load_live(a.base, 400)
        # a clean stop (SIGTERM) hands the job back without using up an attempt ...
        graceful = _run_until_checkpointed(a, 400)
        a.stop()
        b = start_server(url, tmp_path, extra_env=_live_env(export_dir, TRIALFHIR_EXPORT_MAX_ATTEMPTS="1"))
        try:
            r = _poll(graceful.replace(a.base, b.base))
            assert r.status_code == 200, r.text
            _check_complete(r.json(), 400)
        finally:
            b.stop()
        # ... while a crash (SIGKILL) with max attempts 1 leaves a job that is failed with the reason
        c = start_server(url, tmp_path, extra_env=_live_env(export_dir, **slow))
        try:
            crashed = _run_until_checkpointed(c, 400)
        finally:
            c.process.kill()
            c.process.wait(10)
        d = start_server(url, tmp_path, extra_env=_live_env(export_dir, TRIALFHIR_EXPORT_MAX_ATTEMPTS="1"))
        try:
            r = _poll(crashed.replace(c.base, d.base))
            assert r.status_code == 500
            text = r.json()["issue"][0]["diagnostics"]
            assert "interrupted" in text and "start a new export" in text
        finally:
            d.stop()
    finally:
        a.stop()


# --- $everything ----------------------------------------------------------------------------------------


def _all_pages(client: Any, url: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    r = client.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["resourceType"] == "Bundle" and doc["type"] == "searchset"
        out.extend(e["resource"] for e in doc.get("entry", []))
        nxt = [link["url"] for link in doc["link"] if link["relation"] == "next"]
        if not nxt:
            return out
        r = client.get(nxt[0])


def test_patient_everything(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    found = _all_pages(client, "/fhir/Patient/pa1/$everything", {"_count": "2"})
    keys = [(d["resourceType"], d["id"]) for d in found]
    assert len(keys) == len(set(keys))
    got: dict[str, set[str]] = {}
    for t, i in keys:
        got.setdefault(t, set()).add(i)
    assert got == {
        "Patient": {"pa1"},
        "Group": {"grp-a"},
        "ResearchSubject": {"rsub-a1"},
        "ResearchStudy": {"rs-a"},
        "MedicationAdministration": {"ma-a1"},
        "Medication": {"med-a"},
        "Observation": {"obs-a1", "obs-a-der"},
        "AdverseEvent": {"ae-a1"},
    }
    only = _all_pages(client, "/fhir/Patient/pa1/$everything", {"_type": "Observation"})
    assert {d["id"] for d in only} == {"obs-a1", "obs-a-der"}
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404


def test_study_everything(client) -> None:  # type: ignore[no-untyped-def]
    load_studies(client)
    found = _all_pages(client, "/fhir/ResearchStudy/rs-a/$everything", {"_count": "3"})
    keys = [(d["resourceType"], d["id"]) for d in found]
    assert len(keys) == len(set(keys))
    got: dict[str, set[str]] = {}
    for t, i in keys:
        got.setdefault(t, set()).add(i)
    for rtype, wanted in STUDY_A.items():
        assert wanted <= got.get(rtype, set()), rtype
    assert "obs-b1" not in got["Observation"] and "obs-x" not in got["Observation"]
    assert client.get("/fhir/ResearchStudy/none/$everything").status_code == 404


def test_capability_statement_declares_bulk_export(client) -> None:  # type: ignore[no-untyped-def]
    cs = client.get("/fhir/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in cs["instantiates"]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} in cs["rest"][0]["operation"]
    group = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Group")
    assert group["operation"][0]["name"] == "export"
