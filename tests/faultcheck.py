"""Helpers of the fault tests: the round trip every fault must survive."""

from __future__ import annotations

import pickle
import signal

from mpfault._runtime.grammar import parse
from mpfault._runtime.model import Fault

SIGKILL = int(signal.SIGKILL)
SIGTERM = int(signal.SIGTERM)


def roundtrip(fault: Fault) -> None:
    """``str(fault)`` parses back to the fault, and so does its pickle."""
    text = str(fault)
    assert parse(text) == [fault], text
    assert str(parse(text)[0]) == text
    assert pickle.loads(pickle.dumps(fault)) == fault
