"""Adding a search parameter is a data change plus ``trialfhir reindex``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import FHIR_JSON

NICKNAME = {
    "resourceType": "SearchParameter",
    "url": "http://trialfhir.org/fhir/SearchParameter/Patient-nickname",
    "name": "nickname",
    "status": "active",
    "description": "A patient's nickname",
    "code": "nickname",
    "base": ["Patient"],
    "type": "string",
    "expression": "Patient.name.where(use='nickname').given",
}


def _ids(client, query: str) -> tuple[set[str], list[dict]]:  # type: ignore[no-untyped-def]
    bundle = client.get(f"/fhir/Patient?{query}").json()
    matches = {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}
    outcomes = [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    return matches, outcomes


def test_custom_search_parameter_after_reindex(client, app) -> None:  # type: ignore[no-untyped-def]
    from service.search.reindex import reindex

    before = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"use": "nickname", "given": ["Bibi"]}]}, headers=FHIR_JSON).json()
    assert client.post("/fhir/SearchParameter", json=NICKNAME, headers=FHIR_JSON).status_code == 201

    matches, outcomes = _ids(client, "nickname=bibi")
    assert outcomes and "nickname" in outcomes[0]["issue"][0]["diagnostics"]  # not active until reindex

    assert reindex(app.state.store.engine) >= 2
    matches, outcomes = _ids(client, "nickname=bibi")
    assert matches == {before["id"]} and not outcomes

    after = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"use": "nickname", "given": ["Bibiane"]}]}, headers=FHIR_JSON).json()
    matches, _ = _ids(client, "nickname=bibi")
    assert matches == {before["id"], after["id"]}
    matches, _ = _ids(client, "nickname:exact=Bibi")
    assert matches == {before["id"]}
    patient_params = next(r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient")["searchParam"]
    assert "nickname" in {p["name"] for p in patient_params}


def test_reindex_cli(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    env = dict(os.environ, TRIALFHIR_DATABASE_URL=f"sqlite:///{db}")
    exe = str(Path(sys.executable).parent / "trialfhir")
    out = subprocess.run([exe, "reindex", "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # a fresh store holds only what the server publishes itself (the endpoint Measures)
    import sqlite3

    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM resource WHERE deleted = 0").fetchone()[0]
    assert f"reindexed {stored} resources" in out.stdout
