"""pytest-mpfault: test code built on multiprocessing queues with real processes,
injected faults, and checks of the queues' documented behaviour.

The ``mpfault`` pytest fixture returns a :class:`Harness`; the same harness works
without pytest as a context manager.  Faults live in :mod:`mpfault.faults`.

Names are imported lazily (PEP 562): a child process that only needs the runtime
(``mpfault._runtime``) does not pay for the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "QUEUE_KINDS": "._harness",
    "Arrival": "._coordinator",
    "Child": "._child",
    "ChildError": "._runtime.errors",
    "Event": "._runtime.reader",
    "Fault": "._runtime.model",
    "FaultQueue": "._runtime.fqueue",
    "FaultSpecError": "._runtime.errors",
    "Gate": "._coordinator",
    "Hang": "._runtime.errors",
    "Harness": "._harness",
    "History": "._history",
    "HistoryError": "._runtime.errors",
    "Item": "._history",
    "Mark": "._runtime.reader",
    "MpfaultError": "._runtime.errors",
    "SpawnError": "._runtime.errors",
    "TimingError": "._runtime.errors",
    "default_start_methods": "._harness",
    "expect_immediate": "._timing",
    "expect_timeout": "._timing",
}

__all__ = [*sorted(_EXPORTS), "__version__", "faults"]


def __getattr__(name: str) -> Any:
    if name == "faults":
        return importlib.import_module(".faults", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mpfault' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    if isinstance(value, type):
        value.__module__ = __name__  # public classes show (and pickle by) their public name
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import faults as faults
    from ._child import Child as Child
    from ._coordinator import Arrival as Arrival
    from ._coordinator import Gate as Gate
    from ._harness import QUEUE_KINDS as QUEUE_KINDS
    from ._harness import Harness as Harness
    from ._harness import default_start_methods as default_start_methods
    from ._history import History as History
    from ._history import Item as Item
    from ._runtime.errors import ChildError as ChildError
    from ._runtime.errors import FaultSpecError as FaultSpecError
    from ._runtime.errors import Hang as Hang
    from ._runtime.errors import HistoryError as HistoryError
    from ._runtime.errors import MpfaultError as MpfaultError
    from ._runtime.errors import SpawnError as SpawnError
    from ._runtime.errors import TimingError as TimingError
    from ._runtime.fqueue import FaultQueue as FaultQueue
    from ._runtime.model import Fault as Fault
    from ._runtime.reader import Event as Event
    from ._runtime.reader import Mark as Mark
    from ._timing import expect_immediate as expect_immediate
    from ._timing import expect_timeout as expect_timeout
