"""Bulk export benchmark: 1,000,000 resources through ``$export``, against a baseline.

    .venv/bin/python -m bench.export_bench [--resources 1000000] [--backend postgresql|sqlite|both]

For each backend, in one run:

1. a fresh database (migrated by the service's own migrations) is loaded by bulk INSERT
   (``COPY`` on PostgreSQL, ``executemany`` on SQLite) with the rows the write path would
   have stored: stamped resource bytes in ``resource`` and ``resource_version`` and the
   ``subject``/``patient`` reference index rows of every Observation — 1,000 Patients, one
   Group of all of them (a study cohort) and the Observations that make up the rest;
2. **baseline**: this process streams the same rows straight from the database
   (``SELECT content FROM resource ORDER BY res_key``, server-side cursor) into an NDJSON
   file — the floor any export implementation pays;
3. a real ``trialfhir serve`` process runs a system-level ``$export`` and a
   ``Group/{id}/$export`` of the cohort (kick-off → status polling → complete manifest);
   resources/s is counted from kick-off to the complete manifest, and every file is
   downloaded (streamed) and its lines counted;
4. the server's peak RSS is its ``VmHWM`` (the high-water mark of its address space),
   read just before it is stopped.

Targets: ≥ 20,000 resources/s and peak RSS ≤ 300 MB. Results go to
``bench/results/export_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.db.engine import make_engine  # noqa: E402
from service.db.migrate import upgrade  # noqa: E402
from service.fhir.http import instant  # noqa: E402

PG_ADMIN_URL = os.environ.get("TRIALFHIR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGET_RATE = 20_000
TARGET_RSS_MB = 300
LOINC = [("2345-7", "mg/dL", 65, 190), ("718-7", "g/dL", 9.5, 17.5), ("1988-5", "mg/L", 0.2, 60), ("4537-7", "mm/h", 2, 70), ("2160-0", "mg/dL", 0.5, 1.8)]


# --- data ------------------------------------------------------------------------------------------


_SECONDS: dict[int, str] = {}


def fast_instant(us: int) -> str:
    """:func:`service.fhir.http.instant`, with the per-second part cached (the loader's hot path)."""
    sec, micro = divmod(us, 1_000_000)
    head = _SECONDS.get(sec)
    if head is None:
        head = _SECONDS[sec] = instant(sec * 1_000_000)[:-8]
    return f"{head}.{micro:06d}Z"


def rows(total: int, patients: int, seed: int = 11) -> Iterator[tuple[str, str, bytes, int, str | None]]:
    """(type, id, stamped bytes, lastUpdated µs, subject patient id) in res_key order."""
    rnd = random.Random(seed)
    base_us = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
    for i in range(patients):
        lu = base_us + i
        doc = {
            "resourceType": "Patient",
            "id": f"p{i}",
            "meta": {"versionId": "1", "lastUpdated": fast_instant(lu)},
            "identifier": [{"system": "urn:trialfhir:bench:mrn", "value": f"MRN{i:07d}"}],
            "name": [{"family": f"Family{i % 97}", "given": [f"Given{i % 89}"]}],
            "gender": "female" if i % 2 else "male",
            "birthDate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
        }
        yield "Patient", f"p{i}", orjson.dumps(doc), lu, None
    lu = base_us + patients
    group = {
        "resourceType": "Group",
        "id": "cohort",
        "meta": {"versionId": "1", "lastUpdated": fast_instant(lu)},
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/p{i}"}} for i in range(patients)],
    }
    yield "Group", "cohort", orjson.dumps(group), lu, None
    for j in range(total - patients - 1):
        code, unit, lo, hi = LOINC[j % len(LOINC)]
        pid = f"p{rnd.randrange(patients)}"
        lu = base_us + patients + 1 + j
        doc = {
            "resourceType": "Observation",
            "id": f"o{j}",
            "meta": {"versionId": "1", "lastUpdated": fast_instant(lu)},
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"2024-{1 + j % 12:02d}-{1 + j % 28:02d}T{j % 24:02d}:00:00Z",
            "issued": fast_instant(lu),
            "valueQuantity": {"value": round(rnd.uniform(lo, hi), 1), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        }
        yield "Observation", f"o{j}", orjson.dumps(doc), lu, pid


# --- databases --------------------------------------------------------------------------------------


class BenchDatabase:
    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        if backend == "sqlite":
            self.url = f"sqlite:///{workdir / 'bench.db'}"
            self.dbname = None
        else:
            self.dbname = f"bench_export_{os.getpid()}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{self.dbname}"'))
            admin.dispose()
            self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.dbname}"
        engine = make_engine(self.url, pool_size=2)
        upgrade(engine)
        engine.dispose()

    def drop(self) -> None:
        if self.dbname:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'))
            admin.dispose()

    def load(self, total: int, patients: int) -> float:
        started = time.perf_counter()
        if self.backend == "sqlite":
            self._load_sqlite(total, patients)
        else:
            self._load_pg(total, patients)
        return time.perf_counter() - started

    def _load_pg(self, total: int, patients: int) -> None:
        """One pass over the rows feeding three COPY streams (one connection each)."""
        import psycopg

        dsn = self.url.replace("postgresql+psycopg://", "postgresql://")
        conns = [psycopg.connect(dsn) for _ in range(3)]
        try:
            curs = [c.cursor() for c in conns]
            with curs[0].copy("COPY resource (res_key, resource_type, id, version_id, last_updated_us, deleted, content) FROM STDIN") as c_res, curs[1].copy(
                "COPY resource_version (seq, res_key, resource_type, id, version_id, last_updated_us, method, deleted, content) FROM STDIN"
            ) as c_ver, curs[2].copy("COPY idx_reference (res_key, resource_type, param, target_type, target_id) FROM STDIN") as c_ref:
                for key, (rtype, rid, content, lu, pid) in enumerate(rows(total, patients), start=1):
                    c_res.write_row((key, rtype, rid, 1, lu, False, content))
                    c_ver.write_row((key, key, rtype, rid, 1, lu, "PUT", False, content))
                    if pid is not None:
                        c_ref.write_row((key, rtype, "subject", "Patient", pid))
                        c_ref.write_row((key, rtype, "patient", "Patient", pid))
                for i in range(patients):
                    c_ref.write_row((patients + 1, "Group", "member", "Patient", f"p{i}"))
            for c in conns:
                c.commit()
            with conns[0].cursor() as cur:
                cur.execute("SELECT setval(pg_get_serial_sequence('resource', 'res_key'), %s)", (total,))
                cur.execute("SELECT setval(pg_get_serial_sequence('resource_version', 'seq'), %s)", (total,))
            conns[0].commit()
            conns[0].autocommit = True
            conns[0].execute("VACUUM ANALYZE")
        finally:
            for c in conns:
                c.close()

    def _load_sqlite(self, total: int, patients: int) -> None:
        path = self.url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        res: list[tuple] = []
        ver: list[tuple] = []
        ref: list[tuple] = []

        def flush() -> None:
            conn.executemany("INSERT INTO resource (res_key, resource_type, id, version_id, last_updated_us, deleted, content) VALUES (?,?,?,?,?,?,?)", res)
            conn.executemany(
                "INSERT INTO resource_version (seq, res_key, resource_type, id, version_id, last_updated_us, method, deleted, content) VALUES (?,?,?,?,?,?,?,?,?)", ver
            )
            conn.executemany("INSERT INTO idx_reference (res_key, resource_type, param, target_type, target_id) VALUES (?,?,?,?,?)", ref)
            res.clear()
            ver.clear()
            ref.clear()

        for key, (rtype, rid, content, lu, pid) in enumerate(rows(total, patients), start=1):
            res.append((key, rtype, rid, 1, lu, 0, content))
            ver.append((key, key, rtype, rid, 1, lu, "PUT", 0, content))
            if pid is not None:
                ref.append((key, rtype, "subject", "Patient", pid))
                ref.append((key, rtype, "patient", "Patient", pid))
            if len(res) >= 20_000:
                flush()
        ref.extend((patients + 1, "Group", "member", "Patient", f"p{i}") for i in range(patients))
        flush()
        conn.commit()
        conn.execute("ANALYZE")
        conn.close()


# --- measurements ------------------------------------------------------------------------------------


def baseline(db: BenchDatabase, out: Path) -> dict[str, Any]:
    """Stream every row's bytes straight from the database into one NDJSON file."""
    engine = make_engine(db.url, pool_size=1)
    n = 0
    started = time.perf_counter()
    with engine.connect() as conn, open(out, "wb") as fh:
        result = conn.execution_options(stream_results=True, yield_per=2000).execute(text("SELECT content FROM resource ORDER BY res_key"))
        for part in result.partitions():
            fh.write(b"\n".join(row[0] for row in part) + b"\n")
            n += len(part)
    seconds = time.perf_counter() - started
    engine.dispose()
    size = out.stat().st_size
    out.unlink()
    return {"resources": n, "seconds": round(seconds, 2), "resources_per_s": round(n / seconds), "mb": round(size / 1e6, 1)}


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: BenchDatabase, export_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, TRIALFHIR_DATABASE_URL=db.url, TRIALFHIR_EXPORT_DIR=str(export_dir), TRIALFHIR_LOG_LEVEL="WARNING", TRIALFHIR_EXPORT_POLL_SECONDS="0.1", TRIALFHIR_AUTH="off")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url + "/fhir"
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def _phases(db_url: str, job_id: str) -> dict[str, Any]:
    """Where the server spent the time: scope (selecting a Group's keys) and scan."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT checkpoint FROM bulk_export_job WHERE id = :id"), {"id": job_id}).scalar()
    finally:
        engine.dispose()
    cp = json.loads(raw or "{}")
    return {k: cp[k] for k in ("scope_seconds", "scan_seconds") if k in cp}


def run_export(base: str, path: str, expected: int, download_dir: Path, db_url: str) -> dict[str, Any]:
    started = time.perf_counter()
    r = httpx.get(base + path, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"}, timeout=120)
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    while True:
        s = httpx.get(status_url, timeout=120)
        if s.status_code == 200:
            break
        assert s.status_code == 202, s.text
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    manifest = s.json()
    count = sum(item["count"] for item in manifest["output"])
    phases = _phases(db_url, status_url.rsplit("/", 1)[1])
    assert count == expected, (count, expected)
    # download everything, streamed
    d_started = time.perf_counter()
    lines = size = 0
    download_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=300) as client:
        for item in manifest["output"]:
            target = download_dir / "part.ndjson"
            with client.stream("GET", item["url"]) as resp, open(target, "wb") as fh:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
                    lines += chunk.count(b"\n")
                    size += len(chunk)
            target.unlink()
    d_seconds = time.perf_counter() - d_started
    assert lines == expected
    httpx.delete(status_url, timeout=60)
    return {
        "resources": count,
        "files": len(manifest["output"]),
        "server_phases": phases,
        "seconds": round(seconds, 2),
        "resources_per_s": round(count / seconds),
        "download_seconds": round(d_seconds, 2),
        "download_mb_per_s": round(size / 1e6 / d_seconds, 1),
        "mb": round(size / 1e6, 1),
    }


def bench_backend(backend: str, total: int, patients: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"trialfhir-export-bench-{backend}-"))
    db = BenchDatabase(backend, work)
    try:
        print(f"[{backend}] loading {total:,} resources …", flush=True)
        load_s = db.load(total, patients)
        print(f"[{backend}] loaded in {load_s:.1f} s; baseline stream …", flush=True)
        base = baseline(db, work / "baseline.ndjson")
        print(f"[{backend}] baseline {base['resources_per_s']:,}/s; starting the server …", flush=True)
        proc, fhir = start_server(db, work / "exports", work / "server.log")
        results: dict[str, Any] = {}
        try:
            results["system"] = run_export(fhir, "/$export", total, work / "dl", db.url)
            print(f"[{backend}] system $export {results['system']['resources_per_s']:,}/s", flush=True)
            results["group"] = run_export(fhir, "/Group/cohort/$export", total, work / "dl", db.url)
            print(f"[{backend}] Group $export {results['group']['resources_per_s']:,}/s", flush=True)
        finally:
            hwm_kb = _vm_hwm_kb(proc.pid)
            proc.send_signal(signal.SIGTERM)
            _, _status, usage = os.wait4(proc.pid, 0)
        # The server's own high-water mark (VmHWM of its address space). ru_maxrss of the
        # child is not used: Linux carries the *parent's* peak across fork+exec into it, so
        # it would report this (large) benchmark process instead of the server.
        return {
            "backend": backend,
            "load_seconds": round(load_s, 1),
            "baseline": base,
            **results,
            "server_peak_rss_mb": round(hwm_kb / 1024, 1),
            "server_ru_maxrss_mb_inherited": round(usage.ru_maxrss / 1024, 1),
        }
    finally:
        db.drop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "export_bench.json"))
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    runs = [bench_backend(b, args.resources, args.patients) for b in backends]
    ok = True
    print()
    print(f"{'backend':<11} {'baseline/s':>11} {'system/s':>10} {'group/s':>10} {'download MB/s':>14} {'peak RSS MB':>12}")
    for r in runs:
        print(
            f"{r['backend']:<11} {r['baseline']['resources_per_s']:>11,} {r['system']['resources_per_s']:>10,} {r['group']['resources_per_s']:>10,} "
            f"{r['system']['download_mb_per_s']:>14} {r['server_peak_rss_mb']:>12}"
        )
        ok = ok and r["system"]["resources_per_s"] >= TARGET_RATE and r["group"]["resources_per_s"] >= TARGET_RATE and r["server_peak_rss_mb"] <= TARGET_RSS_MB
    doc = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resources": args.resources,
        "patients": args.patients,
        "machine": {"cpus": os.cpu_count()},
        "targets": {"resources_per_s": TARGET_RATE, "peak_rss_mb": TARGET_RSS_MB},
        "runs": runs,
        "met": ok,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\ntargets (≥ {TARGET_RATE:,}/s, ≤ {TARGET_RSS_MB} MB): {'met' if ok else 'NOT met'}; results in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
