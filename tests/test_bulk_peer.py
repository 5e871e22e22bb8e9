"""A third-party Bulk Data client against a live server: smart-fetch (PyPI).

The brief named cumulus-etl's bulk exporter. cumulus-etl 4.3.6 (the current release) no
longer has one: ``cumulus-etl export`` stops with "The 'cumulus-etl export' command has
been removed. Please use 'smart-fetch bulk' instead." smart-fetch is that exporter,
extracted by the same SMART/Cumulus team ("manually tested against the bulk-data-server
test server, Oracle and Epic"). It runs offline against any FHIR base URL without
credentials, so it is the peer here: it reads our CapabilityStatement, kicks off with
``Prefer: respond-async``, polls with ``Accept: application/json`` honouring
``Retry-After``, downloads every ``output``/``error``/``deleted`` file, checks line
counts, and DELETEs the job at the end. Its default ``_typeFilter`` for Observations
(nine categories, commas URL-quoted inside the filter) exercises our filter parsing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import IN_CI, start_server
from test_bulk_export import load_studies

SMART_FETCH = shutil.which("smart-fetch", path=str(Path(sys.executable).parent)) or shutil.which("smart-fetch")


@pytest.fixture(scope="module")
def peer_server(backend: str, databases, tmp_path_factory):  # type: ignore[no-untyped-def]
    if SMART_FETCH is None:
        if IN_CI:
            pytest.fail("smart-fetch is not installed (pip install '.[test]')")
        pytest.skip("smart-fetch is not installed (pip install '.[test]')")
    tmp = tmp_path_factory.mktemp("peer")
    server = start_server(
        databases.url(backend, "bulkpeer"),
        tmp,
        extra_env={"TRIALFHIR_EXPORT_DIR": str(tmp / "exports"), "TRIALFHIR_EXPORT_POLL_SECONDS": "0.1"},
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        load_studies(client)
    yield server
    server.stop()


def smart_fetch(out: Path, base: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert SMART_FETCH is not None
    proc = subprocess.run(
        [SMART_FETCH, "bulk", str(out), "--fhir-url", base, "--no-compression", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(out.parent), "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read_ndjson(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            found.setdefault(doc["resourceType"], set()).add(doc.get("id", ""))
    return found


def log_events(folder: Path) -> dict[str, Any]:
    return {e["eventId"]: e["eventDetail"] for e in map(json.loads, (folder / "log.ndjson").read_text().splitlines())}


def test_smart_fetch_exports_one_study(peer_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "study-a"
    proc = smart_fetch(out, peer_server.base, "--group", "grp-a", "--type", "Patient,Observation")
    assert read_ndjson(out) == {"Patient": {"pa1", "pa2"}, "Observation": {"obs-a1", "obs-a2", "obs-a-der"}}
    events = log_events(out)
    kickoff = events["kickoff"]
    assert kickoff["exportUrl"].startswith(peer_server.base + "/Group/grp-a/$export?")
    assert kickoff["softwareName"] == "trialfhir" and kickoff["fhirVersion"] == "4.0.1"
    assert kickoff["requestParameters"]["_typeFilter"].startswith("Observation?category=")  # its default filter
    assert events["export_complete"]["resources"] == 5 + 1  # 5 resources + 1 error line
    # the Group's members that are not exportable patients come back as warnings in the error file
    errors = [json.loads(line) for p in (out / "error").glob("*.ndjson") for line in p.read_text().splitlines()]
    assert errors and all(e["resourceType"] == "OperationOutcome" for e in errors)
    assert "Patient/ghost" in proc.stdout.replace("\n", " ") or "ghost" in json.dumps(errors)
    # smart-fetch deleted the job when it was done
    status_url = kickoff["responseHeaders"]["content-location"]
    assert httpx.get(status_url, timeout=30).status_code == 404


def test_smart_fetch_type_filter_and_incremental_since(peer_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = tmp_path / "first"
    smart_fetch(first, peer_server.base, "--type", "Observation", "--type-filter", "Observation?code=http://loinc.org|1988-5")
    assert read_ndjson(first) == {"Observation": {"obs-a1", "obs-a2", "obs-b1", "obs-x"}}
    since = log_events(first)["status_complete"]["transactionTime"]
    # changes after that export: an update, a deletion, a new resource
    with httpx.Client(base_url=peer_server.url, timeout=60) as client:
        doc = client.get("/fhir/Observation/obs-b1").json()
        doc["note"] = [{"text": "corrected"}]
        assert client.put("/fhir/Observation/obs-b1", json=doc, headers={"content-type": "application/fhir+json"}).status_code == 200
        assert client.delete("/fhir/Observation/obs-x").status_code == 204
        new = dict(doc, id="obs-new")
        assert client.put("/fhir/Observation/obs-new", json=new, headers={"content-type": "application/fhir+json"}).status_code == 201
    second = tmp_path / "second"
    proc = smart_fetch(second, peer_server.base, "--type", "Observation", "--since", since, "--no-default-filters")
    assert "_since" in log_events(second)["kickoff"]["requestParameters"], proc.stdout
    assert read_ndjson(second) == {"Observation": {"obs-b1", "obs-new"}}
    deleted = [json.loads(line) for p in (second / "deleted").glob("*.ndjson") for line in p.read_text().splitlines()]
    assert [e["request"] for b in deleted for e in b["entry"]] == [{"method": "DELETE", "url": "Observation/obs-x"}]


def test_trialfhir_export_cli(peer_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Our own client, ``trialfhir export``, runs the same flow with a progress bar on stderr."""
    from test_bulk_export import STUDY_A

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "service.cli", "export", peer_server.base, "--group", "grp-a", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(item["count"] for item in manifest["output"]) + sum(item["count"] for item in manifest.get("error", []))
    assert "[##############################]" in proc.stderr and f"download: {total}/{total} resources" in proc.stderr
    exported = sum(item["count"] for item in manifest["output"])
    assert proc.stdout.startswith(f"exported {exported} resources in {len(manifest['output'])} files to ")
    got = read_ndjson(out)
    # besides the study's own Measures, the ones the server publishes for its MeasureReports
    assert STUDY_A["Measure"] <= got.pop("Measure")
    assert got == {t: ids for t, ids in STUDY_A.items() if t != "Measure"}
    assert read_ndjson(out / "error").keys() == {"OperationOutcome"}
    manifest = json.loads((out / "manifest.json").read_text())
    status = manifest["output"][0]["url"].split("/$export-file/")[1].split("/")[0]
    assert httpx.get(f"{peer_server.base}/$export-status/{status}", timeout=30).status_code == 404  # deleted when done
    bad = subprocess.run([*cmd[:5], "--type", "Nonsense", "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=120, cwd=root)
    assert bad.returncode == 1 and "Nonsense" in bad.stderr
