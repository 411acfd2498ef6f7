"""Benchmarks: ratios against baselines run in the same process (never asserted in tests)."""
