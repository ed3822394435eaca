"""Instrumentation: record and fault the queues, pipes and processes that code makes itself.

While a session is installed (:func:`install`), in this process and, carried by the
start of every process (fork inherits it; spawn and forkserver children install it
again while they unpickle their preparation data), in every descendant:

* every ``multiprocessing.queues.Queue``, ``JoinableQueue``, ``SimpleQueue`` and any
  subclass made while it is on gets a *shadow*: a :class:`~.fqueue.FaultQueue` over
  the queue's own (unpatched) methods, named after its class and the line that made it
  (``SimpleQueue@multiprocessing/pool.py:196``).  The classes' methods are patched
  (the base classes' at install, a subclass's own overrides when its first instance is
  made), and a patched method hands the call to the instance's shadow, which records
  it and applies the queue's fault plan as for any harness queue.  The object stays
  what it was: ``isinstance``, private attributes, pickling and iteration work as
  before.
* the two connections of such a queue belong to it: ``send``/``recv`` called on them
  directly (``Pool`` does: ``_inqueue._writer.send``, ``_outqueue._reader.recv``) are
  recorded as ``put``/``get`` on the queue; what the queue itself does with them is its
  own operation already.
* every other ``Connection`` made by ``multiprocessing.Pipe()`` is recorded by its
  ``send``, ``recv``, ``send_bytes``, ``recv_bytes`` and ``poll`` under one name for
  both ends (``Connection@app.py:12``).
* every process started (``BaseProcess.start``) is announced: in the test process a
  callback adopts it; in the new process itself a bare thread answers stack requests
  and ends the process if the test process dies (a ``pidfd`` on it).

Objects that mpfault itself makes (the harness's queues and control pipes) are left
alone.  :func:`uninstall` restores every patched attribute; a call already running,
or made later through a bound method kept from before (``pool._quick_put``), gets
the plain behaviour, and this process's event log is closed only when no recorded
call is in flight any more.

This module runs in child processes: it imports nothing outside ``_runtime``.
"""

from __future__ import annotations

import _thread
import contextlib
import fnmatch
import multiprocessing.connection as _mpc
import multiprocessing.process as _mpp
import multiprocessing.queues as _mpq
import multiprocessing.spawn as _mps
import os
import socket
import sys
import threading
import types
import weakref
import zlib
from collections.abc import Callable, Iterable
from multiprocessing.reduction import ForkingPickler
from typing import Any

from . import events as _events
from . import state as _st
from .fqueue import _QUEUE_OPS, FaultQueue

__all__ = ["Config", "active", "install", "stack_address", "uninstall"]

#: where an instrumented object keeps its shadow, and a connection its queue
_SHADOW = "_mpfault_shadow"
_OWNER = "_mpfault_owner"
_CONN_OPS = ("send", "recv", "send_bytes", "recv_bytes", "poll")
_PREP_KEY = "mpfault_instrument"
#: directory (in the run directory) where adopted processes announce themselves
ADOPTED_DIR = "adopted"
_STACK_REQ = b"stack"

_MP_DIR = os.path.dirname(_mpq.__file__)
_SKIP_FILES = frozenset(
    os.path.join(_MP_DIR, f) for f in ("queues.py", "context.py", "connection.py")
) | {__file__}
_MPFAULT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: the standard library's and site-packages' directories (``_display``), found at the
#: first use: ``sysconfig`` costs a child ~2 ms to import
_BASES: tuple[str, ...] = ()


