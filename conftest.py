"""Test configuration of pytest-mpfault's own suite."""

pytest_plugins = ["pytester"]
