"""The Python constructors of faults: :func:`drop`, :func:`delay`, ..., :func:`chain`.

Each builds a :class:`~.model.Fault` of its action (:mod:`.actions`), which checks and
normalises it.  Standard library only.  The public names are gathered by
:mod:`.faults`.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from .actions import exception_name
from .errors import FaultSpecError
from .model import ANY, Fault, NthSelector, make_tail


def _build(
    action: str,
    args: tuple[Any, ...],
    op: str | None,
    who: str | None,
    nth: NthSelector,
    times: int | None,
    prob: float | None,
    item: object,
) -> Fault:
    return Fault(
        action,
        args,
        op=op,
        who=who,
        nth=nth,  # type: ignore[arg-type]  # normalised by Fault.__post_init__
        times=times,
        prob=prob,
        item=item,
    )


def delay(
    seconds: float,
    jitter: float = 0.0,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Sleep before the operation, uniformly between ``seconds`` and ``seconds + jitter``.

    Applies to every operation (spec: ``delay(10ms)``, ``delay(1ms..20ms)``).

    The selector keywords, common to every constructor: ``op`` (an operation, ``put``
    or ``get`` for both their blocking and ``_nowait`` forms, ``*``, or None for the
    action's default operations), ``who`` (fnmatch pattern on the process name),
    ``nth`` (1-based call index, ``range``, or iterable of indexes and ``(lo, hi)``
    intervals), ``times`` (fire at most this often), ``prob`` (fire with this
    probability, in (0, 1]) and ``item`` (fire only on puts of an item equal to this
    literal; :data:`ANY` by default).
    """
    return _build("delay", (seconds, jitter), op, who, nth, times, prob, item)


