"""The documented-behaviour contract of multiprocessing queues.

One check per observable row of ``queue-behaviours.md``: each carries its row number,
its documentation quote or code location, and the queue kinds, Python versions,
platforms and start methods it applies to.  Checks of documented behaviour fail the
contract when violated; checks of implementation details are reported, never failed.

Run it with ``python -m mpfault check`` or, inside pytest, ``pytest --mpfault-contract``;
any queue can be checked (``--queue``), described by a :class:`QueueProvider`.
Programmatic use::

    from mpfault._contract import run_contract, render_table
    report = run_contract(methods=["spawn"])
    print(render_table(report))

This package imports its submodules lazily: child processes import
``mpfault._contract._children`` and must not pay for the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Check, Outcome, Report, Result
    from .provider import ProviderError, QueueProvider, load_provider
    from .registry import all_checks, get_check
    from .render import render_table, report_from_json, report_to_json
    from .runner import ContractRunner, FactoryError, load_factory, plan, preflight, run_contract

__all__ = [
    "Check",
    "ContractRunner",
    "FactoryError",
    "Outcome",
    "ProviderError",
    "QueueProvider",
    "Report",
    "Result",
    "all_checks",
    "get_check",
    "load_factory",
    "load_provider",
    "plan",
    "preflight",
    "render_table",
    "report_from_json",
    "report_to_json",
    "run_contract",
]

_WHERE = {
    "Check": "model",
    "Outcome": "model",
    "Report": "model",
    "Result": "model",
    "ProviderError": "provider",
    "QueueProvider": "provider",
    "load_provider": "provider",
    "preflight": "runner",
    "all_checks": "registry",
    "get_check": "registry",
    "render_table": "render",
    "report_from_json": "render",
    "report_to_json": "render",
    "ContractRunner": "runner",
    "FactoryError": "runner",
    "load_factory": "runner",
    "plan": "runner",
    "run_contract": "runner",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (for ``dir()`` and completion)."""
    return sorted(__all__)
