"""SIGTERM (what a CI cancel sends) ends a pytest run as SIGINT does: with cleanup.

Python's default for SIGTERM kills the process on the spot, so no fixture teardown
runs and every open harness leaves its children and its run directory behind.  While
pytest runs, SIGTERM raises :class:`KeyboardInterrupt` in the main thread instead:
pytest stops, tears every fixture down (each harness kills its children and removes
its run directory) and exits as interrupted.  Only a handler that is still Python's
default is replaced (another plugin's, or the user's, is left alone), and the previous
one is restored at the end of the run.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import pytest

__all__ = ["catch_sigterm", "release_sigterm"]

_PREVIOUS = pytest.StashKey[Any]()


class SigtermInterrupt(KeyboardInterrupt):
    """The run received SIGTERM (raised in the main thread, as SIGINT's would be)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # once: a second SIGTERM during the cleanup must not interrupt it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SigtermInterrupt("SIGTERM: the run was stopped (mpfault cleaned up)")


def _reset_in_child() -> None:
    # a forked child (a harness child, or any process the tests fork) gets Python's
    # default back: SIGTERM ends it, as its code expects
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover - forked from another thread
        pass


_registered = False


def catch_sigterm(config: pytest.Config) -> None:
    """Make SIGTERM interrupt the run like SIGINT (if its handler is the default)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        config.stash[_PREVIOUS] = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        return
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=_reset_in_child)
        _registered = True


def release_sigterm(config: pytest.Config) -> None:
    """Restore the handler :func:`catch_sigterm` replaced."""
    previous = config.stash.get(_PREVIOUS, None)
    if previous is None or threading.current_thread() is not threading.main_thread():
        return
    del config.stash[_PREVIOUS]
    if signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_IGN):
        signal.signal(signal.SIGTERM, previous)
