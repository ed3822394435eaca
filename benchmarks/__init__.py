"""Benchmarks of pytest-mpfault against the raw standard library (see README.md)."""
