"""Transaction benchmark: a 1,100-entry transaction Bundle against fhir.resources validation.

Run from the repo root::

    python -m bench.transaction_bench [--backend sqlite|postgresql|both] [--runs 5] [--no-http] [--no-big] [--no-profile]

The Bundle: 100 Patients created conditionally (``ifNoneExist`` on a fresh identifier, so
every run creates them) with ``urn:uuid`` fullUrls, and 1,000 lab Observations
(:mod:`bench.payload`) whose subject is one of those placeholders. Every run uses fresh
identifiers, on one fresh database per backend (a temp SQLite file, or a PostgreSQL
database created here and dropped at the end).

Measured, per backend, each ``--runs`` times (median reported):

- ``app``: in-process through the whole ASGI app — ``fastapi.testclient.TestClient``
  POSTs the JSON bytes to ``/fhir`` (JSON parsing, processing, commit, response
  serialisation; no socket). ``Prefer: return=minimal``.
- ``processor``: ``BundleProcessor.process`` called directly on a fresh dict (no HTTP, no
  JSON parsing of the request, no serialisation of the response).
- ``uvicorn`` (unless ``--no-http``): the same bytes POSTed over loopback to
  ``python -m service.cli serve --workers 1`` on the same database.

Throughput is resources written per second (1,100 per Bundle: 100 Patients + 1,000
Observations). The same-run baseline validates the same 1,000 Observation dicts with
``fhir.resources.R4B.observation.Observation.model_validate`` (objects/s); the ratio
trialfhir / baseline has the target ≥ 0.5, and the absolute targets are ≥ 5,000 res/s on
SQLite and ≥ 3,000 on PostgreSQL. Each run also records the CPU it cost per resource — of
the measured process and of the PostgreSQL backends serving the database — and how much of
the machine other processes used meanwhile (:class:`bench.rest_bench.CpuMeter`): on a shared
machine the rates swing with other load, the CPU per resource much less.

The servers and in-process apps run with ``TRIALFHIR_AUTH=off`` (loopback): the targets are
for the store; authorization has its own tests.

Then (unless ``--no-big``) a 10,000-entry Bundle (100 conditional Patients + 9,900
Observations) runs in a child process on a fresh database: its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, client and server in one process, so an
upper bound for the server) has the target ≤ 500 MB; with HTTP, the uvicorn server's own
peak (``VmHWM``) for the same Bundle is reported too.

When a target is missed (and unless ``--no-profile``) one ``processor`` run is profiled with
cProfile and the top functions are printed with their share of the run. The script
always exits 0: it is a report; a missed target is printed as FAIL.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import http.client
import json
import logging
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.payload import observation
from bench.rest_bench import CpuMeter, database, free_port, machine, server, server_env

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.5
TARGET_RES_PER_S = {"sqlite": 5000.0, "postgresql": 3000.0}
TARGET_PEAK_RSS_MB = 500.0
FHIR_HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "Prefer": "return=minimal"}


# --- the Bundle ------------------------------------------------------------------------------


def make_bundle(n_obs: int, n_patients: int, tag: str, seed: int = 7) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The transaction and, separately, its Observations as plain dicts (for the baseline)."""
    rng = random.Random(seed)
    system = f"urn:trialfhir:bench:{tag}"
    entries: list[dict[str, Any]] = []
    placeholders = [f"urn:uuid:{uuid.uuid4()}" for _ in range(n_patients)]
    for k, full in enumerate(placeholders):
        entries.append(
            {
                "fullUrl": full,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": system, "value": f"p{k}"}],
                    "name": [{"family": f"Bench{k}", "given": ["Trial"]}],
                    "gender": "female" if k % 2 else "male",
                    "birthDate": f"19{50 + k % 50}-0{1 + k % 9}-1{k % 10}",
                },
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|p{k}"},
            }
        )
    observations = []
    for i in range(n_obs):
        o = observation(i, rng)
        o["identifier"] = [{"system": f"{system}:obs", "value": str(i)}]
        o["subject"] = {"reference": placeholders[i % n_patients]}
        observations.append(o)
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": o, "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, observations


def check_response(doc: dict[str, Any], n_patients: int, n_obs: int) -> None:
    statuses = [e["response"]["status"] for e in doc["entry"]]
    assert len(statuses) == n_patients + n_obs, len(statuses)
    assert all(s.startswith("201") for s in statuses), Counter(statuses).most_common(5)


# --- measurements ------------------------------------------------------------------------------


def quiet() -> None:
    logging.getLogger("trialfhir").setLevel(logging.WARNING)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)


