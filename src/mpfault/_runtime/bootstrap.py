"""The entry point of every child process a harness starts.

``run(spec)`` is the ``target`` of the ``multiprocessing.Process``.  In order, it:

1. arms a parent-death watchdog (``prctl(PR_SET_PDEATHSIG)`` on Linux, and a
   control channel whose EOF means the test process is gone, everywhere);
2. becomes a process-group leader, so the harness can kill its descendants too;
3. redirects fd 1 and 2 (and ``sys.stdout``/``sys.stderr``, unbuffered) to files
   in the run directory, so output survives a SIGKILL;
4. serves stack-dump requests on the control channel from a daemon thread;
5. makes the test's modules importable (``--import-mode=importlib``), unpickles
   the target and its arguments, runs it, and sends back its result or its
   exception with the formatted traceback.

This module imports nothing from the rest of ``mpfault`` and never imports pytest.
"""

from __future__ import annotations

import _thread
import importlib
import importlib.util
import io
import os
import pickle
import re
import signal
import sys
import types
import warnings
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from . import control as _control
from .control import Error, Result
from .control import send as _send

__all__ = ["ChildSpec", "Payload", "run"]

#: prctl(PR_SET_PDEATHSIG, sig), or None where there is none: from the C module where it
#: is built (loading ctypes costs a spawn child ~1 ms), else libc's through ctypes,
#: looked up once here (a forked child, or a fork server's, finds it resolved)
_set_pdeathsig: Any = None
try:
    from ._fastrec import set_pdeathsig as _set_pdeathsig
except ImportError:  # pragma: no cover - an install without the C module
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl

            def _set_pdeathsig(sig: int) -> None:
                _prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG

        except (ImportError, OSError, AttributeError):
            _set_pdeathsig = None

#: The warning os.fork() gives in a multi-threaded process (3.12+), which children
#: ignore (see run()).  Compiled here once, as warnings.filterwarnings() will: a
#: forked child finds it in the re module's cache.
_FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)"
if sys.version_info >= (3, 12):  # pragma: no branch
    re.compile(_FORK_WARNING, re.I)


class Payload:
    """The target and its arguments, pickled only when the child is spawned.

    Under ``fork`` the object is inherited as is.  Under ``spawn``/``forkserver``
    it is pickled inside ``Process.start()`` (so queues and connections in the
    arguments can be pickled) but unpickled only by :func:`run`, after the
    test's modules have been made importable.
    """

    def __init__(self, obj: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> None:
        self._obj: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = obj
        self._data: bytes | None = None

    def __getstate__(self) -> dict[str, bytes]:
        return {"data": bytes(ForkingPickler.dumps(self._obj))}

    def __setstate__(self, state: dict[str, bytes]) -> None:
        self._obj = None
        self._data = state["data"]

    def load(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """Return ``(target, args, kwargs)``."""
        if self._obj is None:
            assert self._data is not None
            self._obj = pickle.loads(self._data)
            self._data = None
        return self._obj


class ChildSpec:
    """Everything a child needs to start; picklable under every start method.

    A plain class with a dataclass's constructor, ``repr`` and ``==`` (not a
    dataclass: importing :mod:`dataclasses`, and :mod:`inspect` with it, would
    cost every ``spawn`` child several milliseconds).
    """

    __match_args__ = (
        "name",
        "out_path",
        "err_path",
        "control",
        "payload",
        "modules",
        "close_fds",
        "parent_end",
        "pdeathsig",
        "parent_pid",
    )

    def __init__(
        self,
        name: str,
        out_path: str,
        err_path: str,
        control: Connection,
        payload: Payload,
        modules: list[tuple[str, str]] | None = None,
        close_fds: list[int] | None = None,
        parent_end: Connection | None = None,
        pdeathsig: int = signal.SIGKILL,
        parent_pid: int = 0,
    ) -> None:
        self.name = name
        self.out_path = out_path
        self.err_path = err_path
        self.control = control
        self.payload = payload
        #: modules to load from a file when they cannot be imported by name
        self.modules: list[tuple[str, str]] = [] if modules is None else modules
        #: fork only: descriptors of the parent's that the child must close (other
        #: children's control channels, so that their EOF still means "parent died")
        self.close_fds: list[int] = [] if close_fds is None else close_fds
        #: the parent's end of our own control channel (fork only)
        self.parent_end = parent_end
        self.pdeathsig = pdeathsig
        self.parent_pid = parent_pid

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__match_args__)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__match_args__)

    __hash__ = None  # type: ignore[assignment]  # as a dataclass with eq=True


