"""Conformance with fhir-kit-client (npm, Vermonster), a JavaScript client nobody here wrote.

``tests/clients/fhirkit/flow.mjs`` drives a full flow through the client's public API
against a live ``trialfhir serve`` process — capability, create, conditional create
(``If-None-Exist``, also with the Firely-style ``Type?`` prefix), read, vread, update with
``If-Match`` (and a stale one), conditional update, JSON Patch, search with paging by
GET and by ``POST _search`` (form body) following ``next`` links verbatim, repeated
parameters, a transaction with ``urn:uuid`` references and ``ifNoneExist`` (POSTed to
``[base]/``), a batch, a Bulk Data ``$export`` (kick-off, polling, files), history,
delete — and prints every step's status, headers and
body as JSON. This test asserts on that output and reads the server state back with
httpx, so a behaviour the JavaScript client relies on cannot silently change.

The client is pinned in ``tests/clients/fhirkit/package.json`` + ``package-lock.json``
and installed with ``npm ci`` into ``~/.cache/trialfhir/fhirkit-<lock hash>/`` (never
into the source tree). Without node/npm (or without the npm registry) the test is
skipped with the reason outside CI and fails under ``CI=true`` — the same policy
tests/conftest.py applies to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import IN_CI
from support import unique

pytestmark = pytest.mark.slow

CLIENT_DIR = Path(__file__).resolve().parent / "clients" / "fhirkit"
CACHE_ROOT = Path(os.environ.get("TRIALFHIR_CACHE", Path.home() / ".cache" / "trialfhir"))
ACCEPT = {"accept": "application/fhir+json"}


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} — CI must run the fhir-kit-client conformance test")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fhirkit_dir() -> Path:
    """A directory holding flow.mjs next to an ``npm ci`` install of the pinned client."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        _unavailable("node and npm are needed for the fhir-kit-client test (Debian: apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        _unavailable(f"fhir-kit-client 2.0.3 needs node >= 20, found {version}")

    lock = (CLIENT_DIR / "package-lock.json").read_bytes()
    manifest = (CLIENT_DIR / "package.json").read_bytes()
    key = hashlib.sha256(manifest + lock).hexdigest()[:16]
    target = CACHE_ROOT / f"fhirkit-{key}"
    if not (target / "node_modules" / "fhir-kit-client" / "package.json").is_file():
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="fhirkit-", dir=CACHE_ROOT))
        shutil.copy(CLIENT_DIR / "package.json", staging)
        shutil.copy(CLIENT_DIR / "package-lock.json", staging)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=staging, capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            _unavailable(f"npm ci of fhir-kit-client failed: {done.stderr.strip()[-500:]}")
        try:
            staging.rename(target)
        except OSError:  # another run installed it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    # the script is copied on every run (cheap), so edits to it never meet a stale copy;
    # ESM resolves 'fhir-kit-client' relative to the script, i.e. from target/node_modules
    shutil.copy(CLIENT_DIR / "flow.mjs", target / "flow.mjs")
    return target


