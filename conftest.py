"""Test configuration of pytest-mpfault's own suite."""

from __future__ import annotations

import glob
import os
import re

import pytest

pytest_plugins = ["pytester"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _readable(path: str) -> bool:
    """Whether ``path`` is a coverage data file ``coverage combine`` can read."""
    from coverage import CoverageData

    try:
        data = CoverageData(path, read_only=True)
        data.read()
        data.measured_files()
    except Exception:
        return False
    return True


def drop_partial_coverage_files(base: str) -> list[str]:
    """Remove the data files ``coverage combine`` cannot read that dead processes left
    (a child SIGKILLed while coverage saved its data: an empty or half-written file);
    the others are left to ``combine``.  Returns the paths removed."""
    removed = []
    for path in glob.glob(glob.escape(base) + ".*"):
        m = re.search(r"\.pid(\d+)\.", os.path.basename(path))
        if m is None or _pid_alive(int(m.group(1))) or _readable(path):
            continue
        try:
            os.remove(path)
        except OSError:
            continue
        removed.append(path)
    return removed


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Under ``coverage run`` (the README's test command), leave ``coverage combine``
    nothing it would warn about: children the suite kills on purpose cannot finish
    writing their coverage data."""
    if hasattr(config, "workerinput"):
        return
    try:
        import coverage
    except ImportError:  # pragma: no cover
        return
    cov = coverage.Coverage.current()
    if cov is None:
        return
    base = os.path.abspath(str(cov.config.data_file))
    drop_partial_coverage_files(base)