def _arm_pdeathsig(sig: int, parent_pid: int) -> None:
    if _set_pdeathsig is not None and sig:
        _set_pdeathsig(int(sig))
    # the parent may have died before prctl took effect; under forkserver our
    # OS parent is the fork server, which exits when the test process does
    if parent_pid and os.getppid() == 1:  # pragma: no cover - a race
        os._exit(70)


def _redirect(out_path: str, err_path: str) -> None:
    for fd, path in ((1, out_path), (2, err_path)):
        new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(new, fd)
        os.close(new)
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )


def _control_loop(control: Connection) -> None:
    """Serve stack requests; exit the process when the parent goes away."""
    while True:
        try:
            req = control.recv_bytes()
        except (EOFError, OSError):
            # The test process died (pytest-timeout's os._exit, SIGKILL...).
            try:
                os.killpg(0, signal.SIGKILL)
            finally:
                os._exit(71)
        if req == _control.STACK_REQUEST:
            try:
                from .stacks import format_stacks  # loaded on the first request

                _control.send(control, _control.Stack(format_stacks()))
            except (OSError, ValueError):  # pragma: no cover
                os._exit(71)


def _ensure_modules(modules: list[tuple[str, str]]) -> None:
    for name, path in modules:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.samefile(spec.origin, path):
            importlib.import_module(name)
            continue
        # Not importable by name (pytest --import-mode=importlib): load from the file.
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                try:
                    importlib.import_module(parent)
                except ImportError:
                    mod = types.ModuleType(parent)
                    mod.__path__ = []
                    sys.modules[parent] = mod
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover
            raise ImportError(f"cannot load module {name!r} from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def _describe(exc: BaseException) -> tuple[str, str, str]:
    import traceback  # only when a child fails: not a start-up cost

    t = type(exc)
    qual = (
        t.__qualname__
        if t.__module__ in ("builtins", "__main__")
        else (f"{t.__module__}.{t.__qualname__}")
    )
    text = "".join(traceback.format_exception(t, exc, exc.__traceback__))
    try:
        msg = str(exc)
    except Exception:  # pragma: no cover
        msg = "<str() failed>"
    return qual, msg, text


def run(spec: ChildSpec) -> None:
    """Run a child: the ``target`` of every process the harness starts."""
    _arm_pdeathsig(spec.pdeathsig, spec.parent_pid)
    try:
        os.setpgid(0, 0)
    except OSError:  # pragma: no cover - already a group leader
        pass
    for fd in spec.close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if spec.parent_end is not None:
        spec.parent_end.close()
    _redirect(spec.out_path, spec.err_path)
    control = spec.control
    # Our control thread makes every child multi-threaded, and on 3.12+ os.fork() then
    # warns (an error under -W error, whose filters a forked child inherits).  The
    # thread holds no lock a forked grandchild could need, so do not let it change the
    # behaviour of code that forks.
    if sys.version_info >= (3, 12):  # the warning is new in 3.12
        warnings.filterwarnings("ignore", message=_FORK_WARNING, category=DeprecationWarning)
    # A bare thread (daemon-like): unlike threading.Thread.start(), starting it does
    # not wait until it runs, which costs a child a scheduling round trip or two.
    _thread.start_new_thread(_control_loop, (control,))
    try:
        _ensure_modules(spec.modules)
        target, args, kwargs = spec.payload.load()
    except BaseException as exc:
        qual, msg, text = _describe(exc)
        _send(control, Error(qual, f"could not load the target: {msg}", text, None))
        sys.stderr.write(text)
        raise SystemExit(1)
    try:
        value = target(*args, **kwargs)
    except BaseException as exc:
        qual, msg, text = _describe(exc)
        try:
            blob: bytes | None = pickle.dumps(exc)
        except Exception:
            blob = None
        try:
            _send(control, Error(qual, msg, text, blob))
        except Exception:  # pragma: no cover
            pass
        if isinstance(exc, SystemExit):
            raise
        raise SystemExit(1)
    try:
        data = pickle.dumps(value)
    except Exception as exc:
        qual, msg, text = _describe(exc)
        _send(
            control,
            Error(qual, f"the target's return value cannot be pickled: {msg}", text, None),
        )
        raise SystemExit(1)
    _send(control, Result(data))


def arm_helper(parent_pid: int) -> None:
    """Initializer of helper processes (a Manager's server): die with the test process."""
    _arm_pdeathsig(signal.SIGKILL, parent_pid)
