"""Benchmarks of freshen on real local services; each module runs as `python -m bench.<name>`.

They are not part of the test suite (tests/integration/test_bench_smoke.py runs each `--quick`).
Results and the commands that produce them are in BENCHMARKS.md.
"""
