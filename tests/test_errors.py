"""Bad input: a clear OperationOutcome with the right status, and nothing stored."""

from __future__ import annotations

import json

import pytest
from support import FHIR_JSON, patient


def _stored(client) -> int:  # type: ignore[no-untyped-def]
    return client.get("/fhir/_history?_count=0").json()["total"]


def _assert_outcome(r, status: int, needle: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["severity"] in ("error", "fatal") for i in body["issue"])
    if needle:
        assert needle in json.dumps(body), body
    assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower()


BAD_BODIES = [
    ("malformed json", b'{"resourceType": "Patient",', 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, "JSON object"),
    ("empty body", b"", 400, "empty"),
    ("no resourceType", b'{"gender": "male"}', 400, "resourceType"),
    ("wrong resourceType", b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', 400, "Observation"),
    ("unknown element", b'{"resourceType": "Patient", "foo": 1}', 400, "Patient.foo"),
    ("bad date", b'{"resourceType": "Patient", "birthDate": "1974-13-45"}', 400, "birthDate"),
    ("time without zone", b'{"resourceType": "Patient", "deceasedDateTime": "2024-03-01T10:00:00"}', 400, "deceasedDateTime"),
    ("bad code", b'{"resourceType": "Patient", "gender": "robot"}', 400, "administrative-gender"),
    ("decimal as string", b'{"resourceType": "Patient", "multipleBirthInteger": "2"}', 400, "multipleBirthInteger"),
    ("duplicate key", b'{"resourceType": "Patient", "gender": "male", "gender": "female"}', 400, "duplicate"),
    ("R5-only element", b'{"resourceType": "Patient", "name": [{"family": "X"}], "link": [], "contact": [{"gender": "male", "organization": {"reference": "Organization/1"}, "period": {"start": "2020"}, "relationship": [], "additionalName": []}]}', 400, None),
    ("empty object", b'{"resourceType": "Patient", "name": [{}]}', 400, "empty object"),
    ("invalid utf-8", b'{"resourceType": "Patient", "name": [{"family": "\xff"}]}', 400, "UTF-8"),
    ("NaN", b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": NaN}}', 400, "NaN"),
    ("bad contained id", b'{"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "a/b"}]}', 400, "valid id"),
]


@pytest.mark.parametrize("name,body,status,needle", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_create_is_refused_and_nothing_stored(client, name: str, body: bytes, status: int, needle: str | None) -> None:
    r = client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    _assert_outcome(r, status, needle)
    r = client.put("/fhir/Patient/x1", content=body, headers=FHIR_JSON)
    assert r.status_code in (400, 422)
    assert _stored(client) == 0


def test_r4b_and_r5_only_types_are_refused(client) -> None:
    for rtype in ("Citation", "SubscriptionTopic", "ActorDefinition"):
        r = client.post(f"/fhir/{rtype}", json={"resourceType": rtype, "status": "active"}, headers=FHIR_JSON)
        _assert_outcome(r, 404, "R4")
    assert _stored(client) == 0


def test_r5_only_element_is_refused(client) -> None:
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "triggeredBy": [{"observation": {"reference": "Observation/1"}, "type": "reflex"}]}
    _assert_outcome(client.post("/fhir/Observation", json=body, headers=FHIR_JSON), 400, "triggeredBy")


def test_update_id_rules(client) -> None:
    _assert_outcome(client.put("/fhir/Patient/a", json=patient(id="b"), headers=FHIR_JSON), 400, "does not match")
    _assert_outcome(client.put("/fhir/Patient/a", json=patient(), headers=FHIR_JSON), 400, "no id")
    _assert_outcome(client.put("/fhir/Patient/" + "x" * 65, json=patient(id="x" * 65), headers=FHIR_JSON), 400, "valid resource id")
    assert _stored(client) == 0


def test_unsupported_media_type(client) -> None:
    _assert_outcome(client.post("/fhir/Patient", content=b"<Patient/>", headers={"content-type": "application/fhir+xml"}), 415)
    _assert_outcome(client.post("/fhir/Patient", content=b"gender=male", headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    _assert_outcome(client.post("/fhir/Patient", content=b"{}", headers={"content-type": "text/plain"}), 415)
    _assert_outcome(client.post("/fhir/Patient", content=b"{}"), 415)
    _assert_outcome(
        client.post("/fhir/Patient", json=patient(), headers={"content-type": "application/fhir+json; fhirVersion=5.0"}), 415
    )
    assert _stored(client) == 0


def test_body_over_limit_is_413(client) -> None:
    big = b'{"resourceType": "Patient", "name": [{"family": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    _assert_outcome(client.post("/fhir/Patient", content=big, headers=FHIR_JSON), 413)
    assert _stored(client) == 0


def test_unknown_route_and_wrong_method(client) -> None:
    r = client.get("/fhir/Patient/1/bogus/2/3")
    _assert_outcome(r, 404)
    _assert_outcome(client.post("/fhir/metadata", json={}), 405)
    _assert_outcome(client.delete("/fhir/_history"), 405)
    r = client.post("/fhir/Patient/123", json=patient(), headers=FHIR_JSON)
    _assert_outcome(r, 405)
    assert "PUT" in r.headers.get("allow", "") or "GET" in r.headers.get("allow", "")
    _assert_outcome(client.get("/fhir/NotAType"), 404)
    _assert_outcome(client.get("/fhir/Patient/bad$id"), 404)


def test_bad_patch_documents(client) -> None:
    pid = client.post("/fhir/Patient", json=patient("x"), headers=FHIR_JSON).json()["id"]
    _assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=b'[{"op": "explode"}]', headers={"content-type": "application/json-patch+json"}), 400)
    _assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=b'{"op": "add"}', headers={"content-type": "application/json-patch+json"}), 400)
    _assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=b'[{"op": "remove", "path": "/nothing/here"}]', headers={"content-type": "application/json-patch+json"}), 422)
    _assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=b"[]", headers={"content-type": "text/plain"}), 415)
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_bad_search_values(client) -> None:
    _assert_outcome(client.get("/fhir/Patient?_count=abc"), 400)
    _assert_outcome(client.get("/fhir/Patient?_lastUpdated=gt2024-99"), 400)
    _assert_outcome(client.get("/fhir/Patient/_history?_cursor=zzz"), 400)


def test_if_match_garbage(client) -> None:
    pid = client.post("/fhir/Patient", json=patient("y"), headers=FHIR_JSON).json()["id"]
    _assert_outcome(client.put(f"/fhir/Patient/{pid}", json=patient("y", id=pid), headers={**FHIR_JSON, "If-Match": "banana"}), 400)


def test_unreachable_database_is_503_not_500(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    app = create_app(Settings.from_env(database_url=f"sqlite:///{tmp_path}/missing-dir/x.db", run_migrations=False))
    with TestClient(app) as c:
        r = c.get("/fhir/Patient/x")
        _assert_outcome(r, 503, "unavailable")
        assert r.headers["retry-after"] == "2"
        r = c.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        _assert_outcome(r, 503)
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
