"""REST benchmark: trialfhir's create rate and read latency against a bare FastAPI baseline.

Run from the repo root::

    python -m bench.rest_bench [--backend sqlite|postgresql|both] [--creates 2000] [--reads 5000]

For each backend it starts, on free loopback ports, two uvicorn servers with the same
settings (1 worker, ``log_level="warning"``, ``access_log=False``; uvicorn[standard] so
uvloop + httptools):

- trialfhir itself (``python -m service.cli serve --workers 1``) on a fresh temp SQLite
  file or a fresh PostgreSQL database (created here, dropped at the end), with
  ``TRIALFHIR_LOG_LEVEL=WARNING``;
- the baseline :mod:`bench.baseline_app` (``GET /r/{id}`` a constant body of the same
  size, ``POST /r`` echoes the body with 201) — the floor set by uvicorn + FastAPI + the
  client loop on this machine, measured in the same run.

One sequential client on one persistent keep-alive ``http.client.HTTPConnection`` drives
both identically: a warm-up (not measured), then N sequential creates (POST of a ~600-byte
lab Observation) timed as a whole for creates/s, then M reads of a sample of the created
ids, each timed for the median and p95. It prints a table against the targets and always
exits 0 (it is a report; a missed target is printed as FAIL), and writes the numbers to
``bench/results/rest_bench.json`` (``--json ''`` for none).

Latency on a small machine depends on what else runs there, so each loop also records
(Linux, from /proc) how much CPU *other* processes used meanwhile — the report warns above
10% — and the CPU the server itself spent per request, which other load distorts much less.
``--nice -10`` (root) raises the client's and servers' priority on a shared machine.
Where the time goes inside trialfhir: :mod:`bench.profile_rest`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.payload import observation_bytes

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TRIALFHIR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SERVER_LOG_LEVEL = "WARNING"

# Targets for trialfhir (1 worker, 1 sequential client, loopback).
TARGET_READ_MEDIAN_MS = 1.5
TARGET_READ_P95_MS = 3.0
TARGET_CREATES_PER_S = 500.0

#: Above this share of the machine's CPU used by other processes, the report warns.
FOREIGN_LOAD_WARN = 0.10

FHIR_HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


# --- measurements -----------------------------------------------------------------------------


@dataclass
class Measurement:
    """What one client run against one server measured."""

    label: str
    creates: int
    create_seconds: float
    create_ms: list[float] = field(repr=False)
    reads: int = 0
    read_ms: list[float] = field(default_factory=list, repr=False)
    #: share of the machine's CPU that other processes used during the create / read loops
    foreign_create: float | None = None
    foreign_read: float | None = None
    #: CPU seconds the server process used in the create / read loops
    server_cpu_create: float | None = None
    server_cpu_read: float | None = None
    #: CPU seconds the PostgreSQL backends serving the benchmark database used
    db_cpu_create: float | None = None
    db_cpu_read: float | None = None

    @property
    def creates_per_s(self) -> float:
        return self.creates / self.create_seconds

    def summary(self) -> dict[str, float]:
        return {
            "creates_per_s": self.creates_per_s,
            "create_median_ms": statistics.median(self.create_ms),
            "create_p95_ms": percentile(self.create_ms, 95),
            "read_median_ms": statistics.median(self.read_ms),
            "read_p95_ms": percentile(self.read_ms, 95),
            "read_p99_ms": percentile(self.read_ms, 99),
            "read_max_ms": max(self.read_ms),
            "foreign_cpu_create": self.foreign_create,
            "foreign_cpu_read": self.foreign_read,
            "server_cpu_per_create_ms": None if self.server_cpu_create is None else self.server_cpu_create * 1000 / self.creates,
            "server_cpu_per_read_ms": None if self.server_cpu_read is None else self.server_cpu_read * 1000 / self.reads,
            "db_cpu_per_create_ms": None if self.db_cpu_create is None else self.db_cpu_create * 1000 / self.creates,
            "db_cpu_per_read_ms": None if self.db_cpu_read is None else self.db_cpu_read * 1000 / self.reads,
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


class CpuMeter:
    """How much of the machine *other* processes used while a loop ran (a noise gauge).

    Machine-wide busy time comes from /proc/stat; our own share is this process (the
    client), the server process and, on PostgreSQL, the backends serving the benchmark
    database (found by its name in their command line). The rest is foreign load, which
    inflates latencies on a small machine. Linux only; elsewhere it reports nothing.
    """

    def __init__(self, server_pid: int, db_name: str | None) -> None:
        self.server_pid = server_pid
        self.db_name = db_name
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cpus = os.cpu_count() or 1

    @staticmethod
    def _machine() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        total = sum(fields[:8])  # guest time is already counted in user
        return total, total - fields[3] - fields[4]  # minus idle, iowait

    @staticmethod
    def _pid_jiffies(pid: int) -> int:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 0
        rest = stat.rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime + stime (all threads)

    def _own(self) -> dict[int, int]:
        own = {self.server_pid: self._pid_jiffies(self.server_pid)}
        if self.db_name:
            needle = self.db_name.encode()
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        if needle in Path(entry.path, "cmdline").read_bytes():
                            own[int(entry.name)] = self._pid_jiffies(int(entry.name))
                    except OSError:
                        continue
        return own

    def start(self) -> None:
        try:
            self.m0 = self._machine()
            self.own0 = self._own()
            t = os.times()
            self.client0 = t.user + t.system
            self.wall0 = time.monotonic()
        except OSError:
            self.m0 = None

    def stop(self) -> float | None:
        """Foreign CPU as a fraction of the whole machine (all CPUs) over the interval.

        Also sets ``server_seconds`` (CPU of the server process) and ``db_seconds`` (CPU of
        the PostgreSQL backends serving the benchmark database; 0 on SQLite).
        """
        self.server_seconds = self.db_seconds = None
        if getattr(self, "m0", None) is None:
            return None
        try:
            total1, busy1 = self._machine()
            own1 = self._own()
        except OSError:
            return None
        t = os.times()
        total = total1 - self.m0[0]
        if total <= 0:
            return None
        own = sum(v - self.own0.get(pid, 0) for pid, v in own1.items())
        app = own1[self.server_pid] - self.own0.get(self.server_pid, 0)
        self.server_seconds = app / self.tick
        self.db_seconds = (own - app) / self.tick
        own += (t.user + t.system - self.client0) * self.tick
        foreign = (busy1 - self.m0[1]) - own
        return max(0.0, foreign / total)


class Client:
    """One persistent keep-alive connection; every response body is read in full."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, resp, data

    def close(self) -> None:
        self.conn.close()