def baseline_rate(observations: list[dict[str, Any]]) -> float:
    from fhir.resources.R4B.observation import Observation

    data = copy.deepcopy(observations)
    t0 = time.perf_counter()
    for o in data:
        Observation.model_validate(o)
    return len(data) / (time.perf_counter() - t0)


def make_app(url: str):  # type: ignore[no-untyped-def]
    from service.app import create_app
    from service.config import Settings

    app = create_app(Settings.from_env(database_url=url, log_level="WARNING", auth="off"))  # in-process: no caller to authenticate
    quiet()
    return app


def run_app(client: Any, body: bytes, n_patients: int, n_obs: int) -> float:
    t0 = time.perf_counter()
    r = client.post("/fhir", content=body, headers=FHIR_HEADERS)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text[:2000]
    check_response(r.json(), n_patients, n_obs)
    return elapsed


def run_processor(processor: Any, doc: dict[str, Any], n_patients: int, n_obs: int, profile: cProfile.Profile | None = None) -> float:
    from service.fhir import jsonio

    fresh = copy.deepcopy(doc)
    t0 = time.perf_counter()
    if profile:
        profile.enable()
    out = processor.process(fresh, "http://bench/fhir", return_pref="minimal")
    if profile:
        profile.disable()
    elapsed = time.perf_counter() - t0
    check_response(json.loads(jsonio.dumps(out)), n_patients, n_obs)
    return elapsed


