"""The FHIR RESTful interactions a client relies on (https://hl7.org/fhir/R4/http.html).

Runs on SQLite and PostgreSQL (the ``client`` fixture is parametrised).
"""

from __future__ import annotations

import json

from support import FHIR_JSON, observation, patient, unique

from service.fhir import jsonio


def _create(client, body: dict, **headers: str):  # type: ignore[no-untyped-def]
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers={**FHIR_JSON, **headers})
    assert r.status_code == 201, r.text
    return r


def test_create_returns_resource_location_etag(client) -> None:
    r = _create(client, patient("p1", gender="female"))
    body = r.json()
    assert body["resourceType"] == "Patient"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in r.headers


def test_create_ignores_client_id_and_keeps_client_meta(client) -> None:
    r = _create(client, patient(id="client-chosen", meta={"versionId": "99", "tag": [{"system": "urn:t", "code": "x"}]}))
    body = r.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]


def test_read_serves_the_stored_bytes_with_decimal_precision(client) -> None:
    r = client.post("/fhir/Observation", content=observation("1.50"), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    oid = r.json()["id"]
    read = client.get(f"/fhir/Observation/{oid}")
    assert read.status_code == 200
    assert b'"value":1.50' in read.content
    assert read.content == r.content
    assert jsonio.loads(read.content)["valueQuantity"]["value"].raw == "1.50"


def test_read_unknown_is_404_operation_outcome(client) -> None:
    r = client.get("/fhir/Patient/does-not-exist")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "not-found"


def test_update_versions_and_vread(client) -> None:
    pid = _create(client, patient("p2", gender="male")).json()["id"]
    r = client.put(f"/fhir/Patient/{pid}", json=patient("p2", id=pid, gender="female"), headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}/_history/x").status_code == 404


def test_update_as_create_with_client_id(client) -> None:
    r = client.put("/fhir/Patient/my-id-1", json=patient("p3", id="my-id-1"), headers=FHIR_JSON)
    assert r.status_code == 201
    assert r.json()["id"] == "my-id-1"
    assert r.headers["location"].endswith("/fhir/Patient/my-id-1/_history/1")
    r = client.put("/fhir/Patient/my-id-1", json=patient("p3", id="my-id-1", active=True), headers=FHIR_JSON)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"


def test_update_if_match(client) -> None:
    pid = _create(client, patient("p4")).json()["id"]
    ok = client.put(f"/fhir/Patient/{pid}", json=patient("p4", id=pid, active=True), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/fhir/Patient/{pid}", json=patient("p4", id=pid, active=False), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}").json()["active"] is True
    # strong ETag spelling is accepted too
    ok2 = client.put(f"/fhir/Patient/{pid}", json=patient("p4", id=pid), headers={**FHIR_JSON, "If-Match": '"2"'})
    assert ok2.status_code == 200


def test_if_none_match_star_only_creates(client) -> None:
    r = client.put("/fhir/Patient/inm-1", json=patient(id="inm-1"), headers={**FHIR_JSON, "If-None-Match": "*"})
    assert r.status_code == 201
    r = client.put("/fhir/Patient/inm-1", json=patient(id="inm-1"), headers={**FHIR_JSON, "If-None-Match": "*"})
    assert r.status_code == 412


def test_read_if_none_match_and_if_modified_since(client) -> None:
    r = _create(client, patient("p5"))
    pid = r.json()["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": r.headers["last-modified"]}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_delete_is_a_new_deleted_version(client) -> None:
    pid = _create(client, patient("p6")).json()["id"]
    r = client.delete(f"/fhir/Patient/{pid}")
    assert r.status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    # deleting again changes nothing
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    hist = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "POST"]
    assert "resource" not in hist["entry"][0]
    # an update resurrects it as version 3
    back = client.put(f"/fhir/Patient/{pid}", json=patient("p6", id=pid), headers=FHIR_JSON)
    assert back.status_code == 201 and back.json()["meta"]["versionId"] == "3"
    # a deleted resource no longer matches searches
    client.delete(f"/fhir/Patient/{pid}")
    assert "entry" not in client.get("/fhir/Patient?identifier=urn:trialfhir:test:mrn|p6").json()


def test_delete_unknown_is_204(client) -> None:
    assert client.delete("/fhir/Patient/never-existed").status_code == 204


