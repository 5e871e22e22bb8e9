"""Where a trialfhir request spends its time: py-spy on a live server during the REST benchmark loops.

Run from the repo root (py-spy is not a project dependency: ``pip install py-spy``)::

    python -m bench.profile_rest [--backend sqlite|postgresql] [--creates 1500] [--reads 3000]

It starts ``trialfhir serve`` exactly as :mod:`bench.rest_bench` does (1 worker,
``TRIALFHIR_LOG_LEVEL=WARNING``, fresh database), warms up, then for each phase
(sequential creates, then sequential reads) attaches ``py-spy record`` to the server
process, drives the same client loop and reports, from the samples of all server
threads (idle threads excluded):

- the hottest frames, inclusive, as a share of busy samples and as **ms per request**
  (samples / rate / requests: with one sequential client the server has one request in
  flight, so this adds up to the server's busy time per request);
- the hottest leaf frames (self time) and self time by top-level package.

The raw collapsed stacks are kept in ``bench/results/profile-<backend>-<phase>.txt``
(feed them to any flame-graph tool). ``--gil`` samples only the thread holding the GIL
(Python CPU time, the most useful view: waits and idle worker threads drop out);
``--native`` adds C frames (uvloop, sqlite3, libpq). On a machine shared with other
work, run it under ``chrt -f 10`` (root) so preemption does not smear the picture.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.payload import observation_bytes
from bench.rest_bench import (
    FHIR_HEADERS,
    ROOT,
    SERVER_LOG_LEVEL,
    Client,
    database,
    free_port,
    server,
    server_env,
    trialfhir_id,
)

_LINE = re.compile(r":\d+\)$")

# Components a leaf frame is charged to, first match wins: (name, leaf substrings, stack substrings).
_COMPONENTS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    (
        "thread hand-off (anyio to_thread / starlette run_in_threadpool: queue, wake-ups)",
        ("Condition.notify", "Condition.wait", "WorkerThread.run", "(queue.py", "(threading.py", "anyio/"),
        (),
    ),
    # service/storage/bulk.py calls the driver directly: its leaf frames are driver time
    ("database driver (sqlite3 / psycopg calls)", ("do_commit", "do_execute", "do_executemany", "do_rollback", "do_ping", "psycopg/", "service/storage/bulk"), ()),
    ("SQLAlchemy Core (statement build, cache key, compile, execution context, pool)", ("sqlalchemy/",), ()),
    ("trialfhir validation (fhirkit + bindings + ele-1)", ("service/fhir/validation", "service/fhir/bindings"), ()),
    ("trialfhir search indexing (index_resource)", ("service/search/",), ()),
    ("trialfhir JSON parse / serialise", ("service/fhir/jsonio", "(json/", "orjson"), ()),
    ("trialfhir other", ("service/",), ()),
    ("FastAPI / Starlette (routing, dependencies, middleware, responses)", ("fastapi/", "starlette/"), ()),
    ("uvicorn + httptools + event loop", ("uvicorn/", "asyncio/", "uvloop"), ()),
]


def component(leaf: str) -> str:
    for name, needles, _ in _COMPONENTS:
        if any(n in leaf for n in needles):
            return name
    return "other (stdlib: uuid, contextlib, dataclasses, …)"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    return found


def analyse(path: Path, requests: int, rate: int, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    components: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        leaf[frames[-1]] += n
        components[component(frames[-1])] += n
        m = re.search(r"\(([^)]*)\)$", frames[-1])
        where = m.group(1) if m else "?"
        packages[where.split("/")[0] if "/" in where else where] += n
    if not total:
        print("  (no samples)")
        return
    per_req = 1000.0 / rate / requests  # ms of one sample, per request
    print(f"  {total} busy samples at {rate} Hz over {requests} requests = {total * per_req:.3f} ms busy per request")
    print(f"  {'share':>6}  {'ms/req':>7}  hottest frames, inclusive")
    for frame, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {n * per_req:7.3f}  {frame}")
    print(f"  {'share':>6}  {'ms/req':>7}  hottest leaf frames (self)")
    for frame, n in leaf.most_common(max(10, top // 2)):
        print(f"  {100 * n / total:5.1f}%  {n * per_req:7.3f}  {frame}")
    print("  self time by package: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in packages.most_common(12)))
    print(f"  {'share':>6}  {'ms/req':>7}  self time by component")
    for name, n in components.most_common():
        print(f"  {100 * n / total:5.1f}%  {n * per_req:7.3f}  {name}")


def record(pid: int, out: Path, rate: int, extra: list[str]) -> subprocess.Popen:
    cmd = [py_spy(), "record", "-p", str(pid), "-r", str(rate), "--format", "raw", "-o", str(out), "--nonblocking", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let py-spy attach before the loop starts
    if proc.poll() is not None:
        sys.exit(f"py-spy failed: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_rest", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--creates", type=int, default=1500)
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    parser.add_argument("--native", action="store_true", help="include native (C) frames")
    args = parser.parse_args(argv)
    extra = (["--gil"] if args.gil else []) + (["--native"] if args.native else [])
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    warm = [observation_bytes(1_000_000 + i, rng) for i in range(args.warmup)]
    bodies = [observation_bytes(i, rng) for i in range(args.creates)]

    with tempfile.TemporaryDirectory(prefix="trialfhir-profile-") as tmp_name, database(args.backend, Path(tmp_name)) as url:
        port = free_port()
        env = server_env(TRIALFHIR_DATABASE_URL=url, TRIALFHIR_LOG_LEVEL=SERVER_LOG_LEVEL)
        cmd = ["-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with server("trialfhir", cmd, port, env, Path(tmp_name)) as proc:
            client = Client(port)
            for body in warm:
                client.request("POST", "/fhir/Observation", body, FHIR_HEADERS)

            out = results / f"profile-{args.backend}-create.txt"
            spy = record(proc.pid, out, args.rate, extra)
            ids, lat = [], []
            start = time.perf_counter()
            for body in bodies:
                t0 = time.perf_counter()
                status, resp, _ = client.request("POST", "/fhir/Observation", body, FHIR_HEADERS)
                lat.append((time.perf_counter() - t0) * 1000)
                if status != 201:
                    sys.exit(f"POST answered {status}")
                ids.append(trialfhir_id(resp, 0))
            elapsed = time.perf_counter() - start
            stop(spy)
            print(f"== {args.backend}: {args.creates} sequential creates under py-spy: {args.creates / elapsed:.0f}/s, "
                  f"median {statistics.median(lat):.3f} ms ({out.relative_to(ROOT)})")
            analyse(out, args.creates, args.rate, args.top)

            paths = [f"/fhir/Observation/{ids[i % len(ids)]}" for i in range(args.reads)]
            random.Random(8).shuffle(paths)
            for p in paths[: args.warmup]:
                client.request("GET", p, None, FHIR_HEADERS)
            out = results / f"profile-{args.backend}-read.txt"
            spy = record(proc.pid, out, args.rate, extra)
            lat = []
            for p in paths:
                t0 = time.perf_counter()
                status, _, _ = client.request("GET", p, None, FHIR_HEADERS)
                lat.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    sys.exit(f"GET answered {status}")
            stop(spy)
            client.close()
            print(f"\n== {args.backend}: {args.reads} sequential reads under py-spy: median {statistics.median(lat):.3f} ms "
                  f"({out.relative_to(ROOT)})")
            analyse(out, args.reads, args.rate, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