def run_http(port: int, body: bytes, n_patients: int, n_obs: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/fhir", body=body, headers=FHIR_HEADERS)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    assert resp.status == 200, data[:2000]
    check_response(json.loads(data), n_patients, n_obs)
    return elapsed


def vm_hwm_mb(pid: int) -> float | None:
    """Peak RSS (VmHWM) of the process ``pid``, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def metered(result: dict[str, Any], path: str, meter: CpuMeter, n_res: int, run: Any) -> float:
    """``run()`` (returning seconds) under ``meter``; records res/s and the CPU per resource of
    the measured process and of the PostgreSQL backends, and the other processes' share."""
    meter.start()
    seconds = run()
    foreign = meter.stop()
    result[path].append(n_res / seconds)
    if meter.server_seconds is not None:
        result[f"{path}_cpu"].append({"process_us": meter.server_seconds * 1e6 / n_res, "db_us": (meter.db_seconds or 0.0) * 1e6 / n_res, "foreign": foreign})
    return seconds


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    n_p, n_o = args.patients, args.observations
    n_res = n_p + n_o
    result: dict[str, Any] = {"backend": backend, "resources_per_bundle": n_res, "app": [], "processor": [], "uvicorn": [], "baseline": []}
    result.update({f"{path}_cpu": [] for path in ("app", "processor", "uvicorn")})
    with tempfile.TemporaryDirectory(prefix="trialfhir-txbench-") as tmp_name, database(backend, Path(tmp_name)) as url:
        db_name = url.rsplit("/", 1)[1] if backend == "postgresql" else None
        meter = CpuMeter(os.getpid(), db_name)
        app = make_app(url)
        with TestClient(app, base_url="http://bench") as client:
            # warm-up (imports, UCUM tables, statement caches): not measured
            warm, warm_obs = make_bundle(50, 10, f"warm-{uuid.uuid4().hex[:8]}")
            run_app(client, json.dumps(warm).encode(), 10, 50)
            baseline_rate(warm_obs)
            for run in range(args.runs):
                doc, observations = make_bundle(n_o, n_p, f"{backend}-{run}-{uuid.uuid4().hex[:8]}")
                result["baseline"].append(baseline_rate(observations))
                body = json.dumps(doc).encode()
                metered(result, "app", meter, n_res, lambda: run_app(client, body, n_p, n_o))
                doc, _ = make_bundle(n_o, n_p, f"{backend}-p{run}-{uuid.uuid4().hex[:8]}")
                metered(result, "processor", meter, n_res, lambda: run_processor(app.state.bundles, doc, n_p, n_o))
                print(f"  {backend} run {run + 1}/{args.runs}: app {result['app'][-1]:,.0f} res/s, processor {result['processor'][-1]:,.0f} res/s, baseline {result['baseline'][-1]:,.0f} obj/s", flush=True)
            app_med = statistics.median(result["app"])
            base_med = statistics.median(result["baseline"])
            if not args.no_profile and (app_med < TARGET_RES_PER_S[backend] or app_med / base_med < TARGET_RATIO):
                doc, _ = make_bundle(n_o, n_p, f"{backend}-prof-{uuid.uuid4().hex[:8]}")
                prof = cProfile.Profile()
                elapsed = run_processor(app.state.bundles, doc, n_p, n_o, profile=prof)
                result["profile"] = profile_report(prof, elapsed)
        app.state.store.engine.dispose()
        if not args.no_http:
            port = free_port()
            env = server_env(TRIALFHIR_DATABASE_URL=url, TRIALFHIR_LOG_LEVEL="WARNING")
            cmd = ["-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            with server("trialfhir", cmd, port, env, Path(tmp_name)) as proc:
                warm, _ = make_bundle(50, 10, f"warmh-{uuid.uuid4().hex[:8]}")
                run_http(port, json.dumps(warm).encode(), 10, 50)
                server_meter = CpuMeter(proc.pid, db_name)
                for run in range(args.runs):
                    doc, _ = make_bundle(n_o, n_p, f"{backend}-h{run}-{uuid.uuid4().hex[:8]}")
                    body = json.dumps(doc).encode()
                    metered(result, "uvicorn", server_meter, n_res, lambda: run_http(port, body, n_p, n_o))
                    print(f"  {backend} uvicorn run {run + 1}/{args.runs}: {result['uvicorn'][-1]:,.0f} res/s", flush=True)
                if not args.no_big:
                    n_big_p = 100
                    n_big_o = args.big - n_big_p
                    doc, _ = make_bundle(n_big_o, n_big_p, f"{backend}-bigh-{uuid.uuid4().hex[:8]}")
                    before = vm_hwm_mb(proc.pid)
                    seconds = run_http(port, json.dumps(doc).encode(), n_big_p, n_big_o)
                    result["big_uvicorn"] = {"entries": args.big, "seconds": seconds, "server_peak_rss_mb_before": before, "server_peak_rss_mb": vm_hwm_mb(proc.pid)}
    if not args.no_big:
        result["big"] = big_in_child(backend, args.big)
    return result


def profile_report(prof: cProfile.Profile, elapsed: float, top: int = 18) -> dict[str, Any]:
    stats = pstats.Stats(prof)
    total = elapsed
    rows = []
    for (filename, line, name), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.replace(str(ROOT) + "/", "")
        if "site-packages/" in short:
            short = short.split("site-packages/", 1)[1]
        rows.append({"function": f"{short}:{line}({name})", "calls": nc, "self_s": tt, "cum_s": ct, "self_pct": 100 * tt / total, "cum_pct": 100 * ct / total})
    by_cum = sorted((r for r in rows if r["cum_pct"] < 99.9), key=lambda r: -r["cum_s"])[:top]
    by_self = sorted(rows, key=lambda r: -r["self_s"])[:top]
    return {"profiled_seconds": total, "by_cumulative": by_cum, "by_self": by_self}


# --- the big Bundle, in a child process (peak RSS) ------------------------------------------------


def big_in_child(backend: str, entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trialfhir-txbig-") as tmp_name, database(backend, Path(tmp_name)) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.transaction_bench", "--_big-child", url, "--big", str(entries)],
            cwd=ROOT,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def big_child(url: str, entries: int) -> int:
    import resource

    from fastapi.testclient import TestClient

    def rss_now_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    app = make_app(url)
    n_p = 100
    n_o = entries - n_p
    with TestClient(app, base_url="http://bench") as client:
        warm, _ = make_bundle(20, 5, f"warm-{uuid.uuid4().hex[:8]}")
        run_app(client, json.dumps(warm).encode(), 5, 20)
        doc, observations = make_bundle(n_o, n_p, f"big-{uuid.uuid4().hex[:8]}")
        body = json.dumps(doc).encode()
        del doc, observations
        ready_mb = rss_now_mb()
        peak_ready_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        seconds = run_app(client, body, n_p, n_o)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"entries": entries, "body_mb": len(body) / 1e6, "seconds": seconds, "res_per_s": entries / seconds, "rss_before_mb": ready_mb, "peak_before_mb": peak_ready_mb, "peak_rss_mb": peak_mb}))
    return 0