class Config:
    """What every instrumented process needs: the run, the faults and the item
    formatters for each name.

    ``plan`` applies to every instrumented queue; ``by_name`` adds faults to the
    queues whose name matches a glob (``(glob, faults)`` pairs).  ``key`` and ``show``
    are ``(glob, callable)`` rules: an instrumented queue or pipe formats its items
    with the callable of the first rule whose glob matches its name (none: the
    default; see :mod:`.itemfmt`).  Picklable (the callables by reference).

    The rules travel pickled apart and are unpickled when first needed: a spawn or
    forkserver child unpickles its configuration with its preparation data, before
    its ``sys.path`` is the parent's, and a test module defining a formatter may not
    be importable yet then.
    """

    def __init__(
        self,
        run: _st.RunInfo,
        plan: Iterable[Any] = (),
        by_name: Iterable[tuple[str, Iterable[Any]]] = (),
        key: Iterable[tuple[str, Callable[[Any], str]]] = (),
        show: Iterable[tuple[str, Callable[[Any], str]]] = (),
        formatters: bytes = b"",
    ) -> None:
        self.run = run
        self.plan: tuple[Any, ...] = tuple(plan)
        self.by_name: tuple[tuple[str, tuple[Any, ...]], ...] = tuple(
            (glob, tuple(faults)) for glob, faults in by_name
        )
        self._key: tuple[tuple[str, Callable[[Any], str]], ...] = tuple(key)
        self._show: tuple[tuple[str, Callable[[Any], str]], ...] = tuple(show)
        #: the rules pickled, not loaded yet (b"": loaded, or none)
        self._pickled = formatters
        #: why the rules could not be loaded in this process ("": they could), and
        #: whether a note said so
        self.load_error = ""
        self.load_noted = False

    def _formatter_bytes(self) -> bytes:
        if self._pickled or not (self._key or self._show):
            return self._pickled
        import pickle

        return pickle.dumps((self._key, self._show))

    def rules(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The ``key`` and ``show`` rules, ``(glob, callable)`` pairs, loaded if need be."""
        if self._pickled:
            import pickle

            try:
                self._key, self._show = pickle.loads(self._pickled)
            except Exception as e:  # never to break the code under test: the defaults
                self.load_error = (
                    f"key/show could not be loaded in this process ({type(e).__name__}: "
                    f"{e}); default key and repr used"
                )
            self._pickled = b""
        return self._key, self._show

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (self.run, self.plan, self.by_name, (), (), self._formatter_bytes()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return (self.run, self.plan, self.by_name, self._formatter_bytes()) == (
            other.run,
            other.plan,
            other.by_name,
            other._formatter_bytes(),
        )

    __hash__ = None  # type: ignore[assignment]

    def plan_for(self, name: str) -> tuple[Any, ...]:
        """The faults of the instrumented queue or pipe ``name``."""
        plan = list(self.plan)
        for glob, faults in self.by_name:
            if fnmatch.fnmatchcase(name, glob):
                plan.extend(faults)
        return tuple(plan)

    def formatters_for(self, name: str) -> tuple[Any, Any]:
        """The ``key`` and ``show`` callables (each None: the default) of the
        instrumented queue or pipe ``name``: the first rule whose glob matches."""
        if not (self._pickled or self._key or self._show):
            return None, None
        from .itemfmt import pick

        key, show = self.rules()
        return pick(key, name), pick(show, name)


class _Session:
    """The installed instrumentation of this process."""

    def __init__(self, config: Config, on_start: Callable[[Any], None] | None) -> None:
        self.config = config
        #: called with every process started here (the test process only)
        self.on_start = on_start
        self._names: dict[str, int] = {}
        self._lock = threading.Lock()
        #: weak references to the ``multiprocessing.pool.Pool`` objects made here
        self.pools: list[weakref.ref[Any]] = []
        #: weak references to the queues with a feeder thread made (or unpickled) in the
        #: test process: see :func:`release_queues`
        self.queues: list[weakref.ref[Any]] = []

    def took(self, q: Any) -> None:
        """Keep ``q`` for :func:`release_queues` (a Queue, in the test process)."""
        if hasattr(q, "cancel_join_thread") and os.getpid() == self.config.run.controller_pid:
            with contextlib.suppress(TypeError):
                self.queues.append(weakref.ref(q))

    def unique(self, name: str) -> str:
        with self._lock:
            n = self._names.get(name, 0) + 1
            self._names[name] = n
        return name if n == 1 else f"{name}-{n}"


_SESSION: _Session | None = None
#: one entry per recorded call in flight (list.append/pop are atomic)
_INFLIGHT: list[None] = []
#: process states of ended sessions, closed when no call is in flight any more
_PENDING: list[_st.ProcessState] = []
_tls = threading.local()
#: (owner, attribute, old value or _MISSING), in the order they were set
_SAVED: list[tuple[Any, str, Any]] = []
_MISSING: Any = object()
#: the original function of (class, op) for every patched method
_ORIGINALS: dict[tuple[type, str], Any] = {}
#: classes whose instances are made shadows of (their ops patched)
_READY: set[type] = set()


#: the patched methods in C (``_fastrec.Method``: the same as ``_queue_method`` and
#: ``_conn_method`` below, which count in flight in C), or None: in Python
_C: Any = _events._fastrec

os.register_at_fork(after_in_child=_INFLIGHT.clear)


def _in_flight() -> bool:
    """Whether a recorded call is in flight in this process."""
    return bool(_INFLIGHT) or (_C is not None and _C.inflight() > 0)


def active() -> bool:
    """Whether instrumentation is installed in this process."""
    return _SESSION is not None


def _set(owner: Any, attr: str, value: Any) -> None:
    old = (
        owner.__dict__.get(attr, _MISSING)
        if isinstance(owner, type)
        else getattr(owner, attr, _MISSING)
    )
    _SAVED.append((owner, attr, old))
    setattr(owner, attr, value)


def _own(obj: Any, name: str) -> Any:
    """``obj``'s attribute ``name`` as ``object.__getattribute__`` finds it, or None.

    Not through ``obj.__dict__``: on CPython 3.11 an object whose ``__dict__`` was
    asked for keeps its attributes in a dict from then on, and every attribute access
    in its methods is slower (a queue's put and get, ~0.1 us).  Instrumentation sets
    its attributes with ``object.__setattr__`` (:func:`_put_own`) for the same reason.
    """
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return None


def _put_own(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _drop_own(obj: Any, name: str) -> None:
    try:
        object.__delattr__(obj, name)
    except AttributeError:
        pass


def _close_pending() -> None:
    while _PENDING and not _in_flight():
        try:
            st = _PENDING.pop()
        except IndexError:  # pragma: no cover - another thread took it
            return
        try:
            st.recorder.close()
        except Exception:  # pragma: no cover
            pass
    if _C is not None and not _PENDING:
        _C.set_pending(False)


# -- sites and names -------------------------------------------------------------------


def _bases() -> tuple[str, ...]:
    global _BASES
    if not _BASES:
        import sysconfig

        paths = sysconfig.get_paths()
        _BASES = tuple(paths.get(k, "") + os.sep for k in ("stdlib", "purelib"))
    return _BASES


def _display(path: str) -> str:
    for base in _bases():
        if base != os.sep and path.startswith(base):
            return path[len(base) :]
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover
        rel = path
    return rel if not rel.startswith("..") else os.path.basename(path)


def _site(obj: Any, skip: frozenset[str] | set[str]) -> tuple[str, int] | None:
    """(file, line) of the code that made ``obj`` (skipping multiprocessing's
    plumbing and ``obj``'s own ``__init__`` chain), or None if mpfault made it."""
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if fn in skip or (
            obj is not None and f.f_code.co_name == "__init__" and f.f_locals.get("self") is obj
        ):
            f = f.f_back  # type: ignore[assignment]
            continue
        if fn.startswith(_MPFAULT_DIR):
            return None
        return fn, f.f_lineno
    return ("?", 0)  # pragma: no cover


def _made_by_mpfault() -> bool:
    """Whether the first caller outside the multiprocessing package is mpfault."""
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if fn.startswith(_MP_DIR + os.sep) or fn == __file__:
            f = f.f_back  # type: ignore[assignment]
            continue
        return fn.startswith(_MPFAULT_DIR)
    return False  # pragma: no cover


# -- shadows ----------------------------------------------------------------------------


class _View:
    """The raw operations a shadow calls (the object's own methods, unpatched)."""

    def __init__(self, target: Any, ops: dict[str, Any]) -> None:
        self._target = target
        for op, fn in ops.items():
            setattr(self, op, fn)

    def __repr__(self) -> str:
        return f"<mpfault view of {self._target!r}>"


class _Shadow(FaultQueue):
    """The recording, fault-injecting operations of one instrumented object."""

    def __init__(self, view: _View, plan: tuple[Any, ...], name: str, session: _Session) -> None:
        self._mpf_session = session
        config = session.config
        key, show = config.formatters_for(name)
        super().__init__(view, plan, name, config.run, key, show)
        if config.load_error and not config.load_noted:
            config.load_noted = True
            self._state().recorder.mark("note", name, config.load_error)
        for op in _CONN_OPS:
            if op in view.__dict__:
                setattr(self, op, self._make(op))

    def _target(self) -> Any:
        return self._q._target

    def __reduce__(self) -> tuple[Any, ...]:  # never travels: the object's reducer says its name
        return (_none, ())

    def __repr__(self) -> str:
        return f"<mpfault shadow {self._name!r}>"


def _none() -> None:
    return None


def _original(cls: type, op: str) -> Any:
    """The unpatched function ``cls`` has for ``op``, or None."""
    for k in cls.__mro__:
        if op in k.__dict__:
            return _ORIGINALS.get((k, op), k.__dict__[op])
    return None


def _queue_method(op: str, orig: Callable[..., Any]) -> Callable[..., Any]:
    if _C is not None:  # the same, in C
        return _dressed(_C.Method(orig, op), op, orig)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        sh = self.__dict__.get(_SHADOW)
        if sh is None or sh._mpf_session is not _SESSION:
            return orig(self, *args, **kwargs)
        tls = _tls
        prev = getattr(tls, "q", None)
        if prev is self:  # inside an operation of this queue: its own business
            return orig(self, *args, **kwargs)
        return _through(sh, op, self, prev, orig, self, args, kwargs)

    return _dressed(method, op, orig)


def _through(
    sh: Any,
    op: str,
    owner: Any,
    prev: Any,
    orig: Callable[..., Any],
    obj: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call ``op`` of the shadow queue ``sh`` for ``obj`` (``owner``: whose operation it
    is, for the calls it makes inside), counted in flight; plain ``orig`` if the session
    ended meanwhile."""
    tls = _tls
    _INFLIGHT.append(None)  # then look again: the session may have ended meanwhile
    try:
        if sh._mpf_session is not _SESSION:
            return orig(obj, *args, **kwargs)
        tls.q = owner
        try:
            return getattr(sh, op)(*args, **kwargs)
        finally:
            tls.q = prev
    finally:
        _INFLIGHT.pop()
        if _PENDING and not _INFLIGHT:
            _close_pending()


def _dressed(method: Any, op: str, orig: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` standing in for ``orig``: its name, qualified name, doc, __wrapped__."""
    method.__name__ = op
    method.__qualname__ = getattr(orig, "__qualname__", op)
    method.__doc__ = getattr(orig, "__doc__", None)
    method.__wrapped__ = orig
    return method  # type: ignore[no-any-return]


def _conn_method(op: str, orig: Callable[..., Any]) -> Callable[..., Any]:
    as_queue_op = {"send": "put", "recv": "get"}.get(op)
    if _C is not None:  # the same, in C
        return _dressed(_C.Method(orig, op, as_queue_op, True), op, orig)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        sh = d.get(_SHADOW)
        if sh is None or sh._mpf_session is not _SESSION:
            return orig(self, *args, **kwargs)
        owner = d.get(_OWNER)
        tls = _tls
        prev = getattr(tls, "q", None)
        if owner is not None:
            if as_queue_op is None or prev is owner:  # the queue's own use of its pipe
                return orig(self, *args, **kwargs)
            name = as_queue_op
        else:
            if prev is self:  # pragma: no cover - no public op calls another
                return orig(self, *args, **kwargs)
            owner = self
            name = op
        return _through(sh, name, owner, prev, orig, self, args, kwargs)

    return _dressed(method, op, orig)


def _patch(cls: type, op: str, factory: Callable[[str, Any], Any]) -> bool:
    """Patch ``cls``'s own ``op`` (once); False if it cannot be."""
    if (cls, op) in _ORIGINALS:
        return True
    orig = cls.__dict__.get(op)
    if not isinstance(orig, types.FunctionType):
        return False
    _ORIGINALS[(cls, op)] = orig
    _set(cls, op, factory(op, orig))
    return True


def _queue_ops(cls: type) -> list[str]:
    return [op for op in _QUEUE_OPS if _original(cls, op) is not None]


def _prepare_class(cls: type) -> None:
    """Patch every queue operation ``cls`` defines or overrides; register its reducer."""
    if cls in _READY:
        return
    for op in _queue_ops(cls):
        for k in cls.__mro__:
            if op in k.__dict__:
                _patch(k, op, _queue_method)
                break
    plain: Any = object
    if cls.__dict__.get("__reduce_ex__", plain.__reduce_ex__) is plain.__reduce_ex__ and all(
        "__reduce__" not in k.__dict__ and "__reduce_ex__" not in k.__dict__
        for k in cls.__mro__[:-1]
    ):
        _register(cls, _reduce_queue)
    _READY.add(cls)


def _register(cls: type, reducer: Callable[[Any], Any]) -> None:
    _set_item(ForkingPickler._extra_reducers, cls, reducer)  # type: ignore[attr-defined]


def _set_item(d: dict[Any, Any], key: Any, value: Any) -> None:
    _SAVED.append((d, key, d.get(key, _MISSING)))
    d[key] = value


#: a queue's own use of its pipe, cached in the queue as bound methods (``Queue._reset``,
#: ``SimpleQueue.__init__``): the attribute, the connection's method
_PIPE_BOUND = (("_send_bytes", "send_bytes"), ("_recv_bytes", "recv_bytes"), ("_poll", "poll"))


def _plain_pipe(q: Any) -> None:
    """Make the bound methods of its pipe that ``q`` keeps (``q._recv_bytes``...) the
    plain ones: what a queue does with its pipe is its own business, and the patched
    descriptor would only find that out (~0.3 us a call).  Bound methods like the ones
    they replace: no reference cycle, and plain behaviour after the session too."""
    for attr, op in _PIPE_BOUND:
        bound = _own(q, attr)
        if isinstance(bound, types.MethodType) and _own(bound.__self__, _OWNER) is q:
            orig = _ORIGINALS.get((_mpc._ConnectionBase, op))
            if orig is not None and bound.__func__ is not orig:
                _put_own(q, attr, types.MethodType(orig, bound.__self__))


def _reset_method(orig: Callable[..., Any]) -> Callable[..., Any]:
    def _reset(self: Any, *args: Any, **kwargs: Any) -> None:
        orig(self, *args, **kwargs)  # after a fork, or unpickled: binds its pipe afresh
        if _SESSION is not None and _own(self, _SHADOW) is not None:
            _plain_pipe(self)

    _reset.__wrapped__ = orig  # type: ignore[attr-defined]
    _reset.__qualname__ = orig.__qualname__
    return _reset


def _attach_queue(q: Any, name: str, session: _Session) -> None:
    cls = type(q)
    _prepare_class(cls)
    raws = {}
    for op in _queue_ops(cls):
        fn = _original(cls, op)
        if fn is not None:
            raws[op] = types.MethodType(fn, q)
    plan = session.config.plan_for(name)
    _put_own(q, _SHADOW, _Shadow(_View(q, raws), plan, name, session))
    send = _ORIGINALS[(_mpc._ConnectionBase, "send")]
    recv = _ORIGINALS[(_mpc._ConnectionBase, "recv")]
    for attr in ("_reader", "_writer"):
        conn = _own(q, attr)
        if isinstance(conn, _mpc.Connection):
            _put_own(conn, _OWNER, q)
            view = _View(
                conn, {"put": types.MethodType(send, conn), "get": types.MethodType(recv, conn)}
            )
            _put_own(conn, _SHADOW, _Shadow(view, plan, name, session))
    _plain_pipe(q)


def _attach_conn(conn: Any, name: str, session: _Session) -> None:
    raws = {op: types.MethodType(_ORIGINALS[(_mpc._ConnectionBase, op)], conn) for op in _CONN_OPS}
    plan = session.config.plan_for(name)
    _put_own(conn, _SHADOW, _Shadow(_View(conn, raws), plan, name, session))


def shadow_of(obj: Any) -> FaultQueue | None:
    """The shadow of an instrumented queue or connection of this session, or None."""
    sh = _own(obj, _SHADOW)
    if sh is None or sh._mpf_session is not _SESSION:
        return None
    return sh  # type: ignore[no-any-return]


def exempt(q: Any) -> None:
    """Leave ``q`` (and its connections) alone: a queue the harness wraps itself."""
    _drop_own(q, _SHADOW)
    for attr in ("_reader", "_writer"):
        conn = _own(q, attr)
        if isinstance(conn, _mpc.Connection):
            _drop_own(conn, _SHADOW)
            _drop_own(conn, _OWNER)


# -- creation, pickling ------------------------------------------------------------------------


def _new_name(obj: Any, kind: str, skip: Any) -> str | None:
    """``Queue@app.py:12`` (``-2``, ``-3``... for more made there); made in a process
    other than the test's, `` in <process name>`` too: the same line run in two
    processes makes two queues, with their own history and fault counters."""
    site = _site(obj, skip)
    if site is None:
        return None
    assert _SESSION is not None
    name = _SESSION.unique(f"{kind}@{_display(site[0])}:{site[1]}")
    if os.getpid() != _SESSION.config.run.controller_pid:
        name += f" in {_mpp.current_process().name}"
    return name


def _init_method(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig(self, *args, **kwargs)
        s = _SESSION
        if s is not None and _own(self, _SHADOW) is None:
            name = _new_name(self, type(self).__name__, _SKIP_FILES)
            if name is not None:
                _attach_queue(self, name, s)
                s.took(self)

    __init__.__wrapped__ = orig  # type: ignore[attr-defined]
    __init__.__qualname__ = orig.__qualname__
    return __init__


def _reduce_queue(q: Any) -> tuple[Any, ...]:
    state = q.__getstate__()
    sh = shadow_of(q)
    return (_rebuild_queue, (type(q), state, None if sh is None else sh.name))


def _rebuild_queue(cls: Any, state: Any, name: str | None) -> Any:
    q = cls.__new__(cls)
    setstate = getattr(q, "__setstate__", None)
    if setstate is not None:
        setstate(state)
    else:  # pragma: no cover - a subclass with __getstate__ only
        q.__dict__.update(state)
    s = _SESSION
    if name is not None and s is not None:
        _attach_queue(q, name, s)
        s.took(q)
    return q


_reduce_connection_orig: Any = None


def _reduce_conn(conn: Any) -> tuple[Any, ...]:
    rv = _reduce_connection_orig(conn)
    sh = shadow_of(conn)
    if sh is None or _own(conn, _OWNER) is not None:
        return rv  # type: ignore[no-any-return]
    return (_rebuild_conn, (rv[0], rv[1], sh.name))


def _rebuild_conn(fn: Callable[..., Any], args: tuple[Any, ...], name: str) -> Any:
    conn = fn(*args)
    s = _SESSION
    if s is not None:
        _attach_conn(conn, name, s)
    return conn


def _pipe_function(orig: Callable[..., Any]) -> Callable[..., Any]:
    def Pipe(duplex: bool = True) -> Any:
        a, b = orig(duplex)
        s = _SESSION
        if s is not None:
            caller = sys._getframe(1).f_code.co_filename
            if caller != os.path.join(_MP_DIR, "queues.py"):
                name = _new_name(None, "Connection", _SKIP_FILES)
                if name is not None:
                    _attach_conn(a, name, s)
                    _attach_conn(b, name, s)
        return a, b

    Pipe.__wrapped__ = orig  # type: ignore[attr-defined]
    Pipe.__doc__ = orig.__doc__
    return Pipe


# -- processes -------------------------------------------------------------------------------------


class _Installer:
    """Put in a spawn/forkserver child's preparation data: unpickling it installs the
    instrumentation there, before the process object (and its queues) is unpickled."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __reduce__(self) -> tuple[Any, ...]:
        return (_child_install, (self.config,))


def _child_install(config: Config) -> None:
    if _SESSION is None or _SESSION.config != config:
        if _SESSION is not None:
            uninstall()
        install(config)


def _prep_function(orig: Callable[..., Any]) -> Callable[..., Any]:
    def get_preparation_data(name: str) -> Any:
        data = orig(name)
        s = _SESSION
        if s is not None:
            data[_PREP_KEY] = _Installer(s.config)
        return data

    get_preparation_data.__wrapped__ = orig  # type: ignore[attr-defined]
    return get_preparation_data


def _is_ours(proc: Any) -> bool:
    """Whether ``proc`` is a harness child (bootstrap) rather than the code's own."""
    target = getattr(proc, "_target", None)
    return getattr(target, "__module__", "") == "mpfault._runtime.bootstrap"


def _start_method(orig: Callable[..., Any]) -> Callable[..., Any]:
    def start(self: Any) -> None:
        s = _SESSION
        adopt = (
            s is not None
            and s.on_start is not None
            and not _is_ours(self)
            and not _made_by_mpfault()
        )
        orig(self)
        if adopt:
            assert s is not None
            assert s.on_start is not None
            s.on_start(self)

    start.__wrapped__ = orig  # type: ignore[attr-defined]
    start.__qualname__ = orig.__qualname__
    start.__doc__ = orig.__doc__
    return start


def stack_address(run_dir: str, pid: int) -> str:
    """The (abstract) socket address an adopted process answers stack requests on: the
    run directory's name and a checksum of its path (not ``hashlib``: ~6 ms for a
    child to import), and the pid."""
    token = f"{os.path.basename(run_dir)}-{zlib.crc32(run_dir.encode()):08x}"
    return f"\0mpfault-{token}-{pid}"


def _serve(sock: socket.socket, controller: int) -> None:
    """Answer stack requests; end this process when the test process is gone."""
    import select

    try:
        pidfd = os.pidfd_open(controller)
    except (AttributeError, OSError):  # pragma: no cover - old kernel
        pidfd = -1
    watch = [sock] + ([pidfd] if pidfd >= 0 else [])
    while True:
        try:
            ready, _, _ = select.select(watch, [], [])
        except InterruptedError:  # pragma: no cover
            continue
        except OSError:  # pragma: no cover
            return
        if pidfd in ready:
            os.kill(os.getpid(), 9)
        try:
            conn, _ = sock.accept()
        except OSError:  # pragma: no cover
            continue
        try:
            conn.settimeout(5.0)
            if conn.recv(16) == _STACK_REQ:
                try:  # imported at the first request, not at the start (~1 ms)
                    from .stacks import format_stacks

                    text = format_stacks()
                except Exception as e:  # pragma: no cover - the thread keeps serving
                    text = f"(no stacks: {type(e).__name__}: {e})\n"
                conn.sendall(text.encode("utf-8", "replace"))
        except OSError:  # pragma: no cover
            pass
        finally:
            conn.close()


def _announce(proc: Any, s: _Session) -> None:
    """In a process the code under test started: say so, serve stacks, watch the test."""
    run = s.config.run
    pid = os.getpid()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(stack_address(run.run_dir, pid))
        sock.listen(4)
        _thread.start_new_thread(_serve, (sock, run.controller_pid))
    except OSError:  # pragma: no cover
        pass
    d = os.path.join(run.run_dir, ADOPTED_DIR)
    try:
        try:
            os.mkdir(d)  # not makedirs: a run directory already removed stays removed
        except FileExistsError:
            pass
        tmp = os.path.join(d, f".{pid}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{os.getppid()}\n{proc.name}\n")
        os.replace(tmp, os.path.join(d, str(pid)))
    except OSError:  # the run is over (its directory removed)
        pass


def _bootstrap_method(orig: Callable[..., Any]) -> Callable[..., Any]:
    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        s = _SESSION
        if s is not None and not _is_ours(self) and os.getpid() != s.config.run.controller_pid:
            _announce(self, s)
        return orig(self, *args, **kwargs)

    _bootstrap.__wrapped__ = orig  # type: ignore[attr-defined]
    return _bootstrap


def _pool_init(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        s = _SESSION
        if s is not None:
            s.pools.append(weakref.ref(self))
        orig(self, *args, **kwargs)

    __init__.__wrapped__ = orig  # type: ignore[attr-defined]
    __init__.__qualname__ = orig.__qualname__
    return __init__


def release_queues() -> int:
    """Let the interpreter's exit skip the feeder threads of the queues made while
    instrumented (``cancel_join_thread()``); returns how many.

    A feeder whose queue's write lock died with a killed process (``kill(during)`` on a
    put), or whose pipe is full with no reader left, never ends: ``multiprocessing``
    joins it at exit with no bound, and pytest would hang after the last test.  The
    processes that could read those items are gone when the harness tears down.
    """
    s = _SESSION
    if s is None:
        return 0
    n = 0
    for q in (r() for r in s.queues):
        if q is not None:
            with contextlib.suppress(Exception):
                q.cancel_join_thread()
                n += 1
    return n


def pools() -> list[Any]:
    """The live ``multiprocessing.pool.Pool`` objects made while instrumented."""
    s = _SESSION
    if s is None:
        return []
    return [p for p in (r() for r in s.pools) if p is not None]


# -- install / uninstall --------------------------------------------------------------------------


def install(config: Config, on_start: Callable[[Any], None] | None = None) -> None:
    """Instrument this process (and, from now on, the processes it starts)."""
    global _SESSION, _reduce_connection_orig
    if _SESSION is not None:
        raise RuntimeError("mpfault instrumentation is already on in this process")
    conn = _mpc.Connection
    for op in _CONN_OPS:
        _patch(_mpc._ConnectionBase, op, _conn_method)
    for cls in (_mpq.Queue, _mpq.SimpleQueue):
        orig = cls.__dict__["__init__"]
        _ORIGINALS[(cls, "__init__")] = orig
        _set(cls, "__init__", _init_method(orig))
    for cls in (_mpq.Queue, _mpq.JoinableQueue, _mpq.SimpleQueue):
        _prepare_class(cls)
    _set(_mpq.Queue, "_reset", _reset_method(_mpq.Queue.__dict__["_reset"]))
    _reduce_connection_orig = ForkingPickler._extra_reducers.get(  # type: ignore[attr-defined]
        conn,
        _mpc.reduce_connection,  # type: ignore[attr-defined]
    )
    _register(conn, _reduce_conn)
    _set(_mpc, "Pipe", _pipe_function(_mpc.Pipe))
    _set(_mps, "get_preparation_data", _prep_function(_mps.get_preparation_data))
    if on_start is not None:  # the test process: it finishes the pools (``pools()``)
        import multiprocessing.pool as _mppool  # not in a spawned child: ~6 ms

        _set(_mppool.Pool, "__init__", _pool_init(_mppool.Pool.__dict__["__init__"]))
    bp = _mpp.BaseProcess
    _set(bp, "start", _start_method(bp.__dict__["start"]))
    _set(bp, "_bootstrap", _bootstrap_method(bp.__dict__["_bootstrap"]))
    _SESSION = _Session(config, on_start)
    if _C is not None:
        _C.set_session(_SESSION, _close_pending)


def uninstall() -> None:
    """Restore everything :func:`install` patched.  Calls in flight end as they began;
    this process's log of the run is closed once none is left."""
    global _SESSION
    s = _SESSION
    if s is None:
        return
    if _C is not None:  # first: a call in C that passed its check is in flight now
        _C.set_session(None, _close_pending)
    _SESSION = None
    while _SAVED:
        owner, attr, old = _SAVED.pop()
        if isinstance(owner, dict):
            if old is _MISSING:
                owner.pop(attr, None)
            else:
                owner[attr] = old
        elif old is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, old)
    _ORIGINALS.clear()
    _READY.clear()
    if _in_flight():
        st = _st._states.pop(s.config.run.run_dir, None)
        if st is not None:
            _PENDING.append(st)
            if _C is not None:
                _C.set_pending(True)
            if not _in_flight():  # pragma: no cover - the last one ended meanwhile
                _close_pending()
