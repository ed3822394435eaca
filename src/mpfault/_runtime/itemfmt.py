"""How a queue's items are written in the history: the ``key`` and ``show`` callables.

By default an item put or got is recorded by :func:`.events.short_repr` (what reports
show) and :func:`.events.item_key` (the identity that matches a put with its get).  A
queue may have its own: ``key(item) -> str`` and ``show(item) -> str`` (given to
``Harness.queue()``/``wrap()``, or to instrumentation by a name glob).  Such a queue
records its item operations through :func:`recorded` (Python) rather than the C fast
path, and its faulted operations format their items with its :class:`Formats`.

A formatter runs inside the code under test: one that raises or returns something
other than a ``str`` never breaks the operation.  The item gets the default formatting,
and the first such failure of each formatter of a queue, in each process, is recorded
as a ``note`` mark (``show() raised ValueError for an item of type LogRecord; default
repr used``), which the report shows.

Standard library only (runs in child processes).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import MpfaultError
from .events import item_key, short_repr
from .layout import OUT_OK, OUT_RAISED

__all__ = [
    "FORMATTED_OPS",
    "Formats",
    "Rules",
    "check_formatter",
    "check_rules",
    "default_fields",
    "pick",
    "recorded",
]

#: the operations whose item (put, sent, got or received) the formatters format
FORMATTED_OPS = frozenset(
    {"put", "put_nowait", "get", "get_nowait", "send", "recv", "send_bytes", "recv_bytes"}
)
#: the longest text kept of what ``show`` returns (the rest becomes ``...``)
SHOW_MAX = 200

#: (glob, callable) pairs, the first whose glob matches a queue's name wins
Rules = tuple[tuple[str, Callable[[Any], str]], ...]


def default_fields(obj: object, rec: Any = None) -> tuple[str, str]:
    """The default (shown repr, key) of an item."""
    return short_repr(obj), item_key(obj)


class Formats:
    """The ``key`` and ``show`` of one queue (either may be None: the default), called
    as ``formats(item, recorder) -> (shown, key)``; falls back to the default
    formatting where a callable fails, noting it once per queue and callable."""

    __slots__ = ("_failed", "key", "queue", "show")

    def __init__(
        self,
        key: Callable[[Any], str] | None,
        show: Callable[[Any], str] | None,
        queue: str,
    ) -> None:
        self.key = key
        self.show = show
        self.queue = queue
        self._failed: set[str] = set()

    def __repr__(self) -> str:
        return f"<Formats of {self.queue!r} key={self.key!r} show={self.show!r}>"

    def __call__(self, obj: object, rec: Any) -> tuple[str, str]:
        shown = None
        if self.show is not None:
            shown = self._run(self.show, "show", "repr", obj, rec)
            if shown is not None and len(shown) > SHOW_MAX:
                shown = shown[: SHOW_MAX - 3] + "..."
        key = None
        if self.key is not None:
            key = self._run(self.key, "key", "key", obj, rec)
        return (
            short_repr(obj) if shown is None else shown,
            item_key(obj) if key is None else key,
        )

    def _run(
        self, fn: Callable[[Any], Any], role: str, default: str, obj: object, rec: Any
    ) -> str | None:
        try:
            value = fn(obj)
        except Exception as e:
            self._note(rec, role, f"raised {type(e).__name__}", obj, default)
            return None
        if not isinstance(value, str):
            self._note(rec, role, f"returned {type(value).__name__}, not str,", obj, default)
            return None
        return str(value)

    def _note(self, rec: Any, role: str, what: str, obj: object, default: str) -> None:
        if role in self._failed:
            return
        self._failed.add(role)
        detail = f"{role}() {what} for an item of type {type(obj).__name__}; default {default} used"
        try:
            rec.mark("note", self.queue, detail)
        except Exception:  # the note must not break the operation either
            pass


def recorded(
    op: str,
    code: int,
    raw: Callable[..., Any],
    name: str,
    has_item: bool,
    state: Callable[[], Any],
    fmt: Formats,
) -> Callable[..., Any]:
    """Operation ``op`` (code ``code``; ``raw``: the queue's own) of queue ``name``,
    recording its BEGIN and END with its item formatted by ``fmt``: the Python path of
    a queue with formatters, for an operation no fault targets.  ``has_item``: the
    operation takes an item (a put, its first argument), else it returns one;
    ``state`` gives the process's runtime state (a forked child gets its own)."""
    if has_item:

        def put(*args: Any, **kwargs: Any) -> Any:
            rec = state().recorder
            item = args[0] if args else kwargs.get("obj")
            seq = rec.begin(name, code, *fmt(item, rec))
            try:
                res = raw(*args, **kwargs)
            except BaseException as e:
                rec.end(seq, name, code, OUT_RAISED, -1, "", type(e).__name__)
                raise
            rec.end(seq, name, code, OUT_OK)
            return res

        return put

    def get(*args: Any, **kwargs: Any) -> Any:
        rec = state().recorder
        seq = rec.begin(name, code)
        try:
            res = raw(*args, **kwargs)
        except BaseException as e:
            rec.end(seq, name, code, OUT_RAISED, -1, "", type(e).__name__)
            raise
        rec.end(seq, name, code, OUT_OK, -1, *fmt(res, rec))
        return res

    return get


# -- checking what a user gives -----------------------------------------------------------


def check_formatter(fn: object, where: str) -> Callable[[Any], str]:
    """``fn`` if it is a callable that can reach a child process (it pickles), else an
    :class:`MpfaultError` saying so: ``where`` names the argument and the queue."""
    __tracebackhide__ = True
    if not callable(fn):
        raise MpfaultError(f"{where}: {fn!r} is not callable (expected a function item -> str)")
    qual = getattr(fn, "__qualname__", "") or ""
    how = "cannot reach the child processes (a key/show function is pickled by reference)"
    if "<lambda>" in qual:
        raise MpfaultError(f"{where}: a lambda {how}; define it as a function at module level")
    if "<locals>" in qual:
        raise MpfaultError(
            f"{where}: {qual!r} is defined inside a function, so it {how}; move it to "
            "module level (in the test module or a helper module)"
        )
    import pickle

    try:
        pickle.dumps(fn)
    except Exception as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise MpfaultError(
            f"{where}: {fn!r} cannot be pickled, so it cannot reach the child processes: {msg}"
        ) from None
    return fn


def check_rules(value: object, where: str) -> Rules:
    """The rules of a ``key=``/``show=`` given for many queues: a callable (every
    queue: the glob ``*``) or a dict ``{name glob: callable}`` (in its order); None or
    an empty dict: none.  ``where`` names the argument (an error names it)."""
    __tracebackhide__ = True
    if value is None:
        return ()
    if isinstance(value, Mapping):
        out = []
        for glob, fn in value.items():
            if not isinstance(glob, str):
                raise MpfaultError(
                    f"{where}: the key {glob!r} is not a str (expected a glob on queue names)"
                )
            out.append((glob, check_formatter(fn, f"{where} for {glob!r}")))
        return tuple(out)
    if isinstance(value, (str, bytes)) or not callable(value):
        raise MpfaultError(
            f"{where}: {value!r} is neither a callable nor a dict {{name glob: callable}}"
        )
    return (("*", check_formatter(value, where)),)


def pick(rules: Iterable[tuple[str, Callable[[Any], str]]], name: str) -> Any:
    """The callable of the first rule whose glob matches queue ``name``, or None."""
    for glob, fn in rules:
        if fnmatch.fnmatchcase(name, glob):
            return fn
    return None