@pytest.fixture(scope="module")
def flow(fhirkit_dir: Path, live_server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Run flow.mjs once per backend; its JSON output holds every step."""
    tag = unique("fk")
    done = subprocess.run(
        ["node", str(fhirkit_dir / "flow.mjs"), live_server.base, tag],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, f"node exited {done.returncode}: {done.stderr[-3000:]}"
    out = json.loads(done.stdout)
    out["tag"] = tag
    out["system"] = f"urn:fhirkit:{tag}"
    return out


def ok(flow: dict[str, Any], name: str, status: int | None = None) -> dict[str, Any]:
    """The step succeeded (with ``status`` if given); returns it."""
    s = flow["steps"][name]
    assert s["ok"], f"{name}: server answered {s.get('status')}: {json.dumps(s.get('error'))[:1500]}"
    if status is not None:
        assert s["status"] == status, f"{name}: {s['status']} != {status}"
    return s


def failed(flow: dict[str, Any], name: str, status: int) -> dict[str, Any]:
    """The step was rejected with ``status`` and an OperationOutcome the client could parse."""
    s = flow["steps"][name]
    assert not s["ok"], f"{name} should have been rejected: {s}"
    assert s["status"] == status, f"{name}: {s['status']} != {status}: {s.get('error')}"
    assert isinstance(s["error"], dict) and s["error"]["resourceType"] == "OperationOutcome"
    return s


def search_ids(base: str, rtype: str, **params: str) -> list[str]:
    r = httpx.get(f"{base}/{rtype}", params={"_count": "100", **params}, headers=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def test_capability_statement(flow: dict[str, Any]) -> None:
    body = ok(flow, "metadata", 200)["body"]
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"


def test_create_returns_body_location_and_etag(live_server, flow: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    s = ok(flow, "create", 201)
    pid = flow["pid"]
    assert s["body"]["id"] == pid and s["body"]["meta"]["versionId"] == "1"
    assert s["etag"] == 'W/"1"'
    assert s["location"] == f"{live_server.base}/Patient/{pid}/_history/1"
    assert s["contentType"].startswith("application/fhir+json")


def test_conditional_create_if_none_exist(live_server, flow: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """A match returns the existing resource unchanged (200); no match creates (201)."""
    existing = ok(flow, "conditionalCreateExisting", 200)
    assert existing["body"]["id"] == flow["pid"]
    assert "gender" not in existing["body"]  # the second body was not written
    new = ok(flow, "conditionalCreateNew", 201)
    prefixed = ok(flow, "conditionalCreateTypePrefix", 200)
    assert prefixed["body"]["id"] == new["body"]["id"]
    # exactly one p2 exists (p1 is deleted at the end of the flow; its history is checked below)
    assert search_ids(live_server.base, "Patient", identifier=f"{flow['system']}|p2") == [new["body"]["id"]]


def test_read_and_vread(flow: dict[str, Any]) -> None:
    read = ok(flow, "read", 200)
    assert read["body"]["id"] == flow["pid"] and read["etag"] == 'W/"1"'
    vread = ok(flow, "vread", 200)
    assert vread["body"]["meta"]["versionId"] == "1"
    assert vread["body"]["name"] == [{"family": "Kit"}]


def test_update_if_match_and_stale_if_match(flow: dict[str, Any]) -> None:
    upd = ok(flow, "updateIfMatch", 200)
    assert upd["etag"] == 'W/"2"' and upd["body"]["gender"] == "female"
    failed(flow, "updateStaleIfMatch", 412)
    cond = ok(flow, "conditionalUpdate")
    assert cond["body"]["id"] == flow["steps"]["conditionalCreateNew"]["body"]["id"]
    assert cond["body"]["active"] is True and cond["body"]["meta"]["versionId"] == "2"


def test_json_patch(flow: dict[str, Any]) -> None:
    """fhir-kit-client sends RFC 6902 JSON Patch as application/json-patch+json."""
    p = ok(flow, "patch", 200)
    assert p["etag"] == 'W/"3"'
    assert p["body"]["birthDate"] == "1980-02-03" and p["body"]["gender"] == "unknown"
    assert p["body"]["name"] == [{"family": "Kit"}]  # untouched elements stay
    failed(flow, "patchFailedTest", 422)  # a failing "test" op writes nothing (history below)


@pytest.mark.parametrize("mode", ["searchGet", "searchPost"])
def test_search_paging_follows_next_links(live_server, flow: dict[str, Any], mode: str) -> None:  # type: ignore[no-untyped-def]
    """7 matches at _count=3: pages of 3, 3, 1; every next link absolute under the base."""
    pages = ok(flow, mode)["pages"]
    assert [len(p["ids"]) for p in pages] == [3, 3, 1]
    ids = [i for p in pages for i in p["ids"]]
    assert len(set(ids)) == 7
    created = {flow["steps"][f"pageCreate{i}"]["body"]["id"] for i in range(7)}
    assert set(ids) == created
    for p in pages[:-1]:
        assert p["next"].startswith(live_server.base + "/Patient?")
    assert pages[-1]["next"] is None
    if mode == "searchGet":
        assert ids == sorted(ids)  # _sort=_id is kept across pages


def test_repeated_parameters_are_and_comma_is_or(flow: dict[str, Any]) -> None:
    """fhir-kit-client sends an array as a repeated parameter: identifier=v1&identifier=v2
    is AND (no Patient has both); identifier=v1,v2 is OR (both)."""
    body = ok(flow, "searchRepeated", 200)["body"]
    assert body["type"] == "searchset" and body.get("entry", []) == []
    either = ok(flow, "searchComma", 200)["body"].get("entry", [])
    expected = {flow["steps"][f"pageCreate{i}"]["body"]["id"] for i in (1, 2)}
    assert {e["resource"]["id"] for e in either} == expected


def test_transaction_with_urn_uuid_and_if_none_exist(live_server, flow: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    body = ok(flow, "transaction", 200)["body"]
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert [s.split()[0] for s in statuses] == ["201", "201", "200"]
    patient_loc = body["entry"][0]["response"]["location"]
    tx_pid = patient_loc.split("Patient/")[1].split("/")[0]  # relative or absolute, both valid
    # the urn:uuid reference was rewritten to the new Patient
    obs = ok(flow, "searchTxObservation", 200)["body"]["entry"]
    assert len(obs) == 1
    assert obs[0]["resource"]["subject"]["reference"] == f"Patient/{tx_pid}"
    # replaying the ifNoneExist entry matches instead of creating a duplicate
    replay = ok(flow, "transactionReplay", 200)["body"]
    assert replay["entry"][0]["response"]["status"].startswith("200")
    assert search_ids(live_server.base, "Patient", identifier=f"{flow['system']}|tx1") == [tx_pid]


def test_batch_reports_each_entry(flow: dict[str, Any]) -> None:
    body = ok(flow, "batch", 200)["body"]
    assert body["type"] == "batch-response"
    first, missing = body["entry"]
    assert first["response"]["status"].startswith("200") and first["resource"]["id"] == flow["pid"]
    assert missing["response"]["status"].startswith("404")


def test_bulk_export_kick_off_poll_and_download(flow: dict[str, Any]) -> None:
    """operation('$export', GET, Prefer: respond-async) → 202 + Content-Location; polling it
    with client.request reaches the manifest; the files hold exactly the Patients the
    _typeFilter selects (p1, p2 and the transaction's tx1); DELETE removes the job."""
    kick = ok(flow, "exportKickoff", 202)
    assert kick["contentLocation"]
    manifest = ok(flow, "exportStatus", 200)["body"]
    assert {item["type"] for item in manifest["output"]} == {"Patient"}
    s = flow["steps"]
    tx_loc = s["transaction"]["body"]["entry"][0]["response"]["location"]
    expected = {flow["pid"], s["conditionalCreateNew"]["body"]["id"], tx_loc.split("Patient/")[1].split("/")[0]}
    ids = ok(flow, "exportFiles")["ids"]
    assert sorted(ids) == sorted(expected)
    assert ok(flow, "exportDelete")["status"] == 202


def test_history_and_delete(live_server, flow: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """create, If-Match update, patch, transaction PUT = 4 versions; delete adds the 5th."""
    before = ok(flow, "historyBeforeDelete", 200)["body"]
    assert before["type"] == "history"
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in before["entry"]) == [1, 2, 3, 4]
    ok(flow, "delete")
    assert flow["steps"]["delete"]["status"] in (200, 204)
    failed(flow, "readDeleted", 410)
    after = ok(flow, "historyAfterDelete", 200)["body"]
    methods = [e["request"]["method"] for e in reversed(after["entry"])]
    assert methods == ["POST", "PUT", "PATCH", "PUT", "DELETE"]
    assert ok(flow, "vreadOld", 200)["body"]["gender"] == "female"
    assert ok(flow, "typeHistory", 200)["body"]["type"] == "history"
    assert httpx.get(f"{live_server.base}/Patient/{flow['pid']}", headers=ACCEPT).status_code == 410
