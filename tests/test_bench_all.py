"""``python -m bench.all`` turns each benchmark's output into target rows correctly.

No benchmark runs here (they take minutes and want a quiet machine): each reader gets
output in the exact shape its benchmark writes — JSON documents as the benchmarks build
them, and the report lines demo_bench/report_bench print — and the verdicts, scales and
the closing table are checked, including a benchmark that could not run.
"""

from __future__ import annotations

from bench import all as bench_all


def test_verdicts_follow_the_direction_of_each_target() -> None:
    rest = {
        "results": [
            {
                "backend": "sqlite",
                "trialfhir": {"read_median_ms": 1.4, "read_p95_ms": 3.5, "creates_per_s": 499.0},
                "baseline": {"read_median_ms": 0.3, "read_p95_ms": 0.5, "creates_per_s": 3000.0},
            }
        ]
    }
    rows = {r.metric: r for r in bench_all.rows_rest(rest, False, "")}
    assert rows["REST read median"].verdict == "PASS"  # 1.4 ≤ 1.5
    assert rows["REST read p95"].verdict == "FAIL"  # 3.5 > 3.0
    assert rows["REST creates/s (1 client)"].verdict == "FAIL"  # 499 < 500
    assert rows["REST creates/s (1 client)"].baseline == 3000.0


def test_small_runs_are_labelled_small() -> None:
    export = {
        "resources": 20_000,
        "runs": [
            {
                "backend": "postgresql",
                "baseline": {"resources_per_s": 100_000},
                "system": {"resources_per_s": 90_000},
                "group": {"resources_per_s": 15_000},
                "server_peak_rss_mb": 150.0,
            }
        ],
    }
    rows = bench_all.rows_export(export, False, "")
    assert {r.scale for r in rows} == {"small"}
    assert [r.verdict for r in rows] == ["PASS", "FAIL", "PASS"]
    derivation = {
        "args": {"subjects": 10_000},
        "results": [{"backend": "sqlite", "big": {"derive_wall": 12.0, "baseline_wall": 2.0}, "demo": {"unchanged_ms_median": 50.0, "first_ms": 400.0}}],
    }
    derive, demo = bench_all.rows_derivation(derivation, True, "")
    assert (derive.scale, derive.verdict, demo.verdict) == ("full", "FAIL", "PASS")


def test_printed_report_lines_are_read() -> None:
    # the lines exactly as bench/demo_bench.py and bench/report_bench.py print them
    demo_out = (
        "machine: 2 cpus, load average 0.50\n"
        "sqlite     demo load median 0.412 s over 3 runs (target <= 2 s: PASS); raw insert of the same 131 resources 0.011 s; ratio 37.5x\n"
        "postgresql demo load median 2.412 s over 3 runs (target <= 2 s: FAIL); raw insert of the same 131 resources 0.031 s; ratio 77.8x\n"
    )
    rows = bench_all.rows_demo(None, False, demo_out)
    assert [(r.backend, r.value, r.baseline, r.verdict) for r in rows] == [("sqlite", 0.412, 0.011, "PASS"), ("postgresql", 2.412, 0.031, "FAIL")]
    report_out = (
        "sqlite     report page median 212.5 ms (max 250.1 ms, cold first 900.0 ms) over 5 runs (target <= 1 s: PASS); "
        "same-run $endpoints median 180.2 ms (max 190.0 ms); ratio 1.18x\n"
    )
    (row,) = bench_all.rows_report(None, False, report_out)
    assert (row.value, row.baseline, row.target, row.verdict) == (212.5, 180.2, 1000.0, "PASS")


def test_table_lists_every_row_and_benchmarks_that_did_not_run() -> None:
    rows = bench_all.rows_demo(None, False, "sqlite     demo load median 0.412 s over 3 runs (target <= 2 s: PASS); raw insert of the same 131 resources 0.011 s; ratio 37.5x\n")
    text = bench_all.table(rows, {"search": "exit 1 (see bench/results/all/search.log)"})
    lines = text.splitlines()
    assert lines[0].startswith("| benchmark") and len(lines) == 2 + 2
    assert "| demo " in lines[2] and "0.41 s" in lines[2] and "0.01 s (raw INSERT" in lines[2] and "PASS" in lines[2]
    assert "| search " in lines[3] and "ERROR: exit 1" in lines[3]
