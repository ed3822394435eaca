"""Fault plans: which queue operations misbehave, how, and their text form.

A fault is plain data: a frozen, picklable :class:`Fault` that says *what* happens
(the action: ``delay``, ``drop``, ``kill`` ...) and *when* (the selectors: which
queue operation, in which process, on which call, how often, for which item).
Faults are built with the constructors of this module (:func:`drop`,
:func:`delay` ...) or parsed from text with :func:`parse`; ``str(fault)`` gives the
canonical text, and ``parse(str(fault)) == [fault]`` holds for every fault.

The spec grammar, with examples, is in :mod:`.grammar`.

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