def test_prefer_return(client) -> None:
    minimal = client.post("/fhir/Patient", json=patient("p7"), headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert "location" in minimal.headers and minimal.headers["etag"] == 'W/"1"'
    oo = client.post("/fhir/Patient", json=patient("p8"), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201 and oo.json()["resourceType"] == "OperationOutcome"
    rep = client.post("/fhir/Patient", json=patient("p9"), headers={**FHIR_JSON, "Prefer": "return=representation"})
    assert rep.json()["resourceType"] == "Patient"


def test_media_types_and_format(client) -> None:
    r = client.post("/fhir/Patient", json=patient("p10"), headers={"content-type": "application/json", "accept": "application/json"})
    assert r.status_code == 201
    assert r.headers["content-type"].startswith("application/fhir+json")
    r = client.post(
        "/fhir/Patient",
        json=patient("p11"),
        headers={"content-type": "application/fhir+json; fhirVersion=4.0", "accept": "application/fhir+json; fhirVersion=4.0"},
    )
    assert r.status_code == 201
    pid = r.json()["id"]
    assert client.get(f"/fhir/Patient/{pid}?_format=json").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}?_format=application/fhir%2Bjson").status_code == 200
    xml = client.get(f"/fhir/Patient/{pid}?_format=xml")
    assert xml.status_code == 406 and xml.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}", headers={"accept": "application/fhir+xml"}).status_code == 406
    assert client.get(f"/fhir/Patient/{pid}", headers={"accept": "application/fhir+json; fhirVersion=3.0"}).status_code == 406
    assert client.get(f"/fhir/Patient/{pid}", headers={"accept": "text/html,*/*;q=0.8"}).status_code == 200
    pretty = client.get(f"/fhir/Patient/{pid}?_pretty=true")
    assert pretty.content.startswith(b"{\n  ")
    assert pretty.json() == client.get(f"/fhir/Patient/{pid}").json()


