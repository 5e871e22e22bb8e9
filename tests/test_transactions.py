"""Transaction and batch Bundles (``POST /fhir``): https://hl7.org/fhir/R4/http.html#transaction.

Every test runs on SQLite and on PostgreSQL (the ``backend`` fixture). What is checked:

- the official R4 examples of type transaction or batch, each with an explicit expected
  outcome (success with per-entry statuses, or failure naming the entry and why);
- the processing rules: ``urn:uuid`` / ``urn:oid`` placeholders rewritten at any depth,
  conditional references resolved (404 none, 412 several), a resource touched twice is a
  400, the order DELETE → POST → PUT/PATCH → GET, ``ifMatch`` / ``ifNoneMatch`` /
  ``ifNoneExist``, PATCH entries, the per-entry response fields, batch independence,
  ``/fhir`` and ``/fhir/``, Bundle types, the entry limit (413) and malformed entries;
- all or nothing: a failing entry anywhere leaves every table (``resource``,
  ``resource_version`` and every ``idx_*`` table) byte-for-byte as it was;
- idempotency of conditional creates, and races between real clients on a
  multi-worker server (no duplicate, no lost update, no 5xx).
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from conftest import LiveServer, start_server
from support import unique

FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
SYS = "urn:trialfhir:test:tx"


# --- helpers ---------------------------------------------------------------------------------


def bundle(entries: list[Any], type_: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": type_, "entry": entries}


def post_bundle(client: Any, entries: list[Any], type_: str = "transaction", *, path: str = "/fhir", headers: dict[str, str] | None = None) -> Any:
    return client.post(path, content=json.dumps(bundle(entries, type_)), headers={**FHIR, **(headers or {})})


def uid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def pat(value: str | None = None, *, system: str = SYS, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient"}
    if value is not None:
        body["identifier"] = [{"system": system, "value": value}]
    body.update(extra)
    return body


def obs(subject: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5"}]},
        "valueQuantity": {"value": 1.5, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"},
    }
    if subject is not None:
        body["subject"] = {"reference": subject}
    body.update(extra)
    return body


def post_entry(resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


def put_entry(resource: dict[str, Any], url: str | None = None, **request: str) -> dict[str, Any]:
    url = url or f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def delete_entry(url: str, **request: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": url, **request}}


def get_entry(url: str, **request: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url, **request}}


def patch_entry(url: str, ops: list[dict[str, Any]], **request: str) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}, "request": {"method": "PATCH", "url": url, **request}}


def statuses(resp: Any) -> list[str]:
    return [e["response"]["status"] for e in resp.json().get("entry", [])]


def codes(resp: Any) -> list[int]:
    return [int(s.split()[0]) for s in statuses(resp)]


def location_ref(entry: dict[str, Any]) -> str:
    """``Type/id`` from a response entry's location ``Type/id/_history/n``."""
    loc = entry["response"]["location"]
    parts = loc.split("/_history/")[0].split("/")
    return "/".join(parts[-2:])


