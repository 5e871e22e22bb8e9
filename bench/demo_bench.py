"""How long ``trialfhir serve --demo`` takes to load the demo study (target ≤ 2 s).

    python -m bench.demo_bench [--backend sqlite|postgresql|both] [--runs 5]

Each run loads the demo into a fresh database through the domain API's write path
(mappers → one transaction). The same-run baseline is writing the same resources'
bytes straight into the resource table (no validation, no index), the floor of any load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid

from sqlalchemy import create_engine, insert, text


def _fresh_url(backend: str, tmp: str) -> tuple[str, callable]:  # type: ignore[valid-type]
    if backend == "sqlite":
        return f"sqlite:///{tmp}/demo-{uuid.uuid4().hex[:6]}.db", lambda: None
    admin_url = os.environ.get("TRIALFHIR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"bench_demo_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def run(backend: str, runs: int) -> None:
    from mappers.adverse_event import adverse_event_to_fhir
    from mappers.assessment import assessment_to_observation
    from mappers.infusion import infusion_to_medication_administration
    from mappers.study import study_to_fhir
    from mappers.subject import subject_to_fhir
    from service.cli import _domain_service
    from service.config import Settings
    from service.db.migrate import upgrade
    from service.db.schema import resource
    from service.domain import demo
    from service.fhir import jsonio
    from service.search.registry import base_registry

    base_registry()
    loads, floors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            url, drop = _fresh_url(backend, tmp)
            engine, service = _domain_service(Settings.from_env(database_url=url))
            try:
                upgrade(engine)
                started = time.perf_counter()
                demo.load_demo(service)
                loads.append(time.perf_counter() - started)
                res = study_to_fhir(demo.study(), demo.subjects())
                resources = [res.medication, res.plan_definition, res.group, res.research_study]
                for s in demo.subjects():
                    resources.extend(subject_to_fhir(s))
                resources += [infusion_to_medication_administration(i) for i in demo.infusions()]
                resources += [assessment_to_observation(a) for a in demo.assessments()]
                resources += [adverse_event_to_fhir(a) for a in demo.adverse_events()]
                rows = [
                    {"resource_type": r["resourceType"], "id": "floor-" + r["id"], "version_id": 1, "last_updated_us": 0, "deleted": False, "content": jsonio.dumps(r)}
                    for r in resources
                ]
                started = time.perf_counter()
                with engine.begin() as conn:
                    conn.execute(insert(resource), rows)
                floors.append(time.perf_counter() - started)
            finally:
                engine.dispose()
                drop()
    median, floor = statistics.median(loads), statistics.median(floors)
    verdict = "PASS" if median <= 2.0 else "FAIL"
    print(f"{backend:10s} demo load median {median:.3f} s over {runs} runs (target <= 2 s: {verdict}); "
          f"raw insert of the same {len(rows)} resources {floor:.3f} s; ratio {median / floor:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        run(backend, args.runs)


if __name__ == "__main__":
    main()
