"""Faults to inject into queue operations: plain, picklable data, and their text form.

Build faults with the constructors (:func:`drop`, :func:`delay`, :func:`kill`, ...,
:func:`chain`) or parse spec text with :func:`parse`::

    from mpfault import faults

    plan = [faults.drop(nth=3), faults.delay(0.01, op="get", prob=0.2)]
    assert faults.parse("put#3:drop; get:20%delay(10ms)") == plan
    assert faults.format_plan(plan) == "put#3:drop; get:20%delay(10ms)"

See :mod:`mpfault._runtime.faults` for the spec grammar.
"""

from mpfault._runtime.faults import ACTIONS as ACTIONS
from mpfault._runtime.faults import ANY as ANY
from mpfault._runtime.faults import GET_OPS as GET_OPS
from mpfault._runtime.faults import OPS as OPS
from mpfault._runtime.faults import PUT_OPS as PUT_OPS
from mpfault._runtime.faults import Fault as Fault
from mpfault._runtime.faults import FaultSpecError as FaultSpecError
from mpfault._runtime.faults import bandwidth as bandwidth
from mpfault._runtime.faults import chain as chain
from mpfault._runtime.faults import delay as delay
from mpfault._runtime.faults import drop as drop
from mpfault._runtime.faults import duplicate as duplicate
from mpfault._runtime.faults import empty as empty
from mpfault._runtime.faults import exit as exit
from mpfault._runtime.faults import format_plan as format_plan
from mpfault._runtime.faults import full as full
from mpfault._runtime.faults import gate as gate
from mpfault._runtime.faults import kill as kill
from mpfault._runtime.faults import latency as latency
from mpfault._runtime.faults import off as off
from mpfault._runtime.faults import parse as parse
from mpfault._runtime.faults import partition as partition
from mpfault._runtime.faults import pause as pause
from mpfault._runtime.faults import raise_ as raise_
from mpfault._runtime.faults import reset as reset
from mpfault._runtime.faults import return_ as return_

__all__ = [
    "ACTIONS",
    "ANY",
    "GET_OPS",
    "OPS",
    "PUT_OPS",
    "Fault",
    "FaultSpecError",
    "bandwidth",
    "chain",
    "delay",
    "drop",
    "duplicate",
    "empty",
    "exit",
    "format_plan",
    "full",
    "gate",
    "kill",
    "latency",
    "off",
    "parse",
    "partition",
    "pause",
    "raise_",
    "reset",
    "return_",
]
