"""Faults to inject into queue operations: plain, picklable data, and their text form.

Build faults with the constructors (:func:`drop`, :func:`delay`, :func:`kill`, ...,
:func:`chain`) or parse spec text with :func:`parse`::

    from mpfault import faults

    plan = [faults.drop(nth=3), faults.delay(0.01, op="get", prob=0.2)]
    assert faults.parse("put#3:drop; get:20%delay(10ms)") == plan
    assert faults.format_plan(plan) == "put#3:drop; get:20%delay(10ms)"

See :mod:`mpfault._runtime.grammar` for the spec grammar.
"""

from mpfault._runtime import faults as _faults
from mpfault._runtime.faults import *  # noqa: F403  # the names of __all__

__all__ = _faults.__all__
