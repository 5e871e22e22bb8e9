"""Conditional create, update, patch and delete (https://hl7.org/fhir/R4/http.html#ccreate)."""

from __future__ import annotations

from support import FHIR_JSON, patient, unique

SYSTEM = "urn:trialfhir:test:mrn"


def _count(client, mrn: str) -> int:  # type: ignore[no-untyped-def]
    return client.get(f"/fhir/Patient?identifier={SYSTEM}|{mrn}&_count=0").json()["total"]


def test_conditional_create_header(client) -> None:
    mrn = unique()
    first = client.post("/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{mrn}"})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(mrn, gender="male"), headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{mrn}"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert "gender" not in again.json()  # the existing resource, unchanged
    assert again.headers["etag"] == 'W/"1"'
    assert _count(client, mrn) == 1


def test_conditional_create_tolerates_type_prefix_and_full_url(client) -> None:
    mrn = unique()
    first = client.post("/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"Patient?identifier={SYSTEM}|{mrn}"})
    assert first.status_code == 201
    url = f"http://testserver/fhir/Patient?identifier={SYSTEM}|{mrn}"
    again = client.post("/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": url})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    wrong = client.post("/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"Observation?identifier={SYSTEM}|{mrn}"})
    assert wrong.status_code == 400


def test_conditional_create_query_form_fhirpy(client) -> None:
    mrn = unique()
    first = client.post(f"/fhir/Patient?identifier={SYSTEM}|{mrn}", json=patient(mrn), headers=FHIR_JSON)
    assert first.status_code == 201
    again = client.post(f"/fhir/Patient?identifier={SYSTEM}%7C{mrn}", json=patient(mrn), headers=FHIR_JSON)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert _count(client, mrn) == 1


def test_conditional_create_multiple_matches_is_412(client) -> None:
    mrn = unique()
    for _ in range(2):
        client.post("/fhir/Patient", json=patient(mrn), headers=FHIR_JSON)
    r = client.post("/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{mrn}"})
    assert r.status_code == 412
    assert r.json()["issue"][0]["code"] == "multiple-matches"
    assert _count(client, mrn) == 2


def test_conditional_create_with_unknown_parameter_is_refused(client) -> None:
    r = client.post("/fhir/Patient", json=patient("x"), headers={**FHIR_JSON, "If-None-Exist": "bogus=1"})
    assert r.status_code == 400
    assert "bogus" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient?_count=0").json()["total"] == 0


def test_conditional_create_on_other_token_params_and_id(client) -> None:
    mrn = unique()
    created = client.post("/fhir/Patient", json=patient(mrn, gender="other"), headers=FHIR_JSON).json()
    by_id = client.post("/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"_id={created['id']}"})
    assert by_id.status_code == 200 and by_id.json()["id"] == created["id"]
    both = client.post(
        "/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{mrn}&gender=other"}
    )
    assert both.status_code == 200
    other = client.post(
        "/fhir/Patient", json=patient(mrn), headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{mrn}&gender=male"}
    )
    assert other.status_code == 201


def test_conditional_update(client) -> None:
    mrn = unique()
    created = client.put(f"/fhir/Patient?identifier={SYSTEM}|{mrn}", json=patient(mrn, gender="male"), headers=FHIR_JSON)
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(f"/fhir/Patient?identifier={SYSTEM}|{mrn}", json=patient(mrn, gender="female"), headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    mismatch = client.put(f"/fhir/Patient?identifier={SYSTEM}|{mrn}", json=patient(mrn, id="other-id"), headers=FHIR_JSON)
    assert mismatch.status_code == 400
    client.post("/fhir/Patient", json=patient(mrn), headers=FHIR_JSON)
    many = client.put(f"/fhir/Patient?identifier={SYSTEM}|{mrn}", json=patient(mrn), headers=FHIR_JSON)
    assert many.status_code == 412
    with_id = client.put(f"/fhir/Patient?identifier={SYSTEM}|{unique()}", json=patient("z", id="cond-upd-id"), headers=FHIR_JSON)
    assert with_id.status_code == 201 and with_id.json()["id"] == "cond-upd-id"
    assert client.put("/fhir/Patient", json=patient(mrn), headers=FHIR_JSON).status_code == 400


def test_conditional_patch(client) -> None:
    mrn = unique()
    pid = client.post("/fhir/Patient", json=patient(mrn), headers=FHIR_JSON).json()["id"]
    r = client.patch(f"/fhir/Patient?identifier={SYSTEM}|{mrn}", json={"active": True}, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["active"] is True
    none = client.patch(f"/fhir/Patient?identifier={SYSTEM}|{unique()}", json={"active": True}, headers={"content-type": "application/json"})
    assert none.status_code == 404


def test_conditional_delete(client) -> None:
    mrn = unique()
    pid = client.post("/fhir/Patient", json=patient(mrn), headers=FHIR_JSON).json()["id"]
    r = client.delete(f"/fhir/Patient?identifier={SYSTEM}|{mrn}")
    assert r.status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.delete(f"/fhir/Patient?identifier={SYSTEM}|{mrn}").status_code == 204
    twin = unique()
    for _ in range(2):
        client.post("/fhir/Patient", json=patient(twin), headers=FHIR_JSON)
    assert client.delete(f"/fhir/Patient?identifier={SYSTEM}|{twin}").status_code == 412
    assert _count(client, twin) == 2
    assert client.delete("/fhir/Patient").status_code == 400
