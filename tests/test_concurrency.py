"""Race-freedom with real processes: a multi-worker ``trialfhir serve`` and many clients.

Each scenario releases N threads at once (a ``threading.Barrier``), each with its own
httpx client (its own connection), against a server with several uvicorn worker
processes on the backend's database (4 on PostgreSQL, 2 on SQLite). Afterwards the
real state is read back: searches, reads (ETag / meta.versionId) and instance history.

Nothing may answer 5xx. Expectations follow https://hl7.org/fhir/R4/http.html:
- conditional create (If-None-Exist, and ``POST [type]?criteria``): exactly one 201,
  every other request 200 with the same resource, and exactly one resource exists;
- conditional update with no prior match: exactly one resource exists afterwards and
  every request succeeds (the server queues conflicting writers; no 409), and the
  history has one version per request, numbered 1..n without gaps;
- ``PUT`` with ``If-Match: W/"1"``: exactly one 200, the rest 412 OperationOutcome;
- plain concurrent ``PUT``: every update succeeds (200, no 409) and none is lost;
- beyond the brief: update-as-create with ``If-None-Match: *``, concurrent JSON Patches
  (none lost) and concurrent DELETEs (one deletion version).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import LiveServer, start_server
from support import unique

pytestmark = pytest.mark.slow

FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
TIMEOUT = httpx.Timeout(60.0)


@dataclass
class Answer:
    index: int
    status: int
    headers: httpx.Headers
    body: Any
    elapsed: float


@pytest.fixture(scope="module")
def race_server(backend: str, databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    workers = 4 if backend == "postgresql" else 2
    server = start_server(databases.url(backend, "race"), tmp_path_factory.mktemp("race"), workers=workers)
    # warm the workers up (first-request imports) before the races start
    with httpx.Client(timeout=TIMEOUT) as c:
        for _ in range(4 * workers):
            assert c.get(server.base + "/metadata", headers=FHIR).status_code == 200
    yield server
    server.stop()


def race(n: int, request: Callable[[httpx.Client, int], httpx.Response]) -> list[Answer]:
    """Run ``request(client, i)`` for i in 0..n-1 in n threads released together."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Answer:
        with httpx.Client(timeout=TIMEOUT) as client:
            barrier.wait(timeout=30)
            t0 = time.monotonic()
            r = request(client, i)
            elapsed = time.monotonic() - t0
            body = r.json() if r.content else None
            return Answer(i, r.status_code, r.headers, body, elapsed)

    with ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(one, range(n)))
    server_errors = [(a.index, a.status, a.body) for a in answers if a.status >= 500]
    assert not server_errors, f"5xx answers: {server_errors}"
    return answers


def version_of(etag: str) -> int:
    assert etag.startswith('W/"') and etag.endswith('"'), etag
    return int(etag[3:-1])