def full(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make a put raise :class:`queue.Full`, as if the queue were full (spec: ``full``).

    Applies to put operations only.  Selector keywords: see :func:`delay`.
    """
    return _build("full", (), op, who, nth, times, prob, item)


def empty(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make a get raise :class:`queue.Empty`, as if the queue were empty (spec: ``empty``).

    Applies to get operations only.  Selector keywords: see :func:`delay`.
    """
    return _build("empty", (), op, who, nth, times, prob, item)


def drop(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Lose the item (spec: ``drop``).

    On a put, the put returns normally but nothing is enqueued; on a get (``op="get"``),
    the item got is discarded.  Applies to puts (the default) and gets.  Selector
    keywords: see :func:`delay`.
    """
    return _build("drop", (), op, who, nth, times, prob, item)


def duplicate(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Put the item twice (spec: ``duplicate``).

    Applies to put operations only.  Selector keywords: see :func:`delay`.
    """
    return _build("duplicate", (), op, who, nth, times, prob, item)


def kill(
    when: str = "before",
    signal: int = _signal.SIGKILL,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the calling process kill itself with ``signal``, right before or after the
    op, or ``during`` it: blocked inside the operation, holding what it holds there.

    ``during`` a get of a ``multiprocessing`` Queue or SimpleQueue the process dies
    holding the queue's read lock (as a worker idle in ``get()``), during a put holding
    the write lock its feeder thread takes to send (the item taken in and never sent),
    during ``task_done()`` holding the JoinableQueue's condition lock, during a
    connection's ``send`` half-way through writing the message; such a lock is never
    released, so every other process that needs it blocks for good.  A lock that
    another process holds is waited for first, as the operation would; an operation
    with nothing to hold (or a queue whose locks mpfault does not know) dies on entry.
    The fault's mark in the history says which it was.

    Spec: ``kill``, ``kill(after)``, ``kill(after,SIGTERM)``, ``kill(during)``.  Applies
    to every operation.  Selector keywords: see :func:`delay`.
    """
    return _build("kill", (when, signal), op, who, nth, times, prob, item)


def exit(
    code: int = 1,
    when: str = "before",
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the calling process end with :func:`os._exit` ``(code)``, before or after the op.

    Spec: ``exit``, ``exit(3)``, ``exit(3,after)``.  ``code`` is in 0..255.  Applies to
    every operation.  Selector keywords: see :func:`delay`.
    """
    return _build("exit", (code, when), op, who, nth, times, prob, item)


def pause(
    seconds: float,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Stop the whole calling process (SIGSTOP) for ``seconds``, then resume it.

    Spec: ``pause(200ms)``.  Applies to every operation.  Selector keywords: see
    :func:`delay`.
    """
    return _build("pause", (seconds,), op, who, nth, times, prob, item)


def raise_(
    exc: type[BaseException] | BaseException,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the operation raise ``exc`` (an exception class, or an instance for its message).

    The class is stored by module and qualified name, so it must be importable as such
    (not defined inside a function); an instance contributes its message (its single
    string argument, else ``str(exc)``).  Spec: ``raise(ValueError)``,
    ``raise(ValueError:boom)``, ``raise(queue.Full)``, ``raise(mypkg.errors.Oops:msg)``.
    Applies to every operation.  Selector keywords: see :func:`delay`.
    """
    if isinstance(exc, BaseException):
        cls: type[BaseException] = type(exc)
        if not exc.args:
            message = ""
        elif len(exc.args) == 1 and isinstance(exc.args[0], str):
            message = exc.args[0]
        else:
            message = str(exc)
    elif isinstance(exc, type) and issubclass(exc, BaseException):
        cls, message = exc, ""
    else:
        raise FaultSpecError(f"raise: expected an exception class or instance, got {exc!r}")
    module, qualname = exception_name(cls)
    return _build("raise", (module, qualname, message), op, who, nth, times, prob, item)


def return_(
    value: object,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the operation return ``value`` without calling the queue: make it lie.

    Applies to ``qsize`` (an int), ``empty`` and ``full`` (a bool), and needs that op
    (spec: ``empty:return(False)``, ``qsize:return(0)``).  Selector keywords: see
    :func:`delay`.
    """
    return _build("return", (value,), op, who, nth, times, prob, item)


def off(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Do nothing (spec: ``off``); useful in chains: ``put:2*off->drop``.

    Applies to every operation.  Selector keywords: see :func:`delay`.
    """
    return _build("off", (), op, who, nth, times, prob, item)


def gate(
    name: str,
    when: str = "before",
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Stop the calling process, before or after the op, until the test opens gate ``name``.

    ``name`` is letters, digits, ``_``, ``.`` and ``-``.  Spec: ``gate(g1)``,
    ``put:gate(g1,after)``.  Applies to every operation.  Selector keywords: see
    :func:`delay`.
    """
    return _build("gate", (name, when), op, who, nth, times, prob, item)


def chain(first: Fault, *rest: Fault) -> Fault:
    """Chain faults (spec: ``->``): each term applies once the previous one is exhausted.

    Every term but the last needs ``times`` (``chain(off(times=2), drop())`` is
    ``2*off->drop``: the first two puts pass, the following ones are dropped).  The
    selectors ``op``, ``who``, ``nth`` and ``item`` belong to the first term; a later
    term may only repeat the first term's ``op`` (``return_`` needs one).  Every action
    of the chain must apply to the chain's operations.  Chains given as terms are
    flattened.
    """
    terms = [term for fault in (first, *rest) for term in fault.terms()]
    head = terms[0]
    for term in terms[1:]:
        if term.op not in (None, head.op) or term.who is not None or term.nth is not None:
            raise FaultSpecError(
                f"chain: only the first term may have op, who or nth selectors, not {str(term)!r}"
            )
        if term.item is not ANY:
            raise FaultSpecError(
                f"chain: only the first term may have an item selector, not {str(term)!r}"
            )
    tail: Fault | None = None
    for term in reversed(terms[1:]):
        tail = make_tail(term.action, term.args, term.times, term.prob, tail)
    return Fault(
        head.action,
        head.args,
        op=head.op,
        who=head.who,
        nth=head.nth,
        times=head.times,
        prob=head.prob,
        item=head.item,
        next=tail,
    )


# -- network faults (op ``net``: a served queue's proxy applies them; see netfaults.py) ------


def latency(
    seconds: float, jitter: float = 0.0, *, who: str | None = None, nth: NthSelector = None
) -> Fault:
    """Hold every message of the client's connections ``seconds`` (plus a seeded jitter up to
    ``jitter``), both ways (spec: ``net@who:latency(20ms)``, ``latency(10ms..50ms)``).

    ``who``: the client's (program's) name, a glob; ``nth``: from which of its queue calls."""
    return _build("latency", (seconds, jitter), "net", who, nth, None, None, ANY)


def bandwidth(bytes_per_second: int, *, who: str | None = None, nth: NthSelector = None) -> Fault:
    """Let at most ``bytes_per_second`` through each way (spec: ``net:bandwidth(64KB)``)."""
    return _build("bandwidth", (bytes_per_second,), "net", who, nth, None, None, ANY)


def reset(after_bytes: int = 0, *, who: str | None = None, nth: NthSelector = None) -> Fault:
    """Reset the client's connection (TCP RST), at once or after ``after_bytes`` more bytes
    (spec: ``net@consumer#3:reset``, ``reset(1KB)``)."""
    return _build("reset", (after_bytes,), "net", who, nth, None, None, ANY)


def partition(
    seconds: float | None = None, *, who: str | None = None, nth: NthSelector = None
) -> Fault:
    """Let nothing through either way for ``seconds`` (None: until ``Served.heal``), then
    what was held (spec: ``net@producer#4:partition(2s)``, ``partition``)."""
    return _build("partition", (seconds,), "net", who, nth, None, None, ANY)
