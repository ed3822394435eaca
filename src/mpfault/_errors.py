"""The package's errors (defined in :mod:`mpfault._runtime.errors`, re-exported here)."""

from __future__ import annotations

from ._runtime.errors import (
    LOST_FORKSERVER_STATUS,
    ChildError,
    FaultSpecError,
    Hang,
    HistoryError,
    MpfaultError,
    SpawnError,
    TimingError,
)

__all__ = [
    "LOST_FORKSERVER_STATUS",
    "ChildError",
    "FaultSpecError",
    "Hang",
    "HistoryError",
    "MpfaultError",
    "SpawnError",
    "TimingError",
]
