"""fhirpy interactions that tests/test_clients.py and tests/test_search_clients.py leave out.

Those files cover fhirpy's CRUD, ``get_or_create``, merge PATCH, conditional delete and
``fetch_all`` paging (sync and async). This file adds what an ingest script written with
fhirpy also does, for the async client (aiohttp) and, where missing, the sync one:

- conditional create in the query form ``resource.create(identifier=…)`` →
  ``POST /Patient?identifier=…`` (async);
- conditional update / patch through a search set (``PUT``/``PATCH [type]?criteria``)
  and ``count()`` (``_count=0``) (async);
- ``refresh()`` → ``If-None-Match`` without ``W/`` → 304 (async);
- a transaction posted with ``client.execute('/', method='post', data=bundle)``
  (``POST [base]/``, trailing slash) with ``urn:uuid`` references (sync and async);
- instance and type history through ``execute('_history', method='get')`` (sync and async).

Everything the client reports is checked against the server state read back with httpx.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient, SyncFHIRClient

from support import unique

pytestmark = pytest.mark.slow

ACCEPT = {"accept": "application/fhir+json"}


def read(base: str, path: str) -> httpx.Response:
    return httpx.get(f"{base}/{path}", headers=ACCEPT, timeout=30)


def match_ids(base: str, rtype: str, **params: str) -> list[str]:
    r = httpx.get(f"{base}/{rtype}", params={"_count": "100", **params}, headers=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def patient(system: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], **extra}


def transaction_bundle(system: str, value: str) -> dict[str, Any]:
    """A Patient (urn:uuid, ifNoneExist) and an Observation referring to it."""
    urn = "urn:uuid:0d6c9a3e-6f0b-4b70-9c61-4b2f1c9f0e11"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn,
                "resource": patient(system, value),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|{value}"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5"}]},
                    "subject": {"reference": urn},
                    "valueQuantity": {"value": 3.1, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def check_transaction(base: str, response: dict[str, Any], system: str, value: str) -> str:
    """The response is a transaction-response whose Observation points at the new Patient."""
    assert response["resourceType"] == "Bundle" and response["type"] == "transaction-response"
    assert [e["response"]["status"].split()[0] for e in response["entry"]] == ["201", "201"]
    pid = response["entry"][0]["response"]["location"].split("Patient/")[1].split("/")[0]
    oid = response["entry"][1]["response"]["location"].split("Observation/")[1].split("/")[0]
    assert match_ids(base, "Patient", identifier=f"{system}|{value}") == [pid]
    obs = read(base, f"Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    return pid


# fhirpy 2.3.1's AsyncSearchSet.patch warns on every call, whatever the arguments
@pytest.mark.filterwarnings("ignore:The first arg of method patch:DeprecationWarning")
def test_fhirpy_async_conditional_create_update_patch_count(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    system = f"urn:fpa:{unique('sys')}"

    async def scenario() -> dict[str, Any]:
        c = AsyncFHIRClient(base, authorization=None)
        out: dict[str, Any] = {}
        # POST /Patient?identifier=… twice: one resource
        a = c.resource("Patient", **patient(system, "m1", gender="male"))
        await a.create(identifier=f"{system}|m1")
        b = c.resource("Patient", **patient(system, "m1", gender="female"))
        await b.create(identifier=f"{system}|m1")
        out["create"] = (a.id, b.id, b.get("gender"))

        search = c.resources("Patient").search(identifier=f"{system}|u1")
        first, created1 = await search.update(c.resource("Patient", **patient(system, "u1", gender="male")))
        second, created2 = await search.update(c.resource("Patient", **patient(system, "u1", gender="other")))
        out["update"] = (first.id, created1, second.id, created2, second["meta"]["versionId"])
        patched = await search.patch(birthDate="2000-01-02")
        out["patch"] = (patched.id, patched["meta"]["versionId"], patched["birthDate"], patched["gender"])
        out["count"] = await c.resources("Patient").search(identifier=f"{system}|").count()

        before = second["meta"]["versionId"]
        await second.refresh()  # If-None-Match: "2" is stale → the server sends version 3
        out["refresh"] = (before, second["meta"]["versionId"], second.get("birthDate"))
        await second.refresh()  # now current → 304, unchanged
        out["refresh304"] = second["meta"]["versionId"]
        return out

    out = asyncio.run(scenario())
    a_id, b_id, b_gender = out["create"]
    assert a_id == b_id and b_gender == "male"  # the match is returned, the second body not written
    assert match_ids(base, "Patient", identifier=f"{system}|m1") == [a_id]

    f_id, created1, s_id, created2, version = out["update"]
    assert (created1, created2, version) == (True, False, "2") and f_id == s_id
    assert out["patch"] == (f_id, "3", "2000-01-02", "other")
    assert out["count"] == 2
    assert out["refresh"] == ("2", "3", "2000-01-02") and out["refresh304"] == "3"
    current = read(base, f"Patient/{f_id}")
    assert current.headers["etag"] == 'W/"3"' and current.json()["birthDate"] == "2000-01-02"


def test_fhirpy_async_transaction_and_history(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    system = f"urn:fpa:{unique('tx')}"

    async def scenario() -> dict[str, Any]:
        c = AsyncFHIRClient(base, authorization=None)
        out: dict[str, Any] = {}
        tx = await c.execute("/", method="post", data=transaction_bundle(system, "t1"))
        out["pid"] = check_transaction(base, tx, system, "t1")  # before the delete below
        out["replay"] = await c.execute("/", method="post", data=transaction_bundle(system, "t1"))
        out["after_replay"] = match_ids(base, "Patient", identifier=f"{system}|t1")
        p = await c.resources("Patient").search(identifier=f"{system}|t1").get()
        await p.patch(active=True)
        await p.delete()
        out["history"] = await c.execute(f"Patient/{p.id}/_history", method="get")
        out["type_history"] = await c.resources("Patient").execute("_history", method="get", params={"_count": 5})
        return out

    out = asyncio.run(scenario())
    pid = out["pid"]
    # the replay's ifNoneExist matched: the Patient is not duplicated (the Observation is new)
    assert out["replay"]["entry"][0]["response"]["status"].startswith("200")
    assert out["after_replay"] == [pid]
    hist = out["history"]
    assert hist["type"] == "history"
    assert [e["request"]["method"] for e in reversed(hist["entry"])] == ["POST", "PATCH", "DELETE"]
    assert out["type_history"]["type"] == "history" and 0 < len(out["type_history"]["entry"]) <= 5
    assert read(base, f"Patient/{pid}").status_code == 410


def test_fhirpy_sync_transaction_and_history(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    system = f"urn:fps:{unique('tx')}"
    c = SyncFHIRClient(base, authorization=None)
    pid = check_transaction(base, c.execute("/", method="post", data=transaction_bundle(system, "t1")), system, "t1")
    p = c.reference("Patient", pid).to_resource()
    p["gender"] = "female"
    p.save()
    hist = p.execute("_history", method="get")
    assert hist["type"] == "history"
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in hist["entry"]) == [1, 2]
    assert [e["request"]["method"] for e in reversed(hist["entry"])] == ["POST", "PUT"]