def assert_outcome(resp: Any, status: int, index: int | None, *, text: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with an OperationOutcome naming ``Bundle.entry[index]``."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:2000]}"
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    issues = body["issue"]
    assert issues and all(i["severity"] in ("error", "fatal") for i in issues), body
    if index is not None:
        label = f"Bundle.entry[{index}]"
        named = [i for i in issues if any(x.startswith(label) for x in i.get("expression", [])) or label in i.get("diagnostics", "")]
        assert named, f"no issue names {label}: {body}"
        others = [f"Bundle.entry[{j}]" for j in range(200) if j != index]
        for issue in issues:
            for x in issue.get("expression", []):
                assert not any(x.startswith(o + ".") or x == o for o in others), f"an issue names another entry: {body}"
    if text is not None:
        assert any(text.lower() in i.get("diagnostics", "").lower() for i in issues), f"no issue mentions {text!r}: {body}"
    return body


def engine_of(client: Any) -> Engine:
    return client.app.state.store.engine


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the store writes, in a canonical order."""
    from service.db.schema import INDEX_TABLES, resource, resource_version

    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in (resource, resource_version, *INDEX_TABLES):
            rows = [tuple(r) for r in conn.execute(select(table)).all()]
            out[table.name] = sorted(rows, key=repr)
    return out


def assert_unchanged(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> None:
    for name in before:
        if before[name] != after[name]:
            added = [r for r in after[name] if r not in before[name]]
            removed = [r for r in before[name] if r not in after[name]]
            pytest.fail(f"table {name} changed: {len(added)} rows added, {len(removed)} removed; e.g. added {added[:2]!r} removed {removed[:2]!r}")


def live_count(engine: Engine, resource_type: str) -> int:
    from service.db.schema import resource

    with engine.connect() as conn:
        stmt = select(func.count()).select_from(resource).where(resource.c.resource_type == resource_type, resource.c.deleted.is_(False))
        return int(conn.execute(stmt).scalar_one())


def read(client: Any, ref: str) -> dict[str, Any]:
    r = client.get(f"/fhir/{ref}", headers=FHIR)
    assert r.status_code == 200, (ref, r.status_code, r.text[:500])
    return r.json()


def search_total(client: Any, query: str) -> int:
    sep = "&" if "?" in query else "?"
    r = client.get(f"/fhir/{query}{sep}_summary=count", headers=FHIR)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def put(client: Any, resource: dict[str, Any]) -> dict[str, Any]:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", content=json.dumps(resource), headers=FHIR)
    assert r.status_code in (200, 201), r.text
    return r.json()


def create(client: Any, resource: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/fhir/{resource['resourceType']}", content=json.dumps(resource), headers=FHIR)
    assert r.status_code == 201, r.text
    return r.json()


def all_references(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if isinstance(cur.get("reference"), str):
                found.append(cur["reference"])
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return found


def seed_store(client: Any) -> None:
    """Some history in every table: creates, updates, a delete, several index types."""
    p = put(client, pat("seed-1", id="seed-p1", name=[{"family": "Seed", "given": ["Anna"]}], birthDate="1970-01-01", gender="female"))
    put(client, {**p, "active": True})
    put(client, pat("seed-2", id="seed-p2", name=[{"family": "Seed"}]))
    client.delete("/fhir/Patient/seed-p2")
    put(client, obs("Patient/seed-p1", id="seed-o1", effectiveDateTime="2024-01-02T03:04:05Z"))
    put(client, {"resourceType": "Organization", "id": "seed-org", "name": "Seed Org", "identifier": [{"system": SYS, "value": "org"}]})


# --- the official examples -------------------------------------------------------------------

OFFICIAL = {
    # name: (type, expected outcome on an empty store)
    "Bundle-bundle-transaction.json": "transaction",
    "Bundle-hla-1.json": "transaction",
    "Bundle-xds.json": "transaction",
    "Bundle-ussg-fht.json": "transaction",
    "Bundle-bundle-request-medsallergies.json": "batch",
    "Bundle-bundle-request-simplesummary.json": "batch",
}


def load_example(hl7_examples: Path, name: str) -> dict[str, Any]:
    return json.loads((hl7_examples / name).read_text())


def official_tx_bundles(hl7_examples: Path) -> dict[str, str]:
    found = {}
    for path in sorted(hl7_examples.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            found[path.name] = doc["type"]
    return found


def test_every_official_transaction_and_batch_bundle_is_covered(hl7_examples: Path) -> None:
    assert official_tx_bundles(hl7_examples) == OFFICIAL


def _seed_for_bundle_transaction(client: Any) -> dict[str, str]:
    """What Bundle-bundle-transaction.json's conditional and versioned entries need."""
    ids: dict[str, str] = {}
    # entry 1: POST ifNoneExist identifier=http:/example.org/fhir/ids|234234 -> matches this one
    ids["234234"] = create(client, pat("234234", system="http:/example.org/fhir/ids", name=[{"family": "Seeded"}]))["id"]
    # entry 3: PUT Patient?identifier=http:/example.org/fhir/ids|456456 -> updates this one
    ids["456456"] = create(client, pat("456456", system="http:/example.org/fhir/ids", name=[{"family": "Seeded"}]))["id"]
    # entry 4: PUT Patient/123a with ifMatch W/"2" -> needs version 2
    put(client, {"resourceType": "Patient", "id": "123a", "name": [{"family": "Seeded"}]})
    put(client, {"resourceType": "Patient", "id": "123a", "name": [{"family": "Seeded"}], "active": False})
    # entry 5: DELETE Patient/234
    put(client, {"resourceType": "Patient", "id": "234", "name": [{"family": "Seeded"}]})
    # entry 6: DELETE Patient?identifier=123456 (any system)
    ids["123456"] = create(client, pat("123456", system="http://other.example/ids", name=[{"family": "Seeded"}]))["id"]
    # entry 9: GET Patient/12334 with ifNoneMatch W/"4" -> at version 4 it is a 304
    for n in range(4):
        put(client, {"resourceType": "Patient", "id": "12334", "name": [{"family": "Seeded"}], "birthDate": f"197{n}-01-01"})
    return ids


def test_official_bundle_transaction(client: Any, hl7_examples: Path) -> None:
    doc = load_example(hl7_examples, "Bundle-bundle-transaction.json")
    assert doc["entry"][7]["request"]["url"] == "ValueSet/$lookup"
    ids = _seed_for_bundle_transaction(client)
    before = snapshot(engine_of(client))

    # as published: the $lookup operation entry fails the whole transaction
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert_outcome(r, 400, 7, text="$lookup")
    assert_unchanged(before, snapshot(engine_of(client)))

    # without it, everything succeeds
    del doc["entry"][7]
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    got = statuses(r)
    assert len(got) == 9
    assert got[0].startswith("201")  # POST Patient
    assert got[1].startswith("200")  # POST ifNoneExist: the seeded 234234 matches
    assert got[2].startswith("201")  # PUT Patient/123: update as create
    assert got[3].startswith("200")  # conditional PUT: updates the seeded 456456
    assert got[4].startswith("200")  # PUT Patient/123a ifMatch W/"2"
    assert got[5].split()[0] in ("200", "204")  # DELETE Patient/234
    assert got[6].split()[0] in ("200", "204")  # DELETE Patient?identifier=123456
    assert got[7].startswith("200")  # GET Patient?name=peter
    assert got[8].startswith("304")  # GET Patient/12334 ifNoneMatch W/"4"
    entries = body["entry"]

    assert location_ref(entries[1]) == f"Patient/{ids['234234']}"
    assert search_total(client, "Patient?identifier=http:/example.org/fhir/ids|234234") == 1
    assert read(client, f"Patient/{ids['234234']}")["name"][0]["family"] == "Seeded"  # not overwritten
    assert read(client, "Patient/123")["meta"]["versionId"] == "1"
    updated = read(client, f"Patient/{ids['456456']}")
    assert location_ref(entries[3]) == f"Patient/{ids['456456']}"
    assert updated["meta"]["versionId"] == "2" and updated["name"][0]["family"] == "Chalmers"
    assert read(client, "Patient/123a")["meta"]["versionId"] == "3"
    assert entries[4]["response"]["etag"] == 'W/"3"'
    assert client.get("/fhir/Patient/234", headers=FHIR).status_code == 410
    assert client.get(f"/fhir/Patient/{ids['123456']}", headers=FHIR).status_code == 410
    # the search runs after all writes: it sees the four Peters written by this transaction
    searchset = entries[7]["resource"]
    assert searchset["type"] == "searchset"
    matched = sorted(e["resource"]["id"] for e in searchset.get("entry", []) if e.get("search", {}).get("mode", "match") == "match")
    created = location_ref(entries[0]).split("/")[1]
    assert matched == sorted([created, "123", ids["456456"], "123a"])
    assert entries[8]["response"]["etag"] == 'W/"4"'
    assert "resource" not in entries[8]


def test_official_hla_1_references_rewritten(client: Any, hl7_examples: Path) -> None:
    doc = load_example(hl7_examples, "Bundle-hla-1.json")
    assert len(doc["entry"]) == 22
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert r.status_code == 200, r.text
    assert codes(r) == [201] * 22
    mapping = {src["fullUrl"]: location_ref(out) for src, out in zip(doc["entry"], r.json()["entry"])}
    assert len(set(mapping.values())) == 22
    placeholders = 0
    for src in doc["entry"]:
        ref = mapping[src["fullUrl"]]
        assert ref.split("/")[0] == src["resource"]["resourceType"]
        stored = read(client, ref)
        original_refs = sorted(all_references(src["resource"]))
        expected = sorted(mapping.get(x, x) for x in original_refs)
        assert sorted(all_references(stored)) == expected, ref
        assert "urn:uuid:" not in json.dumps(stored)
        placeholders += sum(1 for x in original_refs if x.startswith("urn:uuid:"))
    assert placeholders == 3 + 9 * 2  # DiagnosticReport.result and every Observation.derivedFrom
    report = read(client, mapping[doc["entry"][0]["fullUrl"]])
    for ref in report["result"]:
        assert read(client, ref["reference"])["resourceType"] == "Observation"


def test_official_xds(client: Any, hl7_examples: Path) -> None:
    doc = load_example(hl7_examples, "Bundle-xds.json")
    criteria = doc["entry"][1]["request"]["ifNoneExist"]
    assert criteria.startswith("Patient?")
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert r.status_code == 200, r.text
    assert codes(r) == [201] * 5
    refs = [location_ref(e) for e in r.json()["entry"]]
    assert [x.split("/")[0] for x in refs] == ["DocumentReference", "Patient", "Practitioner", "Practitioner", "Binary"]

    # the "Patient?" prefix is understood: with a matching Patient present, the entry is a 200 on it
    existing = create(client, {"resourceType": "Patient", "identifier": [{"value": criteria.split("identifier=", 1)[1]}]})
    r2 = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert r2.status_code == 200, r2.text
    assert codes(r2) == [201, 200, 201, 201, 201]
    assert location_ref(r2.json()["entry"][1]) == f"Patient/{existing['id']}"

    # http.html#trules: "Servers SHALL replace all matching links in the bundle, whether they are
    # found in the resource ids, resource references, elements of type uri, url, oid, uuid, and
    # <a href="" & <img src="" in the narrative" -- the Attachment.url (type url) is exactly the
    # Binary entry's fullUrl, so it must now point at the Binary the server created.
    binary_full_url = doc["entry"][4]["fullUrl"]
    docref = read(client, refs[0])
    url = docref["content"][0]["attachment"]["url"]
    assert url != binary_full_url and url.endswith(refs[4]), f"Attachment.url not rewritten: {url} (Binary is {refs[4]})"


def test_official_ussg_fht_absolute_urls_of_another_server(client: Any, hl7_examples: Path) -> None:
    """Its request.url values are absolute URLs on hl7.org: not this server, so the transaction fails."""
    doc = load_example(hl7_examples, "Bundle-ussg-fht.json")
    assert doc["entry"][0]["request"]["url"].startswith("http://hl7.org/fhir/us/sdc/")
    before = snapshot(engine_of(client))
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert_outcome(r, 400, 0, text="not on this server")
    assert_unchanged(before, snapshot(engine_of(client)))


def _seed_patient_example(client: Any) -> None:
    put(client, {"resourceType": "Patient", "id": "example", "name": [{"family": "Chalmers"}]})
    put(client, {"resourceType": "MedicationStatement", "id": "ms-1", "status": "active", "medicationCodeableConcept": {"text": "aspirin"}, "subject": {"reference": "Patient/example"}})
    put(client, {"resourceType": "AllergyIntolerance", "id": "ai-1", "patient": {"reference": "Patient/example"}, "code": {"text": "peanut"}})
    put(client, {"resourceType": "Condition", "id": "co-1", "subject": {"reference": "Patient/example"}, "code": {"text": "asthma"}})
    put(client, obs("Patient/example", id="ob-1", code={"coding": [{"system": "http://loinc.org", "code": "55284-4"}]}, effectiveDateTime="2016-05-01"))


def _not_applied_is_reported(searchset: dict[str, Any], param: str) -> bool:
    """True when the searchset tells the client ``param`` was not applied (outcome entry or self link)."""
    for e in searchset.get("entry", []):
        if e.get("search", {}).get("mode") == "outcome" and param in json.dumps(e["resource"]):
            return True
    self_links = [link["url"] for link in searchset.get("link", []) if link["relation"] == "self"]
    return bool(self_links) and all(param + "=" not in u for u in self_links)


def test_official_batch_medsallergies(client: Any, hl7_examples: Path) -> None:
    """A batch of GETs with leading-slash URLs and parameters the server does not support."""
    doc = load_example(hl7_examples, "Bundle-bundle-request-medsallergies.json")
    assert all(e["request"]["url"].startswith("/") for e in doc["entry"])
    # on an empty store: the read is a 404 for that entry alone, the searches are 200
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "batch-response"
    assert codes(r) == [404, 200, 200, 200, 200]
    assert r.json()["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"

    _seed_patient_example(client)
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert codes(r) == [200] * 5, r.text
    entries = r.json()["entry"]
    assert entries[0]["resource"]["id"] == "example"
    for e in entries[1:]:
        assert e["resource"]["type"] == "searchset"
    # notgiven is no R4 MedicationStatement parameter: ignored, and the searchset says so
    assert _not_applied_is_reported(entries[4]["resource"], "notgiven")
    # _list (search.html#list) is not applied either (the seeded MedicationStatement comes back
    # although no List exists); the client must be told, as for any other parameter not applied
    for i in (1, 2, 3):
        searchset = entries[i]["resource"]
        assert _not_applied_is_reported(searchset, "_list"), f"entry {i}: _list silently ignored: {json.dumps(searchset)[:600]}"


def test_official_batch_simplesummary(client: Any, hl7_examples: Path) -> None:
    doc = load_example(hl7_examples, "Bundle-bundle-request-simplesummary.json")
    assert "http://loinc.org|55284-4" in doc["entry"][3]["request"]["url"]
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert r.status_code == 200, r.text
    assert codes(r) == [404, 200, 200, 200], json.dumps(r.json())[:3000]

    _seed_patient_example(client)
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert codes(r) == [200] * 4, json.dumps(r.json())[:3000]
    entries = r.json()["entry"]
    assert entries[0]["resource"]["id"] == "example"
    for i, rid in ((1, "co-1"), (2, "ms-1"), (3, "ob-1")):
        found = [e["resource"]["id"] for e in entries[i]["resource"].get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
        assert found == [rid], (i, found)


# --- reference rewriting -----------------------------------------------------------------------


def test_placeholders_rewritten_at_any_depth(client: Any) -> None:
    p, org, o1, spec = uid(), "urn:oid:1.2.840.99999.4711", uid(), uid()
    ext = {
        "url": "http://example.org/ext/outer",
        "extension": [{"url": "inner", "valueReference": {"reference": p}}, {"url": "other", "valueString": "x"}],
    }
    observation = obs(
        p,
        performer=[{"reference": org}, {"reference": "Practitioner/external-1"}],
        specimen={"reference": spec},
        focus=[{"reference": "#sp1"}],
        extension=[ext],
        contained=[{"resourceType": "Specimen", "id": "sp1", "subject": {"reference": p}, "collection": {"collector": {"reference": org}}}],
        derivedFrom=[{"reference": o1}],
    )
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "panel"},
        "subject": {"reference": p},
        "result": [{"reference": o1}],
        "media": [{"link": {"reference": o1}}],  # not a Media, but a backbone element holding a Reference
    }
    entries = [
        post_entry(report),
        post_entry(observation, full_url=o1),
        post_entry({"resourceType": "Organization", "name": "Lab"}, full_url=org),
        post_entry({"resourceType": "Specimen", "subject": {"reference": p}}, full_url=spec),
        post_entry(pat(unique("deep")), full_url=p),
    ]
    r = post_bundle(client, entries)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    refs = {entries[i].get("fullUrl"): location_ref(out[i]) for i in range(5)}
    stored_obs = read(client, refs[o1])
    assert stored_obs["subject"]["reference"] == refs[p]
    assert stored_obs["performer"] == [{"reference": refs[org]}, {"reference": "Practitioner/external-1"}]
    assert stored_obs["specimen"]["reference"] == refs[spec]
    assert stored_obs["focus"] == [{"reference": "#sp1"}]
    assert stored_obs["extension"][0]["extension"][0]["valueReference"]["reference"] == refs[p]
    assert stored_obs["contained"][0]["subject"]["reference"] == refs[p]
    assert stored_obs["contained"][0]["collection"]["collector"]["reference"] == refs[org]
    assert stored_obs["derivedFrom"][0]["reference"] == refs[o1]  # a self-reference
    stored_report = read(client, location_ref(out[0]))
    assert stored_report["result"][0]["reference"] == refs[o1]
    assert stored_report["media"][0]["link"]["reference"] == refs[o1]
    assert read(client, refs[spec])["subject"]["reference"] == refs[p]
    # the rewritten references are indexed: a reference search finds them
    pid = refs[p].split("/")[1]
    assert search_total(client, f"Observation?subject=Patient/{pid}") == 1
    assert search_total(client, f"DiagnosticReport?result={refs[o1]}") == 1


def test_placeholders_in_uri_elements_and_narrative_rewritten(client: Any) -> None:
    """http.html#trules: placeholders are replaced in uri/url elements and narrative links too."""
    b = uid()
    div = f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{b}">the document</a></div>'
    docref = {"resourceType": "DocumentReference", "status": "current", "text": {"status": "generated", "div": div}, "content": [{"attachment": {"contentType": "text/plain", "url": b}}]}
    r = post_bundle(client, [post_entry(docref), post_entry({"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="}, full_url=b)])
    assert r.status_code == 200, r.text
    binary = location_ref(r.json()["entry"][1])
    stored = read(client, location_ref(r.json()["entry"][0]))
    assert stored["content"][0]["attachment"]["url"].endswith(binary), stored["content"][0]["attachment"]
    assert b not in stored["text"]["div"] and binary in stored["text"]["div"], stored["text"]["div"]


def test_unknown_placeholder_fails(client: Any) -> None:
    before = snapshot(engine_of(client))
    r = post_bundle(client, [post_entry(pat(unique())), post_entry(obs(uid()))])
    assert_outcome(r, 400, 1, text="urn:uuid:")
    assert_unchanged(before, snapshot(engine_of(client)))


def test_conditional_references_resolved(client: Any) -> None:
    existing = create(client, pat("cond-existing"))
    fresh = unique("cond-new")
    o_nested = obs(
        f"Patient?identifier={SYS}|cond-existing",
        extension=[{"url": "http://example.org/ext", "valueReference": {"reference": f"Patient?identifier={SYS}|{fresh}"}}],
    )
    entries = [
        post_entry(o_nested),
        # a conditional reference to a Patient this same transaction creates
        post_entry(obs(f"Patient?identifier={SYS}|{fresh}")),
        post_entry(pat(fresh)),
    ]
    r = post_bundle(client, entries)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    created = location_ref(out[2])
    first = read(client, location_ref(out[0]))
    assert first["subject"]["reference"] == f"Patient/{existing['id']}"
    assert first["extension"][0]["valueReference"]["reference"] == created
    assert read(client, location_ref(out[1]))["subject"]["reference"] == created
    # the response shows the resolved references too, and the index has them
    assert out[1]["resource"]["subject"]["reference"] == created
    assert search_total(client, f"Observation?subject={created}") == 1
    assert search_total(client, f"Observation?subject=Patient/{existing['id']}") == 1


def test_conditional_reference_none_404_several_412(client: Any) -> None:
    create(client, pat("twin"))
    create(client, pat("twin"))
    before = snapshot(engine_of(client))
    r = post_bundle(client, [post_entry(pat(unique())), post_entry(obs(f"Patient?identifier={SYS}|nobody"))])
    assert_outcome(r, 404, 1, text="nobody")
    r = post_bundle(client, [post_entry(pat(unique())), post_entry(obs(f"Patient?identifier={SYS}|twin"))])
    assert_outcome(r, 412, 1, text="twin")
    assert_unchanged(before, snapshot(engine_of(client)))


def test_conditional_operations_multiple_matches_412(client: Any) -> None:
    create(client, pat("dup"))
    create(client, pat("dup"))
    before = snapshot(engine_of(client))
    for entry in (
        post_entry(pat("dup"), if_none_exist=f"identifier={SYS}|dup"),
        put_entry(pat("dup", active=True), url=f"Patient?identifier={SYS}|dup"),
        delete_entry(f"Patient?identifier={SYS}|dup"),
        patch_entry(f"Patient?identifier={SYS}|dup", [{"op": "add", "path": "/active", "value": True}]),
    ):
        r = post_bundle(client, [post_entry(pat(unique())), entry])
        assert_outcome(r, 412, 1)
    assert_unchanged(before, snapshot(engine_of(client)))


# --- identity rules and processing order -------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["put-put", "put-delete-existing", "put-delete-missing", "conditional-delete-put", "patch-put", "conditional-put-put"],
)
def test_resource_touched_twice_is_400(client: Any, case: str) -> None:
    put(client, pat("twice", id="twice-1"))
    before = snapshot(engine_of(client))
    body = pat("twice", id="twice-1", active=True)
    pairs = {
        "put-put": [put_entry(body), put_entry({**body, "active": False})],
        "put-delete-existing": [put_entry(body), delete_entry("Patient/twice-1")],
        # the identity overlaps whether or not the resource exists yet (http.html#trules)
        "put-delete-missing": [put_entry({"resourceType": "Patient", "id": "twice-new"}), delete_entry("Patient/twice-new")],
        "conditional-delete-put": [delete_entry(f"Patient?identifier={SYS}|twice"), put_entry(body)],
        "patch-put": [patch_entry("Patient/twice-1", [{"op": "add", "path": "/active", "value": False}]), put_entry(body)],
        "conditional-put-put": [put_entry(pat("twice", active=False), url=f"Patient?identifier={SYS}|twice"), put_entry(body)],
    }
    r = post_bundle(client, [post_entry(pat(unique())), *pairs[case]])
    assert r.status_code == 400, f"{case}: {r.status_code} {r.text[:1000]}"
    assert_outcome(r, 400, None)
    text = json.dumps(r.json())
    assert "Bundle.entry[1]" in text or "Bundle.entry[2]" in text
    assert_unchanged(before, snapshot(engine_of(client)))


