"""Hostile input: every request of the corpus is answered 4xx with an OperationOutcome (or a
valid result), never 5xx, never with a stack trace, SQL or driver text, and stores nothing.

The corpus: SQL and FHIRPath injection strings in every search parameter type and
modifier, huge and deeply nested JSON, invalid UTF-8, duplicate JSON keys, an XML
billion-laughs body, path traversal in ids, oversized Bundles. Both backends.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}

INJECTIONS = [
    "' OR '1'='1",
    "1' OR 1=1 --",
    "'; DROP TABLE resource; --",
    "1) UNION SELECT content FROM resource --",
    '" OR ""="',
    "%' AND 1=0 UNION ALL SELECT NULL,NULL --",
    "\\'; SELECT pg_sleep(5); --",
    "Patient.name.where(true)",
    "%resource.id",
    "$this",
    "') or true or ('",
    "iif(true, 'a', 'b')",
    "../../../../etc/passwd",
    "\u0000",
    "\u202e\u2066",
    "a" * 5000,
    "ge2020-13-45T99:99:99",
    "1e999999",
    "http://x|y|z|w",
    "$$$",
    "\\\\,\\|\\$",
]

#: (resource type, parameter) pairs covering every search parameter type and common modifiers.
PARAMETERS = [
    ("Patient", "name"),  # string
    ("Patient", "name:exact"),
    ("Patient", "name:contains"),
    ("Patient", "identifier"),  # token
    ("Patient", "identifier:of-type"),
    ("Patient", "gender:not"),
    ("Observation", "code:text"),
    ("Patient", "birthdate"),  # date
    ("Observation", "date"),
    ("RiskAssessment", "probability"),  # number
    ("Observation", "value-quantity"),  # quantity
    ("Observation", "subject"),  # reference
    ("Observation", "subject:Patient"),
    ("Observation", "subject.name"),  # chained
    ("Observation", "subject:Patient.identifier"),
    ("ValueSet", "url"),  # uri
    ("Observation", "code-value-quantity"),  # composite
    ("Observation", "combo-code-value-quantity"),
    ("Patient", "_id"),
    ("Patient", "_lastUpdated"),
    ("Patient", "_has:Observation:subject:code"),
    ("Observation", "study"),  # special
    ("Patient", "name:missing"),
    ("Patient", "_sort"),
    ("Patient", "_include"),
    ("Patient", "_revinclude"),
    ("Patient", "_count"),
    ("Patient", "_summary"),
    ("Patient", "_elements"),
    ("Patient", "_total"),
    ("Patient", "_cursor"),
]

LEAKS = ("Traceback", "SELECT ", "sqlalchemy", "psycopg", "sqlite3", "File \"/", "Exception:", "Error:")


def _assert_safe(r: Any, what: str, echoed: str = "") -> None:
    """No 5xx; no internals in the body (the caller's own input may be quoted back)."""
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    text = r.text
    if echoed:  # the whole value, its comma-separated OR parts, without a 2-letter prefix
        pieces = [echoed, *echoed.split(","), *(p[2:] for p in echoed.split(","))]
        for piece in sorted({p for p in pieces if len(p) > 3}, key=len, reverse=True):
            for form in {piece, json.dumps(piece)[1:-1], json.dumps(piece, ensure_ascii=False)[1:-1]}:
                text = text.replace(form, "")
    for leak in LEAKS:
        assert leak not in text, (what, leak, text[:500])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/fhir+json"):
        assert r.json()["resourceType"] == "OperationOutcome", what


def _stored(app: Any) -> int:
    from service.db.schema import resource

    with app.state.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(resource)).scalar_one())


def test_injection_strings_in_every_search_parameter_type(client: Any, app: Any) -> None:
    for rtype, param in PARAMETERS:
        for value in INJECTIONS:
            for strict in (False, True):
                headers = dict(FHIR, prefer="handling=strict") if strict else FHIR
                r = client.get(f"/fhir/{rtype}?{quote(param)}={quote(value, safe='')}", headers=headers)
                _assert_safe(r, f"{rtype}?{param}={value[:40]!r}", value)
    # the same strings as parameter names, in POST _search bodies and in conditional headers
    for value in INJECTIONS[:12]:
        _assert_safe(client.get(f"/fhir/Patient?{quote(value, safe='')}=x", headers=FHIR), f"name {value!r}", value)
        r = client.post("/fhir/Patient/_search", content=f"name={quote(value, safe='')}", headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/fhir+json"})
        _assert_safe(r, f"_search {value!r}", value)
        r = client.post("/fhir/Patient", content=b"{\"resourceType\": \"Patient\", \"gender\": \"robot\"}", headers={**FHIR, "if-none-exist": f"identifier={value}"})
        _assert_safe(r, f"If-None-Exist {value!r}", value)
    assert _stored(app) == 0


def test_injection_strings_are_stored_as_data_and_found_only_literally(client: Any) -> None:
    """Values are bound parameters: a name that looks like SQL is just a name."""
    body = {"resourceType": "Patient", "name": [{"family": "'; DROP TABLE resource; --"}], "identifier": [{"system": "urn:x", "value": "' OR '1'='1"}]}
    created = client.post("/fhir/Patient", json=body, headers=FHIR)
    assert created.status_code == 201
    other = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Other"}]}, headers=FHIR)
    assert other.status_code == 201
    found = client.get("/fhir/Patient?identifier=" + quote("urn:x|' OR '1'='1", safe=""), headers=FHIR).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]
    assert client.get("/fhir/Patient?_summary=count", headers=FHIR).json()["total"] == 2
    assert client.get(f"/fhir/Patient/{created.json()['id']}", headers=FHIR).json()["name"] == body["name"]


