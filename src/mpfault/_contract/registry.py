"""The registry of checks: the check modules register with :func:`check`.

:func:`all_checks` imports the check modules (once) and returns the checks in row
order; :func:`get_check` finds one by id.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .model import Check, CheckFunc

__all__ = ["all_checks", "check", "get_check", "unobservable"]

_CHECKS: list[Check] = []
_MODULES = (
    "blocking",
    "state",
    "delivery",
    "lifecycle",
    "pickling",
    "death",
    "joinable",
    "simple",
    "manager",
    "methods",
)
_loaded = False


def check(**data: Any) -> Callable[[CheckFunc], CheckFunc]:
    """Register the decorated function as a check with *data* (see :class:`Check`)."""

    def register(fn: CheckFunc) -> CheckFunc:
        _CHECKS.append(Check(func=fn, **data))
        return fn

    return register


def unobservable(reason: str, **data: Any) -> None:
    """Register a row that cannot be observed portably, with the *reason*."""
    _CHECKS.append(Check(func=None, unobservable=reason, **data))


def all_checks() -> tuple[Check, ...]:
    """Every registered check, in row order (stable within a row)."""
    global _loaded
    if not _loaded:
        for name in _MODULES:
            importlib.import_module(f"{__package__}.checks_{name}")
        _loaded = True
        ids = [c.id for c in _CHECKS]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:  # pragma: no cover - a programming error
            raise RuntimeError(f"duplicate check ids: {sorted(dupes)}")
    order = {id(c): n for n, c in enumerate(_CHECKS)}
    return tuple(sorted(_CHECKS, key=lambda c: (c.row, order[id(c)])))


def get_check(check_id: str) -> Check:
    """The check whose id is *check_id*; ``KeyError`` if there is none."""
    for c in all_checks():
        if c.id == check_id:
            return c
    raise KeyError(check_id)