def run_client(
    port: int,
    *,
    label: str,
    post_path: str,
    read_path: Callable[[str], str],
    created_id: Callable[[http.client.HTTPResponse, int], str],
    creates: int,
    reads: int,
    warmup: int,
    read_sample: int,
    seed: int,
    meter: CpuMeter | None = None,
) -> Measurement:
    """Warm up, then time ``creates`` sequential POSTs and ``reads`` sequential GETs."""
    rng = random.Random(seed)
    warm_bodies = [observation_bytes(1_000_000 + i, rng) for i in range(warmup)]
    bodies = [observation_bytes(i, rng) for i in range(creates)]
    client = Client(port)
    try:
        # Warm-up writes (not measured): connection, code paths, caches, the DB file.
        for body in warm_bodies:
            status, resp, _ = client.request("POST", post_path, body, FHIR_HEADERS)
            _expect(status, 201, label, "warm-up POST")
            created_id(resp, -1)

        ids: list[str] = []
        create_ms: list[float] = []
        perf = time.perf_counter
        if meter:
            meter.start()
        start = perf()
        for i, body in enumerate(bodies):
            t0 = perf()
            status, resp, _ = client.request("POST", post_path, body, FHIR_HEADERS)
            create_ms.append((perf() - t0) * 1000)
            _expect(status, 201, label, "POST")
            ids.append(created_id(resp, i))
        create_seconds = perf() - start
        foreign_create = meter.stop() if meter else None
        cpu_create = meter.server_seconds if meter else None
        db_create = meter.db_seconds if meter else None

        sample = rng.sample(ids, min(read_sample, len(ids)))
        paths = [read_path(sample[i % len(sample)]) for i in range(reads)]
        rng.shuffle(paths)
        for i in range(warmup):
            status, _, _ = client.request("GET", paths[i % len(paths)], None, FHIR_HEADERS)
            _expect(status, 200, label, "warm-up GET")
        read_ms: list[float] = []
        if meter:
            meter.start()
        for path in paths:
            t0 = perf()
            status, _, _ = client.request("GET", path, None, FHIR_HEADERS)
            read_ms.append((perf() - t0) * 1000)
            _expect(status, 200, label, "GET")
        foreign_read = meter.stop() if meter else None
        cpu_read = meter.server_seconds if meter else None
        db_read = meter.db_seconds if meter else None
    finally:
        client.close()
    return Measurement(
        label, creates, create_seconds, create_ms, reads, read_ms, foreign_create, foreign_read,
        cpu_create, cpu_read, db_create, db_read,
    )