def search_ids(base: str, **params: str) -> list[str]:
    r = httpx.get(f"{base}/Patient", params={"_count": "100", **params}, headers=FHIR, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def history_entries(base: str, id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/Patient/{id}/_history", params={"_count": "100"}, headers=FHIR, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json().get("entry", [])


def history_versions(base: str, id: str) -> list[int]:
    return sorted(version_of(e["response"]["etag"]) for e in history_entries(base, id))


def read_current(base: str, id: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{base}/Patient/{id}", headers=FHIR, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    version = version_of(r.headers["etag"])
    assert body["meta"]["versionId"] == str(version)
    return version, body


def race_patient(value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:race", "value": value}], **extra}


def is_outcome(body: Any) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" and bool(body.get("issue"))


# --- conditional create ------------------------------------------------------------------------


def _check_single_create(base: str, value: str, answers: list[Answer]) -> None:
    statuses = Counter(a.status for a in answers)
    assert statuses == Counter({201: 1, 200: len(answers) - 1}), (statuses, [a.body for a in answers if a.status not in (200, 201)])
    ids = {a.body["id"] for a in answers}
    assert len(ids) == 1, ids
    (pid,) = ids
    assert all(a.headers["etag"] == 'W/"1"' for a in answers)
    winner = next(a for a in answers if a.status == 201)
    assert winner.headers["location"].startswith(f"{base}/Patient/{pid}/_history/1")
    assert search_ids(base, identifier=f"urn:race|{value}") == [pid]
    version, body = read_current(base, pid)
    assert version == 1
    # the stored resource is the winner's body, and the 200 answers returned exactly it
    assert body["name"] == winner.body["name"]
    assert all(a.body == body for a in answers)
    assert history_versions(base, pid) == [1]


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_conditional_create_if_none_exist(race_server: LiveServer, round_: int) -> None:
    base = race_server.base
    value = unique(f"cc{round_}")

    def request(client: httpx.Client, i: int) -> httpx.Response:
        headers = {**FHIR, "if-none-exist": f"identifier=urn:race|{value}"}
        return client.post(f"{base}/Patient", json=race_patient(value, name=[{"family": f"T{i}"}]), headers=headers)

    _check_single_create(base, value, race(24, request))


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_conditional_create_query_form(race_server: LiveServer, round_: int) -> None:
    base = race_server.base
    value = unique(f"cq{round_}")

    def request(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(
            f"{base}/Patient",
            params={"identifier": f"urn:race|{value}"},
            json=race_patient(value, name=[{"family": f"T{i}"}]),
            headers=FHIR,
        )

    _check_single_create(base, value, race(24, request))


# --- conditional update ------------------------------------------------------------------------


def test_concurrent_conditional_update_without_prior_resource(race_server: LiveServer) -> None:
    base = race_server.base
    value = unique("cu")

    def put(client: httpx.Client, i: int) -> httpx.Response:
        return client.put(
            f"{base}/Patient",
            params={"identifier": f"urn:race|{value}"},
            json=race_patient(value, name=[{"family": f"T{i}"}]),
            headers=FHIR,
        )

    answers = race(16, put)
    unexpected = [(a.status, a.body) for a in answers if a.status not in (200, 201)]
    assert not unexpected, f"unexpected answers to concurrent conditional updates: {unexpected}"
    retried: list[Answer] = []
    ok = [a for a in answers if a.status in (200, 201)] + retried
    statuses = Counter(a.status for a in ok)
    assert statuses[201] == 1, statuses

    ids = search_ids(base, identifier=f"urn:race|{value}")
    assert len(ids) == 1, ids
    (pid,) = ids
    assert {a.body["id"] for a in ok} == {pid}
    versions = sorted(version_of(a.headers["etag"]) for a in ok)
    assert versions == list(range(1, len(ok) + 1))
    assert version_of(next(a for a in ok if a.status == 201).headers["etag"]) == 1
    assert history_versions(base, pid) == list(range(1, len(ok) + 1))
    version, body = read_current(base, pid)
    assert version == len(ok) == 16
    last = next(a for a in ok if version_of(a.headers["etag"]) == version)
    assert body == last.body


# --- version-aware update (If-Match) -------------------------------------------------------------


def _create(base: str, value: str) -> str:
    r = httpx.post(f"{base}/Patient", json=race_patient(value, name=[{"family": "Start"}]), headers=FHIR, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == 'W/"1"'
    return str(r.json()["id"])


def test_concurrent_if_match_updates(race_server: LiveServer) -> None:
    base = race_server.base
    value = unique("im")
    pid = _create(base, value)

    def request(client: httpx.Client, i: int) -> httpx.Response:
        body = race_patient(value, id=pid, name=[{"family": f"T{i}"}])
        return client.put(f"{base}/Patient/{pid}", json=body, headers={**FHIR, "if-match": 'W/"1"'})

    answers = race(12, request)
    statuses = Counter(a.status for a in answers)
    assert statuses == Counter({200: 1, 412: 11}), (statuses, [a.body for a in answers if a.status not in (200, 412)])
    assert all(is_outcome(a.body) for a in answers if a.status == 412)
    winner = next(a for a in answers if a.status == 200)
    assert winner.headers["etag"] == 'W/"2"'
    version, body = read_current(base, pid)
    assert version == 2
    assert body["name"] == [{"family": f"T{winner.index}"}]
    assert history_versions(base, pid) == [1, 2]


# --- plain concurrent updates: none lost ------------------------------------------------------------


def test_concurrent_updates_none_lost(race_server: LiveServer) -> None:
    base = race_server.base
    value = unique("up")
    pid = _create(base, value)

    def request(client: httpx.Client, i: int) -> httpx.Response:
        body = race_patient(value, id=pid, name=[{"family": f"T{i}"}])
        return client.put(f"{base}/Patient/{pid}", json=body, headers=FHIR)

    answers = race(12, request)
    statuses = Counter(a.status for a in answers)
    assert statuses == Counter({200: 12}), (statuses, [(a.status, a.body) for a in answers if a.status != 200])
    assert sorted(version_of(a.headers["etag"]) for a in answers) == list(range(2, 14))
    version, body = read_current(base, pid)
    assert version == 13
    entries = history_entries(base, pid)
    assert sorted(version_of(e["response"]["etag"]) for e in entries) == list(range(1, 14))
    # every thread's write is one version in the history, with the content it sent
    families = Counter(e["resource"]["name"][0]["family"] for e in entries)
    assert families == Counter({"Start": 1, **{f"T{i}": 1 for i in range(12)}})
    for a in answers:
        v = version_of(a.headers["etag"])
        entry = next(e for e in entries if version_of(e["response"]["etag"]) == v)
        assert entry["resource"]["name"] == [{"family": f"T{a.index}"}]


# --- beyond the brief: other read-modify-write paths ------------------------------------------------


def test_concurrent_update_as_create_if_none_match(race_server: LiveServer) -> None:
    """12 concurrent ``PUT /Patient/{new id}`` with ``If-None-Match: *``: one 201, the rest 412."""
    base = race_server.base
    pid = unique("cl")

    def request(client: httpx.Client, i: int) -> httpx.Response:
        body = {"resourceType": "Patient", "id": pid, "name": [{"family": f"T{i}"}]}
        return client.put(f"{base}/Patient/{pid}", json=body, headers={**FHIR, "if-none-match": "*"})

    answers = race(12, request)
    assert Counter(a.status for a in answers) == Counter({201: 1, 412: 11}), [(a.status, a.body) for a in answers]
    assert all(is_outcome(a.body) for a in answers if a.status == 412)
    winner = next(a for a in answers if a.status == 201)
    version, body = read_current(base, pid)
    assert version == 1 and body["name"] == [{"family": f"T{winner.index}"}]
    assert history_versions(base, pid) == [1]


def test_concurrent_json_patches_none_lost(race_server: LiveServer) -> None:
    """12 concurrent JSON Patches each appending a name: all 200, all 12 names kept."""
    base = race_server.base
    value = unique("pa")
    pid = _create(base, value)

    def request(client: httpx.Client, i: int) -> httpx.Response:
        ops = [{"op": "add", "path": "/name/-", "value": {"family": f"P{i}"}}]
        return client.patch(f"{base}/Patient/{pid}", json=ops, headers={**FHIR, "content-type": "application/json-patch+json"})

    answers = race(12, request)
    assert Counter(a.status for a in answers) == Counter({200: 12}), [(a.status, a.body) for a in answers if a.status != 200]
    version, body = read_current(base, pid)
    assert version == 13
    assert sorted(n["family"] for n in body["name"]) == sorted(["Start", *(f"P{i}" for i in range(12))])
    assert history_versions(base, pid) == list(range(1, 14))


def test_concurrent_deletes_write_one_version(race_server: LiveServer) -> None:
    """12 concurrent DELETEs of one resource: all 204, exactly one deletion version."""
    base = race_server.base
    pid = _create(base, unique("de"))
    answers = race(12, lambda client, i: client.delete(f"{base}/Patient/{pid}", headers=FHIR))
    assert Counter(a.status for a in answers) == Counter({204: 12})
    assert httpx.get(f"{base}/Patient/{pid}", headers=FHIR).status_code == 410
    entries = history_entries(base, pid)
    assert sorted(version_of(e["response"]["etag"]) for e in entries) == [1, 2]
    assert [e["request"]["method"] for e in entries] == ["DELETE", "POST"]


# --- last: the server itself ------------------------------------------------------------------


def test_race_server_logged_no_errors(race_server: LiveServer) -> None:
    """The server log holds no unhandled error or traceback from the races above."""
    assert race_server.process.poll() is None, "the server died"
    log = race_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]
