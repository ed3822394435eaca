"""Fault plans: which queue operations misbehave, how, and their text form.

A fault is plain data: a frozen, picklable :class:`Fault` that says *what* happens
(the action: ``delay``, ``drop``, ``kill`` ...) and *when* (the selectors: which
queue operation, in which process, on which call, how often, for which item).
Faults are built with the constructors of this module (:func:`drop`,
:func:`delay` ...) or parsed from text with :func:`parse`; ``str(fault)`` gives the
canonical text, and ``parse(str(fault)) == [fault]`` holds for every fault.

The text grammar is modelled on FreeBSD's fail(9) and the fail-rs crate::

    specs  := spec ( ';' | newline ) spec ...    blank entries and '#' comment lines are ignored
    spec   := [ target ':' ] terms
    target := [op] ['@' who] ['#' nth] ['==' item]
    nth    := part ( ',' part )*                 part := N | N '..' M | N '..'   (1-based)
    terms  := term ( '->' term )*
    term   := [pct '%'] [cnt '*'] action ['(' args ')']

Examples::

    put#3:drop                    drop the 3rd item put
    put==None:drop                drop the sentinel
    get:20%delay(1ms..20ms)       one get in five sleeps 1 to 20 ms first
    put@producer-*#5:kill(after)  producers SIGKILL themselves right after their 5th put
    put:2*delay(10ms)->full       the first two puts are slow, then the queue is "full"
    empty:return(False)           empty() lies
    put_nowait#2..4:raise(ValueError:boom)
    *@consumer-*:pause(200ms)     consumers are stopped for 200 ms on every operation
    put:gate(g1,after)            after a put, the process waits until the test opens gate g1

A comment line starts with ``#`` not followed by a digit (``#3:drop`` is a spec:
the third call of the fault's default operations).  Durations are seconds with an
optional unit (``ns``, ``us``, ``ms``, ``s``); ``delay(a..b)`` sleeps uniformly
between ``a`` and ``b``.  Items and ``return`` values are Python literals; a ``who``
pattern or an exception message that is not a plain word may be written as a Python
string literal (``put@'my worker':drop``, ``raise(ValueError:'a (b)')``).

This module gathers the public names; they are defined by role: the model
(:mod:`.model`), the actions (:mod:`.actions`), the grammar (:mod:`.grammar`) and the
constructors (:mod:`.builders`).  Standard library only.
"""

from __future__ import annotations

from .actions import ACTIONS as ACTIONS
from .actions import GET_OPS as GET_OPS
from .actions import OPS as OPS
from .actions import PUT_OPS as PUT_OPS
from .builders import chain as chain
from .builders import delay as delay
from .builders import drop as drop
from .builders import duplicate as duplicate
from .builders import empty as empty
from .builders import exit as exit
from .builders import full as full
from .builders import gate as gate
from .builders import kill as kill
from .builders import off as off
from .builders import pause as pause
from .builders import raise_ as raise_
from .builders import return_ as return_
from .errors import FaultSpecError as FaultSpecError
from .grammar import format_plan as format_plan
from .grammar import parse as parse
from .model import ANY as ANY
from .model import Fault as Fault
from .model import NthSelector as NthSelector

__all__ = [
    "ACTIONS",
    "ANY",
    "GET_OPS",
    "OPS",
    "PUT_OPS",
    "Fault",
    "FaultSpecError",
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
    "off",
    "parse",
    "pause",
    "raise_",
    "return_",
]