# --- report ------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def print_report(results: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> None:
    print()
    print(f"transaction benchmark — {info['cpu_count']} CPUs ({info['cpu_model']}), Python {info['python']}, {args.runs} runs, median")
    print(f"bundle: {args.patients} conditional Patient creates (ifNoneExist, urn:uuid) + {args.observations} Observations referencing them = {args.patients + args.observations} resources")
    print()
    header = f"{'backend':<11} {'path':<10} {'res/s':>9} {'min–max':>17} {'target':>8} {'':>5} {'baseline obj/s':>15} {'ratio':>6} {'≥0.5':>5}"
    print(header)
    print("-" * len(header))
    for res in results:
        backend = res["backend"]
        base = statistics.median(res["baseline"])
        for path in ("app", "processor", "uvicorn"):
            vals = res[path]
            if not vals:
                continue
            med = statistics.median(vals)
            target = TARGET_RES_PER_S[backend]
            ratio = med / base
            print(
                f"{backend:<11} {path:<10} {med:>9,.0f} {f'{min(vals):,.0f}–{max(vals):,.0f}':>17} {target:>8,.0f} {verdict(med >= target):>5} {base:>15,.0f} {ratio:>6.3f} {verdict(ratio >= TARGET_RATIO):>5}"
            )
    print()
    print("CPU per resource, median over the runs (less sensitive to other load than the rates): µs of the measured")
    print("process (app, processor: this process, TestClient included for app; uvicorn: the server) and of the")
    print("PostgreSQL backends serving the database; other = share of the machine's CPU used by other processes")
    header = f"{'backend':<11} {'path':<10} {'process µs':>11} {'PG µs':>8} {'total µs':>9} {'other':>6}"
    print(header)
    print("-" * len(header))
    for res in results:
        for path in ("app", "processor", "uvicorn"):
            cpu = res.get(f"{path}_cpu") or []
            if not cpu:
                continue
            proc_us = statistics.median(c["process_us"] for c in cpu)
            db_us = statistics.median(c["db_us"] for c in cpu)
            foreign = [c["foreign"] for c in cpu if c["foreign"] is not None]
            other = f"{100 * statistics.median(foreign):.0f}%" if foreign else "-"
            db_text = f"{db_us:,.0f}" if res["backend"] == "postgresql" else "-"
            print(f"{res['backend']:<11} {path:<10} {proc_us:>11,.0f} {db_text:>8} {proc_us + db_us:>9,.0f} {other:>6}")
    print()
    for res in results:
        big = res.get("big")
        if big:
            if "error" in big:
                print(f"{res['backend']}: 10,000-entry bundle FAILED in the child: {big['error']}")
            else:
                print(
                    f"{res['backend']:<11} {big['entries']:,}-entry bundle in-process ({big['body_mb']:.1f} MB): {big['seconds']:.1f} s ({big['res_per_s']:,.0f} res/s), "
                    f"peak RSS {big['peak_rss_mb']:.0f} MB (before the request {big['rss_before_mb']:.0f} MB) — target ≤ {TARGET_PEAK_RSS_MB:.0f} MB: {verdict(big['peak_rss_mb'] <= TARGET_PEAK_RSS_MB)}"
                )
        bu = res.get("big_uvicorn")
        if bu and bu.get("server_peak_rss_mb") is not None:
            print(
                f"{res['backend']:<11} {bu['entries']:,}-entry bundle via uvicorn: {bu['seconds']:.1f} s, server peak RSS {bu['server_peak_rss_mb']:.0f} MB "
                f"(before {bu['server_peak_rss_mb_before']:.0f} MB) — target ≤ {TARGET_PEAK_RSS_MB:.0f} MB: {verdict(bu['server_peak_rss_mb'] <= TARGET_PEAK_RSS_MB)}"
            )
    for res in results:
        prof = res.get("profile")
        if not prof:
            continue
        print()
        print(f"profile ({res['backend']}, BundleProcessor.process, one {res['resources_per_bundle']}-resource bundle, {prof['profiled_seconds']:.2f} s under cProfile)")
        print(f"  {'cum %':>6} {'self %':>6} {'calls':>9}  function (by cumulative time)")
        for row in prof["by_cumulative"]:
            print(f"  {row['cum_pct']:>6.1f} {row['self_pct']:>6.1f} {row['calls']:>9}  {row['function']}")
        print(f"  {'self %':>6} {'calls':>9}  function (by self time)")
        for row in prof["by_self"][:12]:
            print(f"  {row['self_pct']:>6.1f} {row['calls']:>9}  {row['function']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--observations", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--big", type=int, default=10_000, help="entries in the peak-memory bundle")
    parser.add_argument("--no-http", action="store_true", help="skip the uvicorn measurements")
    parser.add_argument("--no-big", action="store_true", help="skip the 10,000-entry bundle")
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "transaction_bench.json"), help="write the results here ('' for none)")
    parser.add_argument("--_big-child", dest="big_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.big_child:
        return big_child(args.big_child, args.big)
    quiet()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    info = machine()
    results = []
    for backend in backends:
        print(f"{backend}: {args.runs} runs …", flush=True)
        results.append(bench_backend(backend, args))
    print_report(results, args, info)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k not in ("json", "big_child")}
        out.write_text(json.dumps({"machine": info, "config": config, "results": results}, indent=2, default=str))
        print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
