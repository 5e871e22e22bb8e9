"""Search through third-party clients, against a real ``trialfhir serve`` process.

- fhirpy 2.3.1, sync and async: ``.search()`` (``date__ge=`` → ``date=ge…``),
  ``.include()`` / ``.revinclude()``, ``.sort()``, ``.limit()`` (``_count``),
  ``fetch_all()`` walking absolute ``next`` links, ``.count()`` (it sends
  ``_count=0&_totalMethod=count`` and reads ``Bundle.total``). fhirpy's ``fetch`` keeps
  only resources of the searched type, so includes are checked on ``fetch_raw()``.
- fhirclient 4.4.0: ``Observation.where(struct={... 'date': {'$gte': ...}})`` sends the
  DSTU1 comparator ``date=>=…``; ``perform_resources`` and ``perform_resources_iter``
  (paging through ``next`` links with its strict R4 models).

Every expectation is also read back with plain httpx. The live server is shared by the
session, so every test works inside its own unique tag.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation as FCObservation
from fhirpy import AsyncFHIRClient, SyncFHIRClient

from support import unique

pytestmark = pytest.mark.slow

TAG_SYSTEM = "urn:trialfhir:test:search-clients"
LOINC = "http://loinc.org"
HEADERS = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}


def create(base: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{base}/{body['resourceType']}", json=body, headers=HEADERS, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def seed(base: str, n: int = 11) -> tuple[str, str, list[dict[str, Any]]]:
    """A Patient and ``n`` Observations on consecutive March days, all tagged ``tag``.

    Returns (tag, patient id, observations sorted by date ascending)."""
    tag = unique("sc")
    meta = {"tag": [{"system": TAG_SYSTEM, "code": tag}]}
    pat = create(base, {"resourceType": "Patient", "meta": meta, "name": [{"family": "Client", "given": [tag]}]})
    observations = [
        create(base, {"resourceType": "Observation", "meta": meta, "status": "final",
                      "code": {"coding": [{"system": LOINC, "code": "1988-5"}]},
                      "subject": {"reference": f"Patient/{pat['id']}"},
                      "effectiveDateTime": f"2024-03-{i + 1:02d}T08:00:00Z"})
        for i in range(n)
    ]
    return tag, pat["id"], observations


def httpx_ids(base: str, rtype: str, params: list[tuple[str, str]]) -> list[str]:
    r = httpx.get(f"{base}/{rtype}", params=[*params, ("_count", "500")], headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def entry_modes(bundle: dict[str, Any]) -> dict[str, str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["search"]["mode"] for e in bundle.get("entry", [])}


# --- fhirpy, sync ---------------------------------------------------------------------------


def test_fhirpy_sync_search_sort_limit_fetch_all_count(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    tag, pid, observations = seed(base)
    by_date = [o["id"] for o in observations]
    fp = SyncFHIRClient(base, authorization=None)
    search = fp.resources("Observation").search(_tag=f"{TAG_SYSTEM}|{tag}")

    first_page = search.sort("-date").limit(3).fetch()
    assert [o.id for o in first_page] == by_date[::-1][:3]

    # 11 results, 3 a page: fetch_all follows four absolute next links
    raw = search.sort("-date").limit(3).fetch_raw()
    next_url = next(link["url"] for link in raw["link"] if link["relation"] == "next")
    assert next_url.startswith(base + "/Observation?")
    everything = search.sort("-date").limit(3).fetch_all()
    assert [o.id for o in everything] == by_date[::-1]

    assert search.count() == 11
    assert search.search(date__ge="2024-03-06").count() == 6
    assert [o.id for o in search.search(date__ge="2024-03-06").sort("date").fetch_all()] == by_date[5:]
    assert sorted(httpx_ids(base, "Observation", [("_tag", f"{TAG_SYSTEM}|{tag}"), ("date", "ge2024-03-06")])) == sorted(by_date[5:])

    patients = fp.resources("Patient").search(_tag=f"{TAG_SYSTEM}|{tag}").fetch_all()
    assert [p.id for p in patients] == [pid]


def test_fhirpy_sync_include_and_revinclude(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    tag, pid, observations = seed(base, n=2)
    fp = SyncFHIRClient(base, authorization=None)
    oid = observations[0]["id"]

    raw = fp.resources("Observation").search(_id=oid).include("Observation", "subject").fetch_raw()
    assert entry_modes(raw) == {f"Observation/{oid}": "match", f"Patient/{pid}": "include"}
    # fetch() keeps only the searched type
    assert [o.id for o in fp.resources("Observation").search(_id=oid).include("Observation", "subject").fetch()] == [oid]

    raw = fp.resources("Patient").search(_id=pid).revinclude("Observation", "subject").fetch_raw()
    assert entry_modes(raw) == {f"Patient/{pid}": "match", **{f"Observation/{o['id']}": "include" for o in observations}}

    raw = fp.resources("Observation").search(_tag=f"{TAG_SYSTEM}|{tag}").include("Observation", "subject", "Patient").fetch_raw()
    modes = entry_modes(raw)
    assert modes.pop(f"Patient/{pid}") == "include"  # once, although both Observations point to it
    assert modes == {f"Observation/{o['id']}": "match" for o in observations}


# --- fhirpy, async --------------------------------------------------------------------------


def test_fhirpy_async_search_include_count(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    tag, pid, observations = seed(base, n=8)
    by_date = [o["id"] for o in observations]

    async def scenario() -> dict[str, Any]:
        fp = AsyncFHIRClient(base, authorization=None)
        search = fp.resources("Observation").search(_tag=f"{TAG_SYSTEM}|{tag}")
        return {
            "all": [o.id for o in await search.sort("date").limit(2).fetch_all()],
            "page": [o.id for o in await search.sort("-date").limit(3).fetch()],
            "count": await search.count(),
            "count_ge": await search.search(date__ge="2024-03-05").count(),
            "include": await search.search(_id=by_date[0]).include("Observation", "subject").fetch_raw(),
            "revinclude": await fp.resources("Patient").search(_id=pid).revinclude("Observation", "subject").fetch_raw(),
        }

    out = asyncio.run(scenario())
    assert out["all"] == by_date                      # 8 results, 2 a page: four pages
    assert out["page"] == by_date[::-1][:3]
    assert out["count"] == 8
    assert out["count_ge"] == 4
    assert entry_modes(out["include"]) == {f"Observation/{by_date[0]}": "match", f"Patient/{pid}": "include"}
    assert entry_modes(out["revinclude"]) == {f"Patient/{pid}": "match", **{f"Observation/{i}": "include" for i in by_date}}


# --- fhirclient -----------------------------------------------------------------------------


@pytest.fixture()
def smart(live_server):  # type: ignore[no-untyped-def]
    return smart_client.FHIRClient(settings={"app_id": "trialfhir-search-test", "api_base": live_server.base})


def test_fhirclient_where_gte_uses_legacy_prefix(live_server, smart) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    tag, _pid, observations = seed(base, n=6)
    by_date = [o["id"] for o in observations]
    struct = {"_tag": f"{TAG_SYSTEM}|{tag}", "date": {"$gte": "2024-03-04"}}
    search = FCObservation.where(struct=struct)
    assert "date=>=2024-03-04" in search.construct()  # the DSTU1 comparator, as fhirclient sends it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = search.perform_resources(smart.server)
    assert all(isinstance(o, FCObservation) for o in found)
    assert sorted(o.id for o in found) == sorted(by_date[3:])
    assert sorted(httpx_ids(base, "Observation", [("_tag", f"{TAG_SYSTEM}|{tag}"), ("date", "ge2024-03-04")])) == sorted(by_date[3:])

    below = FCObservation.where(struct={"_tag": f"{TAG_SYSTEM}|{tag}", "date": {"$lt": "2024-03-03"}})
    assert sorted(o.id for o in below.perform_resources_iter(smart.server)) == sorted(by_date[:2])


def test_fhirclient_perform_resources_iter_pages(live_server, smart) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    tag, _pid, observations = seed(base, n=10)
    search = FCObservation.where(struct={"_tag": f"{TAG_SYSTEM}|{tag}", "_count": "3", "_sort": "date"})
    bundles = list(search.perform_iter(smart.server))
    assert [len(b.entry or []) for b in bundles] == [3, 3, 3, 1]
    assert [o.id for o in search.perform_resources_iter(smart.server)] == [o["id"] for o in observations]
