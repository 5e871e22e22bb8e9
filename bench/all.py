"""Every benchmark in bench/, one command, one table of every performance target.

    python -m bench.all                       # small sizes (minutes): a smoke run of every target
    python -m bench.all --full                # each benchmark at its own full defaults (an hour or more)
    python -m bench.all --backend sqlite      # one backend (default: both)
    python -m bench.all --only rest,demo      # a subset (rest search transaction export derivation demo report)

Each benchmark runs as its own process (``python -m bench.<name>_bench …``), one after the
other, so none disturbs another's numbers; its full output is kept in
``bench/results/all/<name>.log`` and its JSON results next to it. The closing table has one
row per target and backend: the measured value, the same-run baseline that benchmark
measures next to it (a bare FastAPI app, the raw SQL floor, model validation, …), the
target, and PASS / FAIL. ``scale`` says whether the value was measured at the size the
target is defined for (``full``) or at the small default (``small``): a small run is a
smoke test of the pipeline and an early warning, not a verdict on a target defined at
1M resources. The table is also written to ``bench/results/all.json`` and
``bench/results/all.md`` (for the README's Performance section).

Benchmarks do not fail on a missed target (they are reports); this command exits 1 when
a benchmark could not run at all, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["rest", "search", "transaction", "export", "derivation", "demo", "report"]


@dataclass
class Row:
    bench: str
    metric: str
    backend: str
    value: float | None
    baseline: float | None
    baseline_what: str
    baseline_unit: str
    unit: str
    target: float
    higher_is_better: bool
    scale: str  # "full" | "small"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "ERROR"
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "PASS" if ok else "FAIL"


# --- how each benchmark is run (small / full) -----------------------------------------------------------


def _args(name: str, full: bool, out: Path) -> list[str]:
    """Command-line arguments of one benchmark (its JSON written into ``out``)."""
    j = str(out / f"{name}.json")
    if name == "rest":
        return ["--json", j] + ([] if full else ["--creates", "300", "--reads", "600", "--warmup", "50", "--read-sample", "200"])
    if name == "search":
        return ["--json", j] + ([] if full else ["--only", "small", "--small-observations", "10000", "--small-patients", "100", "--queries", "50", "--pages", "20", "--creates", "300", "--max-seconds", "10", "--no-fixes"])
    if name == "transaction":
        return ["--json", j] + ([] if full else ["--runs", "3", "--big", "2000", "--no-profile"])
    if name == "export":
        return ["--out", j] + ([] if full else ["--resources", "20000", "--patients", "200"])
    if name == "derivation":
        return ["--json", j] + ([] if full else ["--subjects", "1000", "--small", "200", "--data-subjects", "1000", "--repeat", "1"])
    if name == "demo":
        return [] if full else ["--runs", "3"]
    if name == "report":
        return [] if full else ["--runs", "5"]
    raise ValueError(name)


# --- reading each benchmark's results into rows ---------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def rows_rest(doc: dict[str, Any], full: bool, _stdout: str) -> list[Row]:
    out = []
    for r in doc["results"]:
        tf, base = r["trialfhir"], r["baseline"]
        for metric, key, unit, target, higher in (
            ("REST read median", "read_median_ms", "ms", 1.5, False),
            ("REST read p95", "read_p95_ms", "ms", 3.0, False),
            ("REST creates/s (1 client)", "creates_per_s", "/s", 500.0, True),
        ):
            out.append(Row("rest", metric, r["backend"], tf[key], base[key], "bare FastAPI app", unit, unit, target, higher, "full"))
    return out


def rows_search(doc: dict[str, Any], full: bool, _stdout: str) -> list[Row]:
    out = []
    for r in doc["results"]:
        scale = "full" if r["observations"] >= 1_000_000 else "small"
        label = f" @{r['label']}"
        floor = r["floor"]["p50_ms"]
        q = r["queries"]
        out.append(Row("search", "subject+code p95" + label, r["backend"], q["subject_code"]["p95_ms"], floor, "pk lookup p50", "ms", "ms", 20.0, False, scale))
        out.append(Row("search", "code+date+value p95" + label, r["backend"], q["code_date_value"]["p95_ms"], floor, "pk lookup p50", "ms", "ms", 50.0, False, scale))
        out.append(Row("search", "paging: last/first page p50" + label, r["backend"], r["walk"]["last_over_first"], r["walk"]["first_p50_ms"], "first page p50", "ms", "x", 2.0, False, scale))
        wc = r["write_cost"]
        out.append(Row("search", "create cost with/without indexing" + label, r["backend"], wc["ratio"], wc["off_ms"], "create, indexing off", "ms", "x", 1.40, False, scale))
    return out


def rows_transaction(doc: dict[str, Any], full: bool, _stdout: str) -> list[Row]:
    out = []
    for r in doc["results"]:
        b = r["backend"]
        base = median(r["baseline"])
        target = {"sqlite": 5000.0, "postgresql": 3000.0}[b]
        for path in ("app", "uvicorn"):
            if r.get(path):
                m = median(r[path])
                out.append(Row("transaction", f"1,100-entry transaction res/s ({path})", b, m, base, "R4B validation", "/s", "/s", target, True, "full"))
                out.append(Row("transaction", f"res/s ÷ validation baseline ({path})", b, m / base, base, "R4B validation", "/s", "x", 0.5, True, "full"))
        big = r.get("big")
        if big and "peak_rss_mb" in big:
            out.append(Row("transaction", f"peak RSS, {big['entries']:,}-entry bundle", b, big["peak_rss_mb"], big.get("rss_before_mb"), "before the request", "MB", "MB", 500.0, False, "full" if big["entries"] >= 10_000 else "small"))
    return out


def rows_export(doc: dict[str, Any], full: bool, _stdout: str) -> list[Row]:
    out = []
    scale = "full" if doc["resources"] >= 1_000_000 else "small"
    for r in doc["runs"]:
        base = r["baseline"]["resources_per_s"]
        out.append(Row("export", f"system $export res/s @{doc['resources']:,}", r["backend"], r["system"]["resources_per_s"], base, "raw SQL → NDJSON", "/s", "/s", 20_000.0, True, scale))
        out.append(Row("export", f"Group $export res/s @{doc['resources']:,}", r["backend"], r["group"]["resources_per_s"], base, "raw SQL → NDJSON", "/s", "/s", 20_000.0, True, scale))
        out.append(Row("export", "export server peak RSS", r["backend"], r["server_peak_rss_mb"], None, "", "MB", "MB", 300.0, False, scale))
    return out


def rows_derivation(doc: dict[str, Any], full: bool, _stdout: str) -> list[Row]:
    out = []
    n = doc["args"]["subjects"]
    for r in doc["results"]:
        big = r["big"]
        out.append(Row("derivation", f"derive all endpoints, {n:,} subjects (s)", r["backend"], big["derive_wall"], big["baseline_wall"], "just read the rows", "s", "s", 10.0, False, "full" if n >= 10_000 else "small"))
        out.append(Row("derivation", "demo end to end, re-derive unchanged", r["backend"], r["demo"]["unchanged_ms_median"], r["demo"]["first_ms"], "first derivation", "ms", "ms", 100.0, False, "full"))
    return out


_DEMO = re.compile(r"^(\w+)\s+demo load median ([\d.]+) s .*raw insert of the same \d+ resources ([\d.]+) s", re.M)
_REPORT = re.compile(r"^(\w+)\s+report page median ([\d.]+) ms .*same-run \$endpoints median ([\d.]+) ms", re.M)


def rows_demo(_doc: Any, full: bool, stdout: str) -> list[Row]:
    return [Row("demo", "serve --demo load (s)", b, float(v), float(base), "raw INSERT of the same rows", "s", "s", 2.0, False, "full") for b, v, base in _DEMO.findall(stdout)]


def rows_report(_doc: Any, full: bool, stdout: str) -> list[Row]:
    return [Row("report", "study report page median", b, float(v), float(base), "$endpoints", "ms", "ms", 1000.0, False, "full") for b, v, base in _REPORT.findall(stdout)]


READERS: dict[str, Callable[[Any, bool, str], list[Row]]] = {
    "rest": rows_rest,
    "search": rows_search,
    "transaction": rows_transaction,
    "export": rows_export,
    "derivation": rows_derivation,
    "demo": rows_demo,
    "report": rows_report,
}


def results_file(name: str, out: Path) -> Path | None:
    if name in ("demo", "report"):
        return None
    return out / f"{name}.json"


# --- running ---------------------------------------------------------------------------------------------


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_one(name: str, backend: str, full: bool, out: Path) -> tuple[list[Row], str | None, float]:
    """Run one benchmark; its rows, or an error message; and its wall time."""
    cmd = [sys.executable, "-m", f"bench.{name}_bench", "--backend", backend, *_args(name, full, out)]
    log = out / f"{name}.log"
    started = time.time()
    print(f"\n=== {name}: {' '.join(cmd[1:])}  (log: {_show(log)})", flush=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        captured = []
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            captured.append(line)
            print(f"  {line}", end="", flush=True)
        code = proc.wait()
    took = time.time() - started
    stdout = "".join(captured)
    if code != 0:
        return [], f"exit {code} (see {_show(log)})", took
    path = results_file(name, out)
    try:
        doc = None
        if path is not None:
            if not path.exists() or path.stat().st_mtime < started:
                return [], f"no fresh results file {path}", took
            doc = _load(path)
        rows = READERS[name](doc, full, stdout)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        return [], f"could not read its results: {exc!r}", took
    if not rows:
        return [], "no target lines in its output", took
    return rows, None, took


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "x":
        return f"×{v:.2f}"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "s":
        return f"{v:.2f} s"
    return f"{v:.2f} ms" if v < 100 else f"{v:,.0f} ms"


def table(rows: list[Row], errors: dict[str, str]) -> str:
    head = ["benchmark", "target metric", "backend", "measured", "same-run baseline", "target", "scale", "result"]
    body = []
    for r in rows:
        base = "-" if r.baseline is None else f"{fmt(r.baseline, r.baseline_unit)} ({r.baseline_what})"
        target = ("≥ " if r.higher_is_better else "≤ ") + fmt(r.target, r.unit)
        body.append([r.bench, r.metric, r.backend, fmt(r.value, r.unit), base, target, r.scale, r.verdict])
    for name, msg in errors.items():
        body.append([name, "(benchmark did not run)", "-", "-", "-", "-", "-", f"ERROR: {msg}"])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |", "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="run every benchmark at its own full defaults (long)")
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of: {', '.join(NAMES)}")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "all"), help="folder for each benchmark's log and JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.time()
    rows: list[Row] = []
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name in names:
        got, err, took = run_one(name, args.backend, args.full, out)
        timings[name] = round(took, 1)
        rows += got
        if err:
            errors[name] = err

    mode = "full" if args.full else "small (smoke) sizes — see the scale column"
    header = (
        f"trialfhir performance targets — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, backend(s) {args.backend}, {mode}; "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    text = table(rows, errors)
    print("\n" + header + "\n\n" + text)
    failed = [r for r in rows if r.verdict != "PASS"]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} targets met" + (f"; {len(errors)} benchmark(s) did not run" if errors else "") + f"; took {time.time() - started:.0f} s")
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "all.md").write_text(header + "\n\n" + text + "\n")
    (results_dir / "all.json").write_text(
        json.dumps(
            {"header": header, "full": args.full, "backend": args.backend, "seconds": timings, "errors": errors, "rows": [asdict(r) | {"verdict": r.verdict} for r in rows]},
            indent=2,
        )
        + "\n"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
