"""How long the study report of the demo study takes to render (target ≤ 1 s).

    python -m bench.report_bench [--backend sqlite|postgresql|both] [--runs 20]

Loads the demo study (contract §6) into a fresh database, then times, through the ASGI
app in-process (no network), alternately:

- ``GET /studies/BM-CMSC-RA/report`` — the page: derivation + report data + SVG + HTML;
- ``GET /fhir/ResearchStudy/bm-cmsc-ra/$endpoints`` — the same-run baseline: the same
  derivation, its FHIR resources and the (idempotent, after the first call writing nothing)
  comparison with the stored outputs.

Prints the first (cold) page time, then median and max over ``--runs`` warm requests of each.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

from sqlalchemy import create_engine, text

TARGET_S = 1.0


def _fresh_url(backend: str, tmp: str) -> tuple[str, Callable[[], None]]:
    if backend == "sqlite":
        return f"sqlite:///{tmp}/report-{uuid.uuid4().hex[:6]}.db", lambda: None
    admin_url = os.environ.get("TRIALFHIR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"bench_report_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def _timed(client: object, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)  # type: ignore[attr-defined]
    took = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return took


def run(backend: str, runs: int) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings
    from service.domain import demo
    from service.domain.service import DomainService

    page = f"/studies/{demo.STUDY_CODE}/report"
    endpoints = "/fhir/ResearchStudy/bm-cmsc-ra/$endpoints"
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = _fresh_url(backend, tmp)
        try:
            app = create_app(Settings.from_env(database_url=url, auth="off"))  # in-process, no caller to authenticate
            logging.getLogger("trialfhir").setLevel(logging.WARNING)
            state = app.state
            demo.load_demo(DomainService(state.store.engine, state.store, state.bundles, "http://testserver/fhir"))
            with TestClient(app, base_url="http://testserver") as client:
                cold = _timed(client, page)
                _timed(client, endpoints)  # stores the outputs once; later calls compare and write nothing
                pages, bases = [], []
                for _ in range(runs):
                    pages.append(_timed(client, page))
                    bases.append(_timed(client, endpoints))
            state.store.engine.dispose()
        finally:
            drop()
    median, baseline = statistics.median(pages), statistics.median(bases)
    verdict = "PASS" if median <= TARGET_S else "FAIL"
    print(
        f"{backend:10s} report page median {median * 1000:.1f} ms (max {max(pages) * 1000:.1f} ms, cold first {cold * 1000:.1f} ms) "
        f"over {runs} runs (target <= {TARGET_S:g} s: {verdict}); same-run $endpoints median {baseline * 1000:.1f} ms "
        f"(max {max(bases) * 1000:.1f} ms); ratio {median / baseline:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        run(backend, args.runs)


if __name__ == "__main__":
    main()
