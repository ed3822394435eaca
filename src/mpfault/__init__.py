"""pytest-mpfault: test code built on multiprocessing queues with real processes,
injected faults, and checks of the queues' documented behaviour.

The ``mpfault`` pytest fixture returns a :class:`Harness`; the same harness works
without pytest as a context manager.  Faults live in :mod:`mpfault.faults`.
"""

from __future__ import annotations

from . import faults as faults
from ._errors import ChildError as ChildError
from ._errors import Hang as Hang
from ._errors import MpfaultError as MpfaultError
from ._errors import SpawnError as SpawnError
from ._harness import QUEUE_KINDS as QUEUE_KINDS
from ._harness import Arrival as Arrival
from ._harness import Child as Child
from ._harness import Gate as Gate
from ._harness import Harness as Harness
from ._harness import default_start_methods as default_start_methods
from ._history import History as History
from ._history import HistoryError as HistoryError
from ._history import Item as Item
from ._runtime.events import Event as Event
from ._runtime.events import Mark as Mark
from ._runtime.faults import Fault as Fault
from ._runtime.faults import FaultSpecError as FaultSpecError
from ._runtime.fqueue import FaultQueue as FaultQueue
from ._timing import TimingError as TimingError
from ._timing import expect_immediate as expect_immediate
from ._timing import expect_timeout as expect_timeout

__version__ = "0.1.0"

__all__ = [
    "QUEUE_KINDS",
    "Arrival",
    "Child",
    "ChildError",
    "Event",
    "Fault",
    "FaultQueue",
    "FaultSpecError",
    "Gate",
    "Hang",
    "Harness",
    "History",
    "HistoryError",
    "Item",
    "Mark",
    "MpfaultError",
    "SpawnError",
    "TimingError",
    "__version__",
    "default_start_methods",
    "expect_immediate",
    "expect_timeout",
    "faults",
]
