"""Third-party FHIR clients nobody here wrote, against a real ``trialfhir serve`` process.

- fhirpy 2.3.1 (Beda Software): ``SyncFHIRClient`` (requests) and ``AsyncFHIRClient``
  (aiohttp). It sends ``application/json`` bodies, a merge patch for ``resource.patch()``,
  conditional create as ``POST [type]?criteria`` (``get_or_create``), conditional delete
  as ``DELETE [type]?criteria`` and follows absolute ``next`` links in ``fetch_all``.
  It raises ``ResourceNotFound`` for both 404 and 410.
- fhirclient 4.4.0 (SMART on FHIR python client, models generated from FHIR 4.0.1). Its
  models parse every response strictly, so a response that is not valid R4 fails here.
  It has no API for conditional create: the tests send ``If-None-Exist`` through the
  client's own ``requests.Session`` (``smart.server.session``) and parse the answer with
  its ``Patient`` model. It raises ``FHIRNotFoundException`` only for 404; a 410 surfaces
  as ``requests.HTTPError``.

Every check reads the real server state back with httpx (status, ETag ``W/"n"``,
``meta.versionId``, history), rather than trusting what the client library reports.
The live server is shared by the whole session, so every identifier is unique.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any

import httpx
import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle as FCBundle
from fhirclient.models.patient import Patient as FCPatient
from fhirclient.server import FHIRNotFoundException
from fhirpy import AsyncFHIRClient, SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

from support import unique

pytestmark = pytest.mark.slow

ACCEPT = {"accept": "application/fhir+json"}


# --- helpers reading the server state with httpx -------------------------------------------


def read(base: str, rtype: str, id: str) -> httpx.Response:
    return httpx.get(f"{base}/{rtype}/{id}", headers=ACCEPT, timeout=30)


def assert_current(base: str, id: str, version: int) -> dict[str, Any]:
    """The Patient is readable, at ``version``, and ETag and meta.versionId agree."""
    r = read(base, "Patient", id)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == f'W/"{version}"'
    body = r.json()
    assert body["resourceType"] == "Patient"
    assert body["id"] == id
    assert body["meta"]["versionId"] == str(version)
    return body


def history(base: str, rtype: str, id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/{rtype}/{id}/_history", params={"_count": "100"}, headers=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["type"] == "history"
    assert not any(link["relation"] == "next" for link in doc.get("link", []))
    return doc.get("entry", [])


def history_versions(base: str, rtype: str, id: str) -> list[int]:
    """Version numbers in the instance history, oldest first."""
    return sorted(int(e["response"]["etag"].removeprefix('W/"').removesuffix('"')) for e in history(base, rtype, id))


def search_ids(base: str, rtype: str, **params: str) -> list[str]:
    params = {"_count": "100", **params}
    r = httpx.get(f"{base}/{rtype}", params=params, headers=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["type"] == "searchset"
    return [e["resource"]["id"] for e in doc.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def new_patient(system: str, value: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
    body.update(extra)
    return body


# --- fhirpy, sync -------------------------------------------------------------------------------


@pytest.fixture()
def fhirpy_sync(live_server) -> SyncFHIRClient:  # type: ignore[no-untyped-def]
    return SyncFHIRClient(live_server.base, authorization=None)


def test_fhirpy_sync_crud(live_server, fhirpy_sync: SyncFHIRClient) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    mrn = unique("fp")
    p = fhirpy_sync.resource("Patient", **new_patient("urn:x", mrn, name=[{"family": "Sync", "given": ["Ann"]}], gender="female"))
    p.save()
    assert p.id
    assert p["meta"]["versionId"] == "1"
    body = assert_current(base, p.id, 1)
    assert body["name"] == [{"family": "Sync", "given": ["Ann"]}]

    # read back two ways
    by_ref = fhirpy_sync.reference("Patient", p.id).to_resource()
    assert by_ref.id == p.id and by_ref["meta"]["versionId"] == "1"
    by_search = fhirpy_sync.resources("Patient").search(_id=p.id).get()
    assert by_search.id == p.id and by_search["gender"] == "female"

    # update: change a field, save → version 2
    p["gender"] = "other"
    p.save()
    assert p["meta"]["versionId"] == "2"
    body = assert_current(base, p.id, 2)
    assert body["gender"] == "other"

    # refresh sends If-None-Match: <versionId> (no W/ prefix) → 304, resource unchanged
    p.refresh()
    assert p["meta"]["versionId"] == "2" and p["gender"] == "other"

    # patch: fhirpy sends a JSON merge patch as application/json
    p.patch(birthDate="1970-02-03")
    assert p["meta"]["versionId"] == "3"
    body = assert_current(base, p.id, 3)
    assert body["birthDate"] == "1970-02-03"
    assert body["gender"] == "other" and body["name"] == [{"family": "Sync", "given": ["Ann"]}]
    # a null in a merge patch removes the element
    p.patch(gender=None)
    body = assert_current(base, p.id, 4)
    assert "gender" not in body and body["birthDate"] == "1970-02-03"

    # delete → the server answers 410 Gone, which fhirpy reports as ResourceNotFound
    p.delete()
    r = read(base, "Patient", p.id)
    assert r.status_code == 410, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    with pytest.raises(ResourceNotFound):
        fhirpy_sync.reference("Patient", p.id).to_resource()
    with pytest.raises(ResourceNotFound):
        fhirpy_sync.resources("Patient").search(_id=p.id).get()
    assert search_ids(base, "Patient", identifier=f"urn:x|{mrn}") == []
    entries = history(base, "Patient", p.id)
    assert [e["request"]["method"] for e in reversed(entries)] == ["POST", "PUT", "PATCH", "PATCH", "DELETE"]
    assert history_versions(base, "Patient", p.id) == [1, 2, 3, 4, 5]


def test_fhirpy_sync_get_or_create(live_server, fhirpy_sync: SyncFHIRClient) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    mrn = unique("goc")
    search = fhirpy_sync.resources("Patient").search(identifier=f"urn:x|{mrn}")
    first, created1 = search.get_or_create(fhirpy_sync.resource("Patient", **new_patient("urn:x", mrn, gender="male")))
    second, created2 = search.get_or_create(fhirpy_sync.resource("Patient", **new_patient("urn:x", mrn, gender="female")))
    assert created1 is True
    assert created2 is False
    assert second.id == first.id
    # the match is returned as it is; the second body was not written
    assert second["gender"] == "male"
    assert search_ids(base, "Patient", identifier=f"urn:x|{mrn}") == [first.id]
    assert_current(base, first.id, 1)
    assert history_versions(base, "Patient", first.id) == [1]
    assert search.get().id == first.id


def test_fhirpy_sync_conditional_update_patch_and_count(live_server, fhirpy_sync: SyncFHIRClient) -> None:  # type: ignore[no-untyped-def]
    """SearchSet.update (PUT [type]?criteria), SearchSet.patch (PATCH [type]?criteria), count()."""
    base = live_server.base
    mrn = unique("cu")
    search = fhirpy_sync.resources("Patient").search(identifier=f"urn:x|{mrn}")
    first, created1 = search.update(fhirpy_sync.resource("Patient", **new_patient("urn:x", mrn, gender="male")))
    second, created2 = search.update(fhirpy_sync.resource("Patient", **new_patient("urn:x", mrn, gender="female")))
    assert (created1, created2) == (True, False)
    assert second.id == first.id and second["meta"]["versionId"] == "2"
    patched = search.patch(birthDate="1999-12-31")
    assert patched.id == first.id and patched["meta"]["versionId"] == "3"
    body = assert_current(base, first.id, 3)
    assert body["gender"] == "female" and body["birthDate"] == "1999-12-31"
    assert search.count() == 1
    assert search_ids(base, "Patient", identifier=f"urn:x|{mrn}") == [first.id]
    assert history_versions(base, "Patient", first.id) == [1, 2, 3]


def test_fhirpy_sync_conditional_delete(live_server, fhirpy_sync: SyncFHIRClient) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    mrn = unique("cd")
    p = fhirpy_sync.resource("Patient", **new_patient("urn:x", mrn))
    p.save()
    data, status = fhirpy_sync.resources("Patient").search(identifier=f"urn:x|{mrn}").delete()
    assert status == 204 and data is None
    assert read(base, "Patient", p.id).status_code == 410
    assert search_ids(base, "Patient", identifier=f"urn:x|{mrn}") == []
    assert history_versions(base, "Patient", p.id) == [1, 2]
    # nothing matches any more: a no-op, still 2xx
    _, status = fhirpy_sync.resources("Patient").search(identifier=f"urn:x|{mrn}").delete()
    assert status in (200, 204)
    assert history_versions(base, "Patient", p.id) == [1, 2]

    # criteria matching two resources: this server refuses with 412 (fhirpy: MultipleResourcesFound)
    shared = unique("cd2")
    a = fhirpy_sync.resource("Patient", **new_patient("urn:x", shared))
    b = fhirpy_sync.resource("Patient", **new_patient("urn:x", shared))
    a.save()
    b.save()
    with pytest.raises(MultipleResourcesFound):
        fhirpy_sync.resources("Patient").search(identifier=f"urn:x|{shared}").delete()
    assert sorted(search_ids(base, "Patient", identifier=f"urn:x|{shared}")) == sorted([a.id, b.id])


def test_fhirpy_sync_fetch_all_follows_absolute_next_links(live_server, fhirpy_sync: SyncFHIRClient) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    system = f"urn:page:{unique('sys')}"
    ids = set()
    for i in range(7):
        p = fhirpy_sync.resource("Patient", **new_patient(system, f"v{i}"))
        p.save()
        ids.add(p.id)

    # the server's next links are absolute URLs under the base the client used
    r = httpx.get(f"{base}/Patient", params={"identifier": f"{system}|", "_count": "3"}, headers=ACCEPT)
    assert r.status_code == 200
    links = {link["relation"]: link["url"] for link in r.json()["link"]}
    assert links["next"].startswith(base + "/Patient?")
    assert len(r.json()["entry"]) == 3

    found = fhirpy_sync.resources("Patient").search(identifier=f"{system}|").limit(3).fetch_all()
    assert len(found) == 7
    assert {p.id for p in found} == ids
    # and a plain page is what _count asks for
    assert len(fhirpy_sync.resources("Patient").search(identifier=f"{system}|").limit(3).fetch()) == 3


# --- fhirpy, async ------------------------------------------------------------------------------


def test_fhirpy_async_crud_and_conditionals(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    mrn = unique("afp")
    system = f"urn:apage:{unique('sys')}"

    async def scenario() -> dict[str, Any]:
        c = AsyncFHIRClient(base, authorization=None)
        out: dict[str, Any] = {}
        p = c.resource("Patient", **new_patient("urn:x", mrn, name=[{"family": "Async"}]))
        await p.save()
        out["id"] = p.id
        out["v_create"] = p["meta"]["versionId"]
        out["read_ref"] = await c.reference("Patient", p.id).to_resource()
        out["read_search"] = await c.resources("Patient").search(_id=p.id).get()

        p["gender"] = "unknown"
        await p.save()
        out["v_update"] = p["meta"]["versionId"]

        await p.patch(birthDate="2001-01-01")
        out["v_patch"] = p["meta"]["versionId"]

        search = c.resources("Patient").search(identifier=f"urn:x|{mrn}")
        again, created = await search.get_or_create(c.resource("Patient", **new_patient("urn:x", mrn, gender="male")))
        out["goc"] = (again.id, created, again["meta"]["versionId"])

        other = unique("agoc")
        s2 = c.resources("Patient").search(identifier=f"urn:x|{other}")
        g1, c1 = await s2.get_or_create(c.resource("Patient", **new_patient("urn:x", other)))
        g2, c2 = await s2.get_or_create(c.resource("Patient", **new_patient("urn:x", other)))
        out["goc2"] = (g1.id, c1, g2.id, c2, other)

        for i in range(7):
            await c.resource("Patient", **new_patient(system, f"v{i}")).save()
        out["paged"] = await c.resources("Patient").search(identifier=f"{system}|").limit(3).fetch_all()

        await p.delete()
        try:
            await c.reference("Patient", p.id).to_resource()
            out["after_delete"] = "no error"
        except ResourceNotFound:
            out["after_delete"] = "ResourceNotFound"

        out["cond_delete"] = await c.resources("Patient").search(identifier=f"urn:x|{other}").delete()
        return out

    out = asyncio.run(scenario())
    pid = out["id"]
    assert out["v_create"] == "1"
    assert out["read_ref"].id == pid and out["read_search"].id == pid
    assert out["v_update"] == "2"
    assert out["v_patch"] == "3"
    # get_or_create on an existing match: same id, not created, nothing written
    assert out["goc"] == (pid, False, "3")
    g1, c1, g2, c2, other = out["goc2"]
    assert c1 is True and c2 is False and g1 == g2
    assert len(out["paged"]) == 7 and len({p.id for p in out["paged"]}) == 7
    assert out["after_delete"] == "ResourceNotFound"
    assert read(base, "Patient", pid).status_code == 410
    assert history_versions(base, "Patient", pid) == [1, 2, 3, 4]
    assert out["cond_delete"][1] == 204
    assert read(base, "Patient", g1).status_code == 410
    assert search_ids(base, "Patient", identifier=f"urn:x|{other}") == []
    assert history_versions(base, "Patient", g1) == [1, 2]


# --- fhirclient (SMART) -------------------------------------------------------------------------


@pytest.fixture()
def smart(live_server):  # type: ignore[no-untyped-def]
    return smart_client.FHIRClient(settings={"app_id": "trialfhir-test", "api_base": live_server.base})


def test_fhirclient_crud(live_server, smart) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    mrn = unique("fc")
    created = FCPatient(new_patient("urn:y", mrn, name=[{"family": "Smart", "given": ["Sam"]}], gender="male")).create(smart.server)
    assert created is not None
    FCPatient(created)  # the response is valid R4 for fhirclient's strict models
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"
    assert_current(base, pid, 1)

    p = FCPatient.read(pid, smart.server)
    assert p.id == pid
    assert p.meta.versionId == "1"
    assert p.meta.lastUpdated is not None
    assert p.name[0].family == "Smart" and p.gender == "male"

    p.gender = "female"
    updated = p.update(smart.server)
    assert updated is not None
    FCPatient(updated)
    assert updated["meta"]["versionId"] == "2"
    body = assert_current(base, pid, 2)
    assert body["gender"] == "female"
    assert FCPatient.read(pid, smart.server).meta.versionId == "2"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = FCPatient.where(struct={"identifier": f"urn:y|{mrn}"}).perform_resources(smart.server)
    assert [r.id for r in found] == [pid]
    assert isinstance(found[0], FCPatient) and found[0].meta.versionId == "2"

    assert p.delete(smart.server) is None  # 204, no body
    r = read(base, "Patient", pid)
    assert r.status_code == 410
    # fhirclient maps only 404 to FHIRNotFoundException; 410 Gone surfaces as requests.HTTPError
    with pytest.raises(requests.HTTPError) as info:
        FCPatient.read(pid, smart.server)
    assert info.value.response.status_code == 410
    with pytest.raises(FHIRNotFoundException):
        FCPatient.read(unique("missing"), smart.server)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert FCPatient.where(struct={"identifier": f"urn:y|{mrn}"}).perform_resources(smart.server) == []
    assert history_versions(base, "Patient", pid) == [1, 2, 3]


def test_fhirclient_conditional_create_via_session(live_server, smart) -> None:  # type: ignore[no-untyped-def]
    """fhirclient has no If-None-Exist API: the header goes through its own requests.Session."""
    base = live_server.base
    mrn = unique("fcc")
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "If-None-Exist": f"identifier=urn:y|{mrn}"}

    def post(gender: str) -> requests.Response:
        body = FCPatient(new_patient("urn:y", mrn, gender=gender)).as_json()
        return smart.server.session.post(base + "/Patient", headers=headers, data=json.dumps(body))

    r1 = post("male")
    r2 = post("female")
    assert r1.status_code == 201, r1.text
    assert r2.status_code == 200, r2.text
    p1, p2 = FCPatient(r1.json()), FCPatient(r2.json())
    assert p1.id == p2.id
    assert p2.gender == "male"  # the existing match, not the second body
    assert r1.headers["location"].startswith(f"{base}/Patient/{p1.id}/_history/1")
    assert r2.headers["etag"] == 'W/"1"'
    assert search_ids(base, "Patient", identifier=f"urn:y|{mrn}") == [p1.id]
    assert history_versions(base, "Patient", p1.id) == [1]


def test_fhirclient_search_paging(live_server, smart) -> None:  # type: ignore[no-untyped-def]
    system = f"urn:fcpage:{unique('sys')}"
    ids = {FCPatient(new_patient(system, f"v{i}")).create(smart.server)["id"] for i in range(7)}
    search = FCPatient.where(struct={"identifier": f"{system}|", "_count": "3"})
    bundles = list(search.perform_iter(smart.server))
    assert all(isinstance(b, FCBundle) for b in bundles)
    assert [len(b.entry or []) for b in bundles] == [3, 3, 1]
    assert {r.id for r in search.perform_resources_iter(smart.server)} == ids