def _expect(status: int, wanted: int, label: str, what: str) -> None:
    if status != wanted:
        raise RuntimeError(f"{label}: {what} answered {status}, expected {wanted}")


def trialfhir_id(resp: http.client.HTTPResponse, _i: int) -> str:
    # Location: http://host/fhir/Observation/{id}/_history/1
    location = resp.getheader("Location") or ""
    parts = location.rstrip("/").split("/")
    if len(parts) < 4 or parts[-2] != "_history":
        raise RuntimeError(f"unexpected Location header {location!r}")
    return parts[-3]


def baseline_id(_resp: http.client.HTTPResponse, i: int) -> str:
    return str(uuid.UUID(int=i + 1 if i >= 0 else 0))


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(name: str, args: list[str], port: int, env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen]:
    """Start ``python args…`` (cwd = repo root), wait for /healthz, stop it afterwards.

    The server inherits this process's scheduling priority (see ``--nice``).
    """
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, port, name, log_path)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_ready(proc: subprocess.Popen, port: int, name: str, log_path: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} was not ready on port {port} after {timeout:.0f}s")


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty database URL for ``backend``; removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'trialfhir-bench.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"trialfhir_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark server: no inherited ``TRIALFHIR_*`` settings, and
    authorization off (the servers bind loopback; the targets are for the store itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALFHIR_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TRIALFHIR_AUTH"] = "off"
    env.update(extra)
    return env


def bench_backend(backend: str, args: argparse.Namespace) -> dict:
    """Baseline then trialfhir on ``backend``; returns both summaries."""
    common = dict(creates=args.creates, reads=args.reads, warmup=args.warmup, read_sample=args.read_sample, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="trialfhir-bench-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        with server("baseline", ["-m", "bench.baseline_app", "--port", str(port)], port, server_env(), tmp) as proc:
            base = run_client(
                port,
                label="baseline",
                post_path="/r",
                read_path=lambda i: f"/r/{i}",
                created_id=baseline_id,
                meter=CpuMeter(proc.pid, None),
                **common,
            )
        with database(backend, tmp) as url:
            port = free_port()
            env = server_env(TRIALFHIR_DATABASE_URL=url, TRIALFHIR_LOG_LEVEL=SERVER_LOG_LEVEL)
            cmd = ["-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            db_name = url.rsplit("/", 1)[1] if backend == "postgresql" else None
            with server("trialfhir", cmd, port, env, tmp) as proc:
                tf = run_client(
                    port,
                    label=f"trialfhir/{backend}",
                    post_path="/fhir/Observation",
                    read_path=lambda i: f"/fhir/Observation/{i}",
                    created_id=trialfhir_id,
                    meter=CpuMeter(proc.pid, db_name),
                    **common,
                )
    return {"backend": backend, "trialfhir": tf.summary(), "baseline": base.summary()}


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("uvicorn", "fastapi", "starlette", "sqlalchemy", "psycopg"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "?"
    extras = []
    for mod in ("uvloop", "httptools"):
        try:
            __import__(mod)
            extras.append(mod)
        except ImportError:
            extras.append(f"no {mod}")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "uvicorn_extras": extras,
    }


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f} /s" if unit == "/s" else f"{value:.3f} ms"


def print_report(result: dict, args: argparse.Namespace, info: dict) -> None:
    tf, base = result["trialfhir"], result["baseline"]
    print()
    print(f"== trialfhir REST benchmark — backend: {result['backend']} ==")
    print(
        f"machine: {info['cpu_count']} CPUs ({info['cpu_model'] or 'unknown model'}), Python {info['python']}, "
        f"{info['platform']}"
    )
    v = info["versions"]
    print(
        f"server: uvicorn {v['uvicorn']} ({', '.join(info['uvicorn_extras'])}), 1 worker, log_level=warning, "
        f"access_log=False; trialfhir with TRIALFHIR_LOG_LEVEL={SERVER_LOG_LEVEL}; fastapi {v['fastapi']}, "
        f"starlette {v['starlette']}, sqlalchemy {v['sqlalchemy']}"
    )
    if info.get("nice"):
        print(f"priority: client and servers run at nice {info['nice']} (PostgreSQL itself at its own)")
    print(
        f"client: 1 sequential keep-alive http.client connection; warm-up {args.warmup} POST + {args.warmup} GET; "
        f"{args.creates} creates, {args.reads} reads over {min(args.read_sample, args.creates)} created ids"
    )
    rows = [
        # label, key, unit, target, higher_is_better
        ("read median", "read_median_ms", "ms", TARGET_READ_MEDIAN_MS, False),
        ("read p95", "read_p95_ms", "ms", TARGET_READ_P95_MS, False),
        ("creates/s (sequential)", "creates_per_s", "/s", TARGET_CREATES_PER_S, True),
        ("create median", "create_median_ms", "ms", None, False),
        ("create p95", "create_p95_ms", "ms", None, False),
        ("read p99", "read_p99_ms", "ms", None, False),
        ("server CPU per create", "server_cpu_per_create_ms", "ms", None, False),
        ("server CPU per read", "server_cpu_per_read_ms", "ms", None, False),
    ]
    if result["backend"] == "postgresql":
        rows += [
            ("PG backend CPU / create", "db_cpu_per_create_ms", "ms", None, False),
            ("PG backend CPU / read", "db_cpu_per_read_ms", "ms", None, False),
        ]
    header = f"{'metric':<24} | {'trialfhir':>12} | {'baseline':>12} | {'ratio':>7} | {'target':>12} | result"
    print(header)
    print("-" * len(header))
    failed = []
    for label, key, unit, target, higher in rows:
        t, b = tf[key], base[key]
        if t is None:
            continue
        ratio = f"{t / b:.2f}x" if b else "-"
        if target is None:
            target_s, verdict = "-", "info"
        else:
            ok = t >= target if higher else t <= target
            target_s = (">= " if higher else "<= ") + (f"{target:,.0f} /s" if unit == "/s" else f"{target:g} ms")
            verdict = "PASS" if ok else "FAIL"
            if not ok:
                failed.append(label)
        base_s = _fmt(b, unit) if b else "-"
        print(f"{label:<24} | {_fmt(t, unit):>12} | {base_s:>12} | {ratio:>7} | {target_s:>12} | {verdict}")
    print("ratio = trialfhir / baseline (latency: times slower; rate: fraction of the baseline rate)")
    print(
        "server CPU = user+system CPU of the server process per request (less sensitive to other load than latency)"
        + ("; PG backend CPU = the PostgreSQL processes serving the benchmark database" if result["backend"] == "postgresql" else "")
    )
    noise = [(who, phase, r[f"foreign_cpu_{phase}"]) for who, r in (("trialfhir", tf), ("baseline", base)) for phase in ("create", "read")]
    if all(v is not None for _, _, v in noise):
        print(
            "other processes' CPU during the measured loops (share of all "
            f"{info['cpu_count']} CPUs): " + ", ".join(f"{who} {phase}s {100 * v:.0f}%" for who, phase, v in noise)
        )
        worst = max(v for _, _, v in noise)
        if worst > FOREIGN_LOAD_WARN:
            print(
                f"WARNING: the machine was busy with other work (up to {100 * worst:.0f}% of its CPU); "
                "latencies are inflated and rates deflated — re-run on a quiet machine for a verdict."
            )
    if failed:
        print(f"RESULT ({result['backend']}): {len(failed)} target(s) MISSED: {', '.join(failed)}")
    else:
        print(f"RESULT ({result['backend']}): all targets met")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_bench", description="trialfhir REST create/read benchmark")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200, help="un-measured requests of each kind first")
    parser.add_argument("--read-sample", type=int, default=1000, help="how many created ids the reads draw on")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="adjust the client's and servers' scheduling priority first (negative needs root): on a "
        "machine shared with other work, e.g. --nice -10 keeps that work from preempting the benchmark",
    )
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "rest_bench.json"), help="write the results here ('' for none)")
    args = parser.parse_args(argv)
    if args.creates < 1 or args.reads < 1:
        parser.error("--creates and --reads must be positive")

    if args.nice:
        try:
            os.nice(args.nice)
        except OSError as exc:
            parser.error(f"--nice {args.nice}: {exc}")
    info = machine()
    info["nice"] = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        started = time.monotonic()
        try:
            result = bench_backend(backend, args)
        except Exception as exc:  # noqa: BLE001 - a report: say what broke, go on with the next backend
            print(f"\n== backend {backend}: benchmark could not run: {exc}", file=sys.stderr)
            continue
        result["seconds"] = round(time.monotonic() - started, 1)
        results.append(result)
        print_report(result, args, info)
        print(f"(backend {backend} took {result['seconds']} s)")
        sys.stdout.flush()

    if args.json and results:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        config = {k: getattr(args, k) for k in ("creates", "reads", "warmup", "read_sample", "seed", "nice")}
        out.write_text(json.dumps({"machine": info, "config": config, "results": results}, indent=2))
        print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