def test_patch_json_patch_and_merge_patch(client) -> None:
    pid = _create(client, patient("p12", gender="male")).json()["id"]
    r = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps([{"op": "test", "path": "/gender", "value": "male"}, {"op": "replace", "path": "/gender", "value": "female"}]),
        headers={"content-type": "application/json-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female" and r.json()["meta"]["versionId"] == "2"
    failed = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps([{"op": "test", "path": "/gender", "value": "male"}]),
        headers={"content-type": "application/json-patch+json"},
    )
    assert failed.status_code == 422
    merge = client.patch(f"/fhir/Patient/{pid}", json={"active": True}, headers={"content-type": "application/json"})
    assert merge.status_code == 200 and merge.json()["active"] is True and merge.json()["gender"] == "female"
    invalid = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps([{"op": "replace", "path": "/gender", "value": "robot"}]),
        headers={"content-type": "application/json-patch+json"},
    )
    assert invalid.status_code == 400
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "3"
    stale = client.patch(f"/fhir/Patient/{pid}", json={"active": False}, headers={"content-type": "application/json", "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    change_id = client.patch(
        f"/fhir/Patient/{pid}",
        content=json.dumps([{"op": "replace", "path": "/id", "value": "other"}]),
        headers={"content-type": "application/json-patch+json"},
    )
    assert change_id.status_code == 422
    assert client.patch("/fhir/Patient/nope", json={"active": True}, headers={"content-type": "application/json"}).status_code == 404


def test_history_levels_and_paging(client) -> None:
    pid = _create(client, patient("h1")).json()["id"]
    for gender in ("male", "female", "other"):
        client.put(f"/fhir/Patient/{pid}", json=patient("h1", id=pid, gender=gender), headers=FHIR_JSON)
    oid = client.post("/fhir/Observation", content=observation("2.0"), headers=FHIR_JSON).json()["id"]

    inst = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert inst["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["4", "3", "2", "1"]
    assert inst["entry"][0]["response"]["etag"] == 'W/"4"'
    assert inst["entry"][-1]["request"] == {"method": "POST", "url": "Patient"}

    typ = client.get("/fhir/Patient/_history").json()
    assert {e["resource"]["resourceType"] for e in typ["entry"]} == {"Patient"}
    system = client.get("/fhir/_history").json()
    assert system["entry"][0]["resource"]["id"] == oid
    assert len(system["entry"]) == 5

    # paging: absolute next links that keep the parameters, no repeats, no gaps
    seen: list[str] = []
    url = f"/fhir/Patient/{pid}/_history?_count=3"
    pages = 0
    while url:
        page = client.get(url).json()
        pages += 1
        seen += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if nxt:
            assert nxt[0].startswith("http://testserver/fhir/Patient/")
            assert "_count=3" in nxt[0]
        url = nxt[0].replace("http://testserver", "") if nxt else ""
    assert pages == 2 and seen == ["4", "3", "2", "1"]

    assert client.get("/fhir/_history?_count=0").json()["total"] == 5
    assert client.get("/fhir/Patient/nope/_history").status_code == 404
    assert client.get("/fhir/_history?_since=2999-01-01").json().get("entry") is None
    assert client.get("/fhir/_history?_since=notadate").status_code == 400


def test_history_page_is_stable_while_writing(client) -> None:
    pid = _create(client, patient("h2")).json()["id"]
    for i in range(4):
        client.put(f"/fhir/Patient/{pid}", json=patient("h2", id=pid, active=bool(i % 2)), headers=FHIR_JSON)
    first = client.get(f"/fhir/Patient/{pid}/_history?_count=2").json()
    # a new version arrives between pages: the walk neither repeats nor skips
    client.put(f"/fhir/Patient/{pid}", json=patient("h2", id=pid), headers=FHIR_JSON)
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(nxt.replace("http://testserver", "")).json()
    versions = [e["resource"]["meta"]["versionId"] for e in first["entry"] + second["entry"]]
    assert versions == ["5", "4", "3", "2"]


def test_search_token_and_paging_links(client) -> None:
    system = "urn:search:" + unique()
    for i in range(5):
        client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": system, "value": "shared"}], "gender": "male" if i % 2 else "female"}, headers=FHIR_JSON)
    r = client.get(f"/fhir/Patient?identifier={system}|shared&gender=male&gender:not=female&_count=1")
    bundle = r.json()
    assert bundle["type"] == "searchset"
    collected = [e["resource"]["id"] for e in bundle["entry"]]
    while True:
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].count("gender") == 2, nxt[0]
        bundle = client.get(nxt[0].replace("http://testserver", "")).json()
        collected += [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert len(collected) == len(set(collected)) == 2
    total = client.get(f"/fhir/Patient?identifier={system}|shared&_count=0").json()
    assert total["total"] == 5 and "entry" not in total
    strict = client.get("/fhir/Patient?bogus=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    lenient = client.get("/fhir/Patient?bogus=1&_count=1").json()
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    form = client.post("/fhir/Patient/_search", content=f"identifier={system}|shared", headers={"content-type": "application/x-www-form-urlencoded"})
    assert len(form.json()["entry"]) == 5


def test_capability_statement(client) -> None:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {res["type"] for res in cs["rest"][0]["resource"]}
    assert {"Patient", "Observation", "ResearchStudy", "ResearchSubject", "AdverseEvent", "MedicationAdministration"} <= types
    assert "Citation" not in types  # R4B-only
    patient_cap = next(res for res in cs["rest"][0]["resource"] if res["type"] == "Patient")
    assert {"read", "vread", "update", "patch", "delete", "create", "history-instance", "history-type", "search-type"} <= {
        i["code"] for i in patient_cap["interaction"]
    }
    assert patient_cap["conditionalCreate"] is True
    assert "identifier" in {p["name"] for p in patient_cap["searchParam"]}
    # the statement itself is valid R4
    from service.fhir.validation import validation_issues

    assert validation_issues(cs) == []


def test_health(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["database"] in ("sqlite", "postgresql")


def test_request_id_is_echoed(client) -> None:
    r = client.get("/fhir/metadata", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(client.get("/fhir/metadata").headers["x-request-id"]) == 32


def test_identical_update_makes_no_new_version(client) -> None:
    r = client.put("/fhir/Observation/same-1", content=b'{"resourceType":"Observation","id":"same-1","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}', headers=FHIR_JSON)
    assert r.status_code == 201
    again = client.put("/fhir/Observation/same-1", content=b'{"resourceType":"Observation","id":"same-1","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50},"meta":{"versionId":"7"}}', headers=FHIR_JSON)
    assert again.status_code == 200 and again.headers["etag"] == 'W/"1"'
    # 1.5 is not 1.50: FHIR keeps decimal precision, so this is a change
    changed = client.put("/fhir/Observation/same-1", content=b'{"resourceType":"Observation","id":"same-1","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.5}}', headers=FHIR_JSON)
    assert changed.headers["etag"] == 'W/"2"'
    assert len(client.get("/fhir/Observation/same-1/_history").json()["entry"]) == 2
