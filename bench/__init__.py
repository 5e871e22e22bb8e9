"""Benchmarks for trialfhir (run from the repo root, e.g. ``python -m bench.rest_bench``)."""
