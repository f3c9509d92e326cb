"""Benchmarks: each prints its figures and the ratio to a raw baseline run beside it."""