def test_processing_order_delete_post_put_get(client: Any) -> None:
    mark = unique("order")
    old = create(client, pat(mark, name=[{"family": "Old"}]))
    put(client, {"resourceType": "Patient", "id": "order-put", "name": [{"family": "Before"}]})
    entries = [
        # listed in the reverse of the processing order
        get_entry(f"Patient?identifier={SYS}|{mark}"),
        get_entry("Patient/order-put"),
        put_entry({"resourceType": "Patient", "id": "order-put", "name": [{"family": "After"}]}),
        put_entry({"resourceType": "Patient", "id": "order-new", "name": [{"family": "New"}]}),
        get_entry("Patient/order-new"),
        # same conditional identifier: the DELETE runs first, so the conditional create finds nothing
        post_entry(pat(mark, name=[{"family": "Replacement"}]), if_none_exist=f"identifier={SYS}|{mark}"),
        delete_entry(f"Patient?identifier={SYS}|{mark}"),
    ]
    r = post_bundle(client, entries)
    assert r.status_code == 200, r.text
    got = codes(r)
    assert got[:6] == [200, 200, 200, 201, 200, 201]
    assert got[6] in (200, 204)
    out = r.json()["entry"]
    # the search ran after the writes: it sees the replacement, not the deleted original
    hits = [e["resource"] for e in out[0]["resource"].get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
    replacement = location_ref(out[5]).split("/")[1]
    assert [h["id"] for h in hits] == [replacement]
    assert replacement != old["id"]
    assert out[1]["resource"]["name"][0]["family"] == "After"
    assert out[1]["response"]["etag"] == 'W/"2"'
    assert out[4]["resource"]["name"][0]["family"] == "New"
    assert client.get(f"/fhir/Patient/{old['id']}", headers=FHIR).status_code == 410
    assert search_total(client, f"Patient?identifier={SYS}|{mark}") == 1
    # entries come back in request order, not processing order
    assert [e.get("resource", {}).get("resourceType") for e in out][:6] == ["Bundle", "Patient", "Patient", "Patient", "Patient", "Patient"]


def test_two_conditional_creates_of_the_same_identity(client: Any) -> None:
    """Two entries create "the" Patient with identifier X if none exists: never two Patients.

    Either both entries end on one resource, or the transaction is refused (a 4xx naming an
    entry) and nothing is stored.
    """
    mark = unique("twin-create")
    a, b = uid(), uid()
    entries = [
        post_entry(pat(mark), full_url=a, if_none_exist=f"identifier={SYS}|{mark}"),
        post_entry(pat(mark), full_url=b, if_none_exist=f"identifier={SYS}|{mark}"),
        post_entry(obs(a)),
        post_entry(obs(b)),
    ]
    before = snapshot(engine_of(client))
    r = post_bundle(client, entries)
    if r.status_code == 200:
        out = r.json()["entry"]
        assert location_ref(out[0]) == location_ref(out[1])
        assert search_total(client, f"Patient?identifier={SYS}|{mark}") == 1
    else:
        assert 400 <= r.status_code < 500, r.text
        assert_unchanged(before, snapshot(engine_of(client)))
    assert search_total(client, f"Patient?identifier={SYS}|{mark}") <= 1


# --- versions and preconditions ----------------------------------------------------------------


def test_if_match(client: Any) -> None:
    put(client, pat("im", id="im-1"))
    put(client, pat("im", id="im-1", active=True))  # now W/"2"
    before = snapshot(engine_of(client))
    for entry in (
        put_entry(pat("im", id="im-1", active=False), ifMatch='W/"1"'),
        delete_entry("Patient/im-1", ifMatch='W/"1"'),
        patch_entry("Patient/im-1", [{"op": "add", "path": "/active", "value": False}], ifMatch='W/"1"'),
        put_entry(pat("x", id="im-missing"), ifMatch='W/"1"'),
    ):
        r = post_bundle(client, [post_entry(pat(unique())), entry, put_entry(pat("other", id="im-other"))])
        assert_outcome(r, 412, 1)
    assert_unchanged(before, snapshot(engine_of(client)))
    r = post_bundle(client, [put_entry(pat("im", id="im-1", active=False), ifMatch='W/"2"')])
    assert r.status_code == 200, r.text
    assert statuses(r) == ["200 OK"]
    assert r.json()["entry"][0]["response"]["etag"] == 'W/"3"'
    assert read(client, "Patient/im-1")["active"] is False


def test_if_none_match(client: Any) -> None:
    put(client, pat("inm", id="inm-1"))
    before = snapshot(engine_of(client))
    r = post_bundle(client, [post_entry(pat(unique())), put_entry(pat("inm", id="inm-1", active=True), ifNoneMatch="*")])
    assert_outcome(r, 412, 1)
    assert_unchanged(before, snapshot(engine_of(client)))
    r = post_bundle(client, [put_entry(pat("inm", id="inm-2"), ifNoneMatch="*")])
    assert statuses(r) == ["201 Created"], r.text
    # GET with ifNoneMatch: 304 for the current version, the resource otherwise
    r = post_bundle(client, [get_entry("Patient/inm-1", ifNoneMatch='W/"1"'), get_entry("Patient/inm-2", ifNoneMatch='W/"9"')])
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert statuses(r) == ["304 Not Modified", "200 OK"]
    assert "resource" not in out[0]
    assert out[1]["resource"]["id"] == "inm-2"


def test_patch_entries(client: Any) -> None:
    mark = unique("patch")
    put(client, pat(mark, id="patch-1", active=False, name=[{"family": "Doe"}]))
    r = post_bundle(
        client,
        [
            patch_entry("Patient/patch-1", [{"op": "replace", "path": "/active", "value": True}, {"op": "add", "path": "/gender", "value": "female"}], ifMatch='W/"1"'),
            get_entry("Patient/patch-1"),
        ],
    )
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert statuses(r) == ["200 OK", "200 OK"]
    assert out[0]["response"]["etag"] == 'W/"2"'
    stored = read(client, "Patient/patch-1")
    assert stored["active"] is True and stored["gender"] == "female" and stored["name"] == [{"family": "Doe"}]
    assert out[1]["resource"]["gender"] == "female"  # the GET sees the patched version
    assert search_total(client, "Patient?gender=female&_id=patch-1") == 1  # re-indexed

    # conditional PATCH
    r = post_bundle(client, [patch_entry(f"Patient?identifier={SYS}|{mark}", [{"op": "replace", "path": "/gender", "value": "male"}])])
    assert statuses(r) == ["200 OK"], r.text
    assert read(client, "Patient/patch-1")["gender"] == "male"

    before = snapshot(engine_of(client))
    bad_base64 = {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": base64.b64encode(b"not json").decode()}, "request": {"method": "PATCH", "url": "Patient/patch-1"}}
    failures = [
        (bad_base64, 400),
        (patch_entry("Patient/patch-missing", [{"op": "add", "path": "/active", "value": True}]), 404),
        (patch_entry("Patient/patch-1", [{"op": "replace", "path": "/id", "value": "other"}]), 422),
        (patch_entry("Patient/patch-1", [{"op": "replace", "path": "/gender", "value": "banana"}]), 400),
        (patch_entry("Patient/patch-1", [{"op": "test", "path": "/gender", "value": "female"}]), None),
    ]
    for entry, status in failures:
        r = post_bundle(client, [post_entry(pat(unique())), entry])
        assert 400 <= r.status_code < 500, r.text
        if status is not None:
            assert_outcome(r, status, 1)
        else:
            assert_outcome(r, r.status_code, 1)
    assert_unchanged(before, snapshot(engine_of(client)))


def test_response_entries_carry_status_location_etag_last_modified(client: Any) -> None:
    put(client, pat("resp", id="resp-upd"))
    put(client, pat("resp", id="resp-del"))
    r = post_bundle(
        client,
        [
            post_entry(pat(unique())),
            put_entry(pat("resp", id="resp-upd", active=True)),
            put_entry(pat("resp", id="resp-new")),
            delete_entry("Patient/resp-del"),
            get_entry("Patient/resp-upd"),
        ],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    out = body["entry"]
    assert statuses(r)[:3] == ["201 Created", "200 OK", "201 Created"]
    assert codes(r)[3] in (200, 204)
    assert statuses(r)[4] == "200 OK"
    for e, version in zip(out[:3], ("1", "2", "1")):
        resp = e["response"]
        rtype, rid = location_ref(e).split("/")
        assert resp["location"] == f"{rtype}/{rid}/_history/{version}"
        assert resp["etag"] == f'W/"{version}"'
        assert datetime.fromisoformat(resp["lastModified"].replace("Z", "+00:00"))
        assert e["resource"]["meta"]["versionId"] == version
        assert e["resource"]["meta"]["lastUpdated"] == resp["lastModified"]
        assert e["fullUrl"].endswith(f"/fhir/{rtype}/{rid}")
        stored = read(client, f"{rtype}/{rid}")
        assert stored["meta"] == e["resource"]["meta"]
    assert out[3]["response"].get("etag", 'W/"2"') == 'W/"2"'
    assert out[4]["resource"]["meta"]["versionId"] == "2"
    assert out[4]["response"]["etag"] == 'W/"2"'
    # Prefer: return=minimal leaves the resources out but keeps status, location and etag
    r = post_bundle(client, [post_entry(pat(unique()))], headers={"prefer": "return=minimal"})
    e = r.json()["entry"][0]
    assert "resource" not in e
    assert e["response"]["status"] == "201 Created" and e["response"]["location"].endswith("/_history/1")
    assert e["response"]["etag"] == 'W/"1"' and "lastModified" in e["response"]


# --- batch ---------------------------------------------------------------------------------------


def test_batch_entries_are_independent(client: Any) -> None:
    put(client, pat("batch", id="batch-upd"))
    put(client, pat("batch", id="batch-upd", active=True))  # W/"2"
    good = unique("batch-good")
    entries = [
        post_entry(pat(good)),
        post_entry({"resourceType": "Patient", "gender": "banana"}),
        get_entry("Patient/batch-nope"),
        put_entry(pat("batch", id="batch-upd", active=False), ifMatch='W/"1"'),
        put_entry(pat("batch", id="batch-new")),
        {"request": {"method": "POST"}},
        post_entry(obs(f"Patient?identifier={SYS}|{good}")),
        post_entry(obs(f"Patient?identifier={SYS}|nobody-{good}")),
        delete_entry("Patient/batch-new"),
    ]
    r = post_bundle(client, entries, "batch")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "batch-response"
    got = codes(r)
    assert got[:8] == [201, 400, 404, 412, 201, 400, 201, 404]
    assert got[8] in (200, 204)
    out = body["entry"]
    for i, e in enumerate(out):
        if got[i] >= 400:
            outcome = e["response"]["outcome"]
            assert outcome["resourceType"] == "OperationOutcome"
            assert f"Bundle.entry[{i}]" in json.dumps(outcome), (i, outcome)
            assert "resource" not in e
    assert search_total(client, f"Patient?identifier={SYS}|{good}") == 1
    assert read(client, "Patient/batch-upd")["meta"]["versionId"] == "2"
    assert client.get("/fhir/Patient/batch-new", headers=FHIR).status_code == 410  # created, then deleted by entry 8
    pid = location_ref(out[0])
    assert read(client, location_ref(out[6]))["subject"]["reference"] == pid


def test_batch_rolls_back_only_the_failing_entry(client: Any) -> None:
    """An entry whose own conditional reference fails leaves no partial row behind."""
    engine = engine_of(client)
    before = snapshot(engine)
    r = post_bundle(client, [post_entry(obs(f"Patient?identifier={SYS}|missing")), put_entry(pat("x", id="b-x"), ifMatch='W/"7"')], "batch")
    assert codes(r) == [404, 412]
    assert_unchanged(before, snapshot(engine))


@pytest.mark.parametrize("path", ["/fhir", "/fhir/"])
@pytest.mark.parametrize("type_", ["transaction", "batch"])
def test_both_base_paths(client: Any, path: str, type_: str) -> None:
    r = post_bundle(client, [post_entry(pat(unique()))], type_, path=path)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == f"{type_}-response"
    assert statuses(r) == ["201 Created"]


@pytest.mark.parametrize("type_", ["collection", "document", "message", "searchset", "history", "transaction-response", None, 7])
def test_other_bundle_types_are_400(client: Any, type_: Any) -> None:
    before = snapshot(engine_of(client))
    doc = {"resourceType": "Bundle", "entry": [post_entry(pat(unique()))]}
    if type_ is not None:
        doc["type"] = type_
    r = client.post("/fhir", content=json.dumps(doc), headers=FHIR)
    assert_outcome(r, 400, None)
    assert_unchanged(before, snapshot(engine_of(client)))


def test_not_a_bundle_is_400(client: Any) -> None:
    assert_outcome(client.post("/fhir", content=json.dumps(pat("x")), headers=FHIR), 400, None)
    assert_outcome(client.post("/fhir", content=b"[1, 2]", headers=FHIR), 400, None)
    assert client.post("/fhir", content=b"{not json", headers=FHIR).status_code == 400
    r = client.post("/fhir", content=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": {"request": {}}}), headers=FHIR)
    assert_outcome(r, 400, None)


@pytest.fixture()
def small_client(database_url: str) -> Iterator[Any]:
    """An app on the same database that accepts at most 5 entries per Bundle."""
    from fastapi.testclient import TestClient

    from conftest import clean_store
    from service.app import create_app
    from service.config import Settings

    app = create_app(Settings.from_env(database_url=database_url, max_bundle_entries=5, log_level="WARNING"))
    clean_store(app)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.mark.parametrize("type_", ["transaction", "batch"])
def test_entry_limit_413(small_client: Any, type_: str) -> None:
    before = snapshot(engine_of(small_client))
    r = post_bundle(small_client, [post_entry(pat(unique())) for _ in range(6)], type_)
    assert_outcome(r, 413, None, text="5")
    assert_unchanged(before, snapshot(engine_of(small_client)))
    r = post_bundle(small_client, [post_entry(pat(unique())) for _ in range(5)], type_)
    assert r.status_code == 200, r.text
    assert codes(r) == [201] * 5


MALFORMED: dict[str, Any] = {
    "not-an-object": "Patient",
    "no-request": {"resource": {"resourceType": "Patient"}},
    "request-not-object": {"resource": {"resourceType": "Patient"}, "request": "POST Patient"},
    "no-method": {"resource": {"resourceType": "Patient"}, "request": {"url": "Patient"}},
    "no-url": {"resource": {"resourceType": "Patient"}, "request": {"method": "POST"}},
    "bad-method": {"resource": {"resourceType": "Patient"}, "request": {"method": "FETCH", "url": "Patient"}},
    "post-without-resource": {"request": {"method": "POST", "url": "Patient"}},
    "put-without-resource": {"request": {"method": "PUT", "url": "Patient/x1"}},
    "type-mismatch": {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Patient"}},
    "put-id-mismatch": {"resource": {"resourceType": "Patient", "id": "a"}, "request": {"method": "PUT", "url": "Patient/b"}},
    "put-to-type": {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient"}},
    "post-to-id": {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "POST", "url": "Patient/x"}},
    "delete-type": {"request": {"method": "DELETE", "url": "Patient"}},
    "bad-id": {"request": {"method": "GET", "url": "Patient/not_valid!"}},
    "system-level": {"request": {"method": "GET", "url": "/?_type=Patient"}},
    "operation": {"request": {"method": "GET", "url": "Patient/$everything"}},
    "invalid-resource": {"resource": {"resourceType": "Patient", "gender": "banana"}, "request": {"method": "POST", "url": "Patient"}},
    "unknown-element": {"resource": {"resourceType": "Patient", "colour": "blue"}, "request": {"method": "POST", "url": "Patient"}},
    "empty-url": {"request": {"method": "GET", "url": ""}},
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_entry_is_400_naming_the_index(client: Any, name: str) -> None:
    before = snapshot(engine_of(client))
    entries = [post_entry(pat(unique())), put_entry(pat("m", id="malformed-ok")), MALFORMED[name], post_entry(pat(unique()))]
    r = post_bundle(client, entries)
    assert_outcome(r, 400, 2)
    assert_unchanged(before, snapshot(engine_of(client)))


def test_unknown_resource_type_names_the_entry(client: Any) -> None:
    before = snapshot(engine_of(client))
    r = post_bundle(client, [post_entry(pat(unique())), get_entry("Foo/1")])
    assert r.status_code in (400, 404), r.text
    assert_outcome(r, r.status_code, 1, text="Foo")
    assert_unchanged(before, snapshot(engine_of(client)))


# --- all or nothing ------------------------------------------------------------------------------


def _big_good_bundle(mark: str) -> list[dict[str, Any]]:
    """30 entries that succeed on a seeded store: creates, conditional creates, updates, a delete, reads."""
    p = uid()
    entries: list[dict[str, Any]] = [post_entry(pat(f"{mark}-p", name=[{"family": "Rollback"}]), full_url=p)]
    for i in range(10):
        entries.append(post_entry(obs(p, effectiveDateTime=f"2024-02-{i + 1:02d}", identifier=[{"system": SYS, "value": f"{mark}-o{i}"}])))
    for i in range(5):
        entries.append(post_entry(pat(f"{mark}-c{i}"), if_none_exist=f"identifier={SYS}|{mark}-c{i}"))
    entries.append(put_entry(pat("seed-1", id="seed-p1", name=[{"family": "Changed"}], birthDate="1980-05-05")))
    entries.append(put_entry(pat("seed-2", id="seed-p2")))  # re-creates the deleted one
    entries.append(delete_entry("Observation/seed-o1"))
    entries.append(put_entry({"resourceType": "Organization", "id": "seed-org", "name": "Renamed", "identifier": [{"system": SYS, "value": "org"}]}, ifMatch='W/"1"'))
    entries.append(get_entry("Organization/seed-org"))
    for i in range(9):
        entries.append(post_entry({"resourceType": "Encounter", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": {"reference": p}}))
    entries.append(get_entry(f"Patient?identifier={SYS}|{mark}-p"))
    return entries


BAD_ENTRIES: dict[str, tuple[dict[str, Any], int]] = {
    "invalid-resource": (post_entry(obs("Patient/x", status="not-a-status")), 400),
    "unresolvable-placeholder": (post_entry(obs("urn:uuid:00000000-0000-4000-8000-000000000000")), 400),
    "unresolvable-conditional-reference": (post_entry(obs(f"Patient?identifier={SYS}|no-such-patient")), 404),
    "failing-if-match": (put_entry(pat("seed-x", id="seed-p3"), ifMatch='W/"5"'), 412),
    "failing-if-none-match": (put_entry(pat("seed-x", id="seed-p3"), ifNoneMatch="*"), 412),
    "multiple-matches": (delete_entry("Patient?family=Seed"), 412),
    "patch-missing": (patch_entry("Patient/nope", [{"op": "add", "path": "/active", "value": True}]), 404),
    # a GET runs after every write has been flushed: its failure must undo all of them
    "read-missing-after-writes": (get_entry("Patient/does-not-exist"), 404),
    "vread-missing-after-writes": (get_entry("Patient/seed-p2/_history/99"), 404),
}


@pytest.mark.parametrize("name", sorted(BAD_ENTRIES))
def test_bad_entry_in_the_middle_leaves_the_database_exactly_as_before(client: Any, name: str) -> None:
    seed_store(client)
    put(client, pat("seed-x", id="seed-p3", name=[{"family": "Seed"}]))  # two live "Seed" patients
    engine = engine_of(client)
    mark = unique("rb")
    entries = _big_good_bundle(mark)
    bad, status = copy.deepcopy(BAD_ENTRIES[name][0]), BAD_ENTRIES[name][1]
    middle = len(entries) // 2
    entries.insert(middle, bad)
    before = snapshot(engine)
    r = post_bundle(client, entries)
    assert_outcome(r, status, middle)
    assert_unchanged(before, snapshot(engine))
    # and the same bundle without the bad entry succeeds (so the failure was that entry's)
    del entries[middle]
    r = post_bundle(client, entries)
    assert r.status_code == 200, r.text
    assert search_total(client, f"Observation?identifier={SYS}|{mark}-o3") == 1


def test_a_retried_transaction_is_not_changed_by_its_failed_attempt(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serialization conflict re-runs the transaction (engine.run_in_transaction); the re-run
    must start from the Bundle as sent, not from what the failed attempt left in memory.

    The conflict is injected once, at the first write, as a concurrent writer would cause it.
    """
    from service.storage import repository

    original = repository.ResourceRepository._write  # what write_many and writing() both call
    calls = {"n": 0}

    def conflict_once(writer, writes):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise repository.StaleVersionError("Patient", "injected")
        return original(writer, writes)

    mark = unique("retry")
    p = uid()
    put(client, pat("retry", id="retry-upd"))
    monkeypatch.setattr(repository.ResourceRepository, "_write", staticmethod(conflict_once))
    r = post_bundle(
        client,
        [
            post_entry(pat(mark), full_url=p, if_none_exist=f"identifier={SYS}|{mark}"),
            post_entry(obs(p)),
            put_entry({"resourceType": "Patient", "id": "retry-upd", "link": [{"other": {"reference": p}, "type": "seealso"}]}),
        ],
    )
    assert calls["n"] >= 2, "the injected conflict was not retried"
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    patient = location_ref(out[0])
    read(client, patient)
    assert read(client, location_ref(out[1]))["subject"]["reference"] == patient, "the Observation references a Patient that was never created"
    assert read(client, "Patient/retry-upd")["link"][0]["other"]["reference"] == patient
    assert search_total(client, f"Patient?identifier={SYS}|{mark}") == 1


# --- idempotency -----------------------------------------------------------------------------------


def test_resending_conditional_creates_creates_nothing(client: Any) -> None:
    seed_store(client)
    mark = unique("idem")
    entries = [post_entry(pat(f"{mark}-{i}", name=[{"family": f"F{i}"}]), full_url=uid(), if_none_exist=f"identifier={SYS}|{mark}-{i}") for i in range(15)]
    entries.append(post_entry({"resourceType": "Organization", "identifier": [{"system": SYS, "value": f"{mark}-org"}], "name": "Idem"}, if_none_exist=f"Organization?identifier={SYS}|{mark}-org"))
    r1 = post_bundle(client, entries)
    assert r1.status_code == 200, r1.text
    assert codes(r1) == [201] * 16
    first = [location_ref(e) for e in r1.json()["entry"]]
    engine = engine_of(client)
    before = snapshot(engine)
    for _ in range(2):
        r = post_bundle(client, entries)
        assert r.status_code == 200, r.text
        assert codes(r) == [200] * 16
        assert [location_ref(e) for e in r.json()["entry"]] == first
        assert all(e["response"]["etag"] == 'W/"1"' for e in r.json()["entry"])
        assert_unchanged(before, snapshot(engine))
    assert live_count(engine, "Patient") == 1 + 15  # seed-p1 (seed-p2 is deleted) and the 15 created once


# --- races between real clients ----------------------------------------------------------------------

TIMEOUT = httpx.Timeout(120.0)


@pytest.fixture(scope="module")
def tx_race_server(backend: str, databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    workers = 3 if backend == "postgresql" else 2
    server = start_server(databases.url(backend, "txrace"), tmp_path_factory.mktemp("txrace"), workers=workers)
    with httpx.Client(timeout=TIMEOUT) as c:
        for _ in range(4 * workers):
            assert c.get(server.base + "/metadata", headers=FHIR).status_code == 200
    yield server
    server.stop()


def race(n: int, work: Callable[[httpx.Client, int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        with httpx.Client(timeout=TIMEOUT) as c:
            barrier.wait(timeout=60)
            return work(c, i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def live_total(server: LiveServer, query: str) -> int:
    r = httpx.get(f"{server.base}/{query}&_summary=count", headers=FHIR, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


@pytest.mark.slow
@pytest.mark.parametrize("order", ["same", "shuffled"])
def test_concurrent_conditional_create_transactions(tx_race_server: LiveServer, order: str) -> None:
    """8 clients send the transaction "20 conditional Patient creates + 20 Observations referencing
    them by urn:uuid" at once — the same Bundle, or (``shuffled``) each client listing the same
    Patients in its own order, as independent uploaders of overlapping data would."""
    import random

    mark = unique("race")
    psys, osys = f"urn:trialfhir:race:{mark}:patient", f"urn:trialfhir:race:{mark}:obs"
    pids = [uid() for _ in range(20)]
    payloads: list[str] = []
    orders: list[list[int]] = []
    for i in range(8):
        ks = list(range(20))
        if order == "shuffled":
            random.Random(i).shuffle(ks)
        entries = [post_entry(pat(f"p{k}", system=psys), full_url=pids[k], if_none_exist=f"identifier={psys}|p{k}") for k in ks]
        entries += [post_entry(obs(pids[k], identifier=[{"system": osys, "value": f"o{k}"}])) for k in ks]
        payloads.append(json.dumps(bundle(entries)))
        orders.append(ks)

    def work(c: httpx.Client, i: int) -> tuple[list[str], Any]:
        seen: list[str] = []
        for attempt in range(5):
            t0 = time.monotonic()
            try:
                r = c.post(tx_race_server.base, content=payloads[i], headers=FHIR)
            except httpx.TimeoutException:
                seen.append(f"no answer in {TIMEOUT.read:.0f}s")
                return seen, None
            seen.append(f"{r.status_code} in {time.monotonic() - t0:.1f}s")
            if r.status_code == 200:
                return seen, r.json()
            if r.status_code not in (409, 412) or r.json().get("resourceType") != "OperationOutcome":
                seen.append(r.text[:300])
                return seen, None
            time.sleep(0.05 * (attempt + 1))
        return seen, None

    results = race(8, work)
    answers_by_client = [seen for seen, _ in results]
    assert not [a for seen in answers_by_client for a in seen if a[:1] == "5"], answers_by_client
    assert all(body is not None for _, body in results), f"not every client succeeded within 5 tries (409/412 retried): {answers_by_client}"
    assert live_total(tx_race_server, f"Patient?identifier={psys}|") == 20
    assert live_total(tx_race_server, f"Observation?identifier={osys}|") == 20 * 8
    # per Patient: one 201 across all clients, the same id everywhere
    wrong = []
    for k in range(20):
        answers = []
        for i, (_, body) in enumerate(results):
            pos = orders[i].index(k)
            answers.append((body["entry"][pos]["response"]["status"], location_ref(body["entry"][pos])))
        assert sum(1 for s, _ in answers if s.startswith("201")) == 1, answers
        assert all(s.startswith(("200", "201")) for s, _ in answers), answers
        assert len({ref for _, ref in answers}) == 1, answers
        # every Observation k points at that one Patient, in the response and in the store
        ref = answers[0][1]
        for i, (seen, body) in enumerate(results):
            e = body["entry"][20 + orders[i].index(k)]
            obs_ref = location_ref(e)
            stored = httpx.get(f"{tx_race_server.base}/{obs_ref}", headers=FHIR, timeout=TIMEOUT).json()
            subject = stored["subject"]["reference"]
            if subject != ref or e["resource"]["subject"]["reference"] != ref:
                target = httpx.get(f"{tx_race_server.base}/{subject}", headers=FHIR, timeout=TIMEOUT).status_code
                wrong.append(f"client {i} (answers {seen}): {obs_ref}.subject = {subject} (GET -> {target}), expected {ref}")
    assert not wrong, f"{len(wrong)} Observations do not reference the Patient of their urn:uuid:\n" + "\n".join(wrong[:10])


@pytest.mark.slow
def test_concurrent_if_match_transactions_are_serialised(tx_race_server: LiveServer) -> None:
    mark = unique("lock")
    ids = [f"{mark}-{k}" for k in range(3)]
    with httpx.Client(timeout=TIMEOUT) as c:
        for rid in ids:
            r = c.put(f"{tx_race_server.base}/Patient/{rid}", content=json.dumps(pat("lock", id=rid)), headers=FHIR)
            assert r.status_code == 201, r.text

    def work(c: httpx.Client, i: int) -> list[tuple[int, str | None]]:
        log: list[tuple[int, str | None]] = []
        for attempt in range(5):
            versions = []
            for rid in ids:
                g = c.get(f"{tx_race_server.base}/Patient/{rid}", headers=FHIR)
                assert g.status_code == 200, g.text
                versions.append(g.json()["meta"]["versionId"])
            marker = f"c{i}-a{attempt}"
            entries = [put_entry(pat("lock", id=rid, name=[{"text": marker}]), ifMatch=f'W/"{v}"') for rid, v in zip(ids, versions)]
            r = c.post(tx_race_server.base, content=json.dumps(bundle(entries)), headers=FHIR)
            assert r.status_code < 500, f"client {i}: {r.status_code} {r.text[:1000]}"
            if r.status_code == 200:
                assert statuses(r) == ["200 OK"] * 3
                log.append((200, marker))
                return log
            assert r.status_code in (409, 412), f"client {i}: {r.status_code} {r.text[:1000]}"
            log.append((r.status_code, None))
        return log

    logs = race(8, work)
    winners = [m for log in logs for status, m in log if status == 200]
    assert winners, logs
    assert len(winners) == len(set(winners))
    with httpx.Client(timeout=TIMEOUT) as c:
        histories = []
        for rid in ids:
            cur = c.get(f"{tx_race_server.base}/Patient/{rid}", headers=FHIR).json()
            assert cur["meta"]["versionId"] == str(1 + len(winners)), (rid, cur["meta"], logs)
            h = c.get(f"{tx_race_server.base}/Patient/{rid}/_history?_count=100", headers=FHIR).json()
            by_version = {int(e["resource"]["meta"]["versionId"]): e["resource"] for e in h["entry"]}
            assert sorted(by_version) == list(range(1, 2 + len(winners)))
            histories.append([by_version[v].get("name", [{}])[0].get("text") for v in range(2, 2 + len(winners))])
    # no lost update: every successful transaction is one version of each resource, and the three
    # resources went through the same sequence of transactions
    assert sorted(histories[0]) == sorted(winners)
    assert histories[0] == histories[1] == histories[2]