@pytest.mark.parametrize(
    "name, body, content_type, status",
    [
        ("invalid UTF-8", b'{"resourceType": "Patient", "gender": "\xff\xfe"}', "application/fhir+json", 400),
        ("duplicate keys", b'{"resourceType": "Patient", "gender": "male", "gender": "female"}', "application/fhir+json", 400),
        ("deeply nested", b'{"resourceType": "Patient", "extension": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "application/fhir+json", 400),
        ("not JSON", b"\x00\x01\x02 garbage", "application/fhir+json", 400),
        ("a JSON array", b"[1, 2, 3]", "application/fhir+json", 400),
        ("NUL in a string", b'{"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]}', "application/fhir+json", 400),
        ("XML billion laughs", b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><Patient xmlns="http://hl7.org/fhir"><gender value="&lol3;"/></Patient>', "application/fhir+xml", 415),
        ("huge", b'{"resourceType": "Patient", "text": {"status": "generated", "div": "' + b"x" * (5 * 1024 * 1024) + b'"}}', "application/fhir+json", 413),
        ("huge number", b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": ' + b"9" * 5000 + b"}", "application/fhir+json", 400),
    ],
)
def test_hostile_bodies_are_refused_and_nothing_is_stored(client: Any, app: Any, name: str, body: bytes, content_type: str, status: int) -> None:
    target = "/fhir/Observation" if b"Observation" in body[:40] else "/fhir/Patient"
    for method, path in (("POST", target), ("PUT", target + "/x1"), ("POST", "/fhir")):
        r = client.request(method, path, content=body, headers={"content-type": content_type, "accept": "application/fhir+json"})
        assert r.status_code < 500 and r.status_code >= 400, (name, method, path, r.status_code)
        if method == "POST" and path == target:
            assert r.status_code == status, (name, r.status_code, r.text[:300])
        _assert_safe(r, name)
    assert _stored(app) == 0


def test_path_traversal_and_odd_ids_are_4xx(client: Any, app: Any) -> None:
    paths = [
        "/fhir/Patient/..%2F..%2Fetc%2Fpasswd",
        "/fhir/Patient/a%00b",
        "/fhir/Patient/" + "a" * 65,
        "/fhir/Patient/x/_history/..%2F1",
        "/fhir/$export-file/..%2F..%2Fetc/passwd",
        "/fhir/$export-file/job/..%2F..%2F..%2Fetc%2Fpasswd",
        "/fhir/$export-status/%27%20OR%201%3D1",
        "/fhir/Group/..%2Fx/$export",
        "/fhir/..%2F..%2Fapi/studies",
        "/api/studies/..%2F..%2Fetc",
    ]
    for path in paths:
        for method in ("GET", "PUT", "DELETE"):
            body = json.dumps({"resourceType": "Patient", "id": path.rsplit("/", 1)[-1]}).encode()
            r = client.request(method, path, content=body if method == "PUT" else None, headers=FHIR)
            assert 400 <= r.status_code < 500, (method, path, r.status_code)
            _assert_safe(r, f"{method} {path}")
    assert _stored(app) == 0


def test_oversized_and_malformed_bundles(client: Any, app: Any) -> None:
    limit = app.state.settings.max_bundle_entries
    entries = [{"resource": {"resourceType": "Basic", "code": {"text": "x"}}, "request": {"method": "POST", "url": "Basic"}}] * (limit + 1)
    r = client.post("/fhir", content=json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}), headers=FHIR)
    assert r.status_code == 413 and "TRIALFHIR_MAX_BUNDLE_ENTRIES" in r.json()["issue"][0]["diagnostics"]
    odd = [
        {"resourceType": "Bundle", "type": "transaction", "entry": "nope"},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "GET", "url": "../../etc/passwd"}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DROP", "url": "Patient"}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "GET", "url": "Patient?name=' OR 1=1 --"}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "GET", "url": "http://elsewhere.example/fhir/Patient/1"}}]},
        {"resourceType": "Bundle", "type": "batch", "entry": [None, 7, "x", {"request": None}]},
    ]
    for doc in odd:
        r = client.post("/fhir", json=doc, headers=FHIR)
        _assert_safe(r, json.dumps(doc)[:80], "Patient?name=' OR 1=1 --")
    assert _stored(app) == 0


def test_api_problem_details_never_leak_internals(client: Any) -> None:
    for body in (b"{", b'{"code": ' + b"[" * 100_000 + b"}", b'{"code": "\xff"}', json.dumps({"code": "'; DROP TABLE resource; --"}).encode()):
        r = client.post("/api/studies", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, r.status_code
        _assert_safe(r, body[:40].decode("latin-1"), "'; DROP TABLE resource; --")
