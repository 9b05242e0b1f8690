"""Benchmarks (not tests): they print tables and write results under bench/results/."""
