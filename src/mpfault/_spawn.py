"""Starting a child: what it needs (the test's modules, the target by reference),
and how it gets it under each start method.

:func:`start` makes the :class:`~mpfault._child.Child`; the process runs
:func:`mpfault._runtime.bootstrap.run`.  This module does not import pytest.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from ._child import Child, live_control_fds
from ._runtime import bootstrap
from ._runtime.errors import SpawnError

if TYPE_CHECKING:
    from ._runtime.errors import Hang

__all__ = ["check_target", "preload_forkserver", "start"]

_MODULE_CACHE: dict[str, tuple[str, str] | None] = {}
#: whether os.fork() warns in a multi-threaded process (3.12+)
_FORK_WARNS = sys.version_info >= (3, 12)


def _module_entry(name: str) -> tuple[str, str] | None:
    """(name, file) if module ``name`` may not be importable by name in a fresh child."""
    if name in _MODULE_CACHE:
        return _MODULE_CACHE[name]
    entry: tuple[str, str] | None = None
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None)
    if mod is not None and path and name not in ("__main__", "__mp_main__"):
        try:
            spec = importlib.util.find_spec(name)
            same = bool(spec and spec.origin and os.path.samefile(spec.origin, path))
        except (ImportError, ValueError, OSError):
            same = False
        if not same:
            entry = (name, path)
    _MODULE_CACHE[name] = entry
    return entry


def _modules_for(target: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    names: list[str] = []
    for obj in (target, *args, *kwargs.values()):
        mod = getattr(obj, "__module__", None)
        if not isinstance(mod, str):
            mod = type(obj).__module__
        if mod and mod not in names and mod != "builtins":
            names.append(mod)
    out = []
    for n in names:
        e = _module_entry(n)
        if e is not None:
            out.append(e)
    return out


def check_target(target: Callable[..., Any], method: str) -> None:
    """A SpawnError if ``target`` cannot reach a child of the start method ``method``."""
    if not callable(target):
        raise SpawnError(f"spawn(): the target {target!r} is not callable")
    if method == "fork":
        return
    qual = getattr(target, "__qualname__", "") or ""
    where = f"under the {method!r} start method the target is pickled by reference"
    if "<lambda>" in qual:
        raise SpawnError(
            f"spawn(): the target is a lambda, which cannot reach a child ({where}); "
            "define it as a function at module level"
        )
    if "<locals>" in qual:
        raise SpawnError(
            f"spawn(): the target {qual!r} is defined inside a function ({where}); "
            "move it to module level (in the test module or a helper module)"
        )


@contextlib.contextmanager
def _skip_pytest_main(method: str) -> Any:
    """Do not make spawn/forkserver children re-import pytest's console script.

    Children normally re-run the parent's ``__main__`` module; when that is the
    ``pytest`` script it only imports pytest (~0.2 s per child) and defines nothing
    a child could need.  (``python -m pytest`` is skipped by multiprocessing itself.)
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or ""
    if (
        method == "fork"
        or getattr(main, "__spec__", None) is not None
        or os.path.basename(path) not in ("pytest", "py.test")
    ):
        yield
        return
    from multiprocessing import spawn as _spawn

    original = _spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        return data

    _spawn.get_preparation_data = preparation_data
    try:
        yield
    finally:
        _spawn.get_preparation_data = original


_PRELOADED = False


def preload_forkserver(ctx: BaseContext) -> None:
    """Have the fork server import the child runtime once, so children start fast.

    The queue wrapper too (with the fault plans and the event log): a child given a
    harness queue would import them otherwise, every one of them; and the
    instrumentation, which every child of an instrumented test installs (~10 ms a child
    with bytecode caches, ~40 ms without: ``PYTHONDONTWRITEBYTECODE``).
    """
    global _PRELOADED
    if not _PRELOADED:
        _PRELOADED = True
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload(
                [
                    "mpfault._runtime.bootstrap",
                    "mpfault._runtime.fqueue",
                    "mpfault._runtime.instrument",
                ]
            )


def start(
    ctx: BaseContext,
    method: str,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
    out_path: str,
    err_path: str,
    *,
    limit: Callable[[float | None], float],
    hang: Callable[[str, float], Hang],
    last_operation: Callable[[int], str | None],
) -> Child:
    """Start ``target(*args, **kwargs)`` in a process of ``ctx`` named ``name``, its
    output going to ``out_path`` and ``err_path``; a SpawnError if it cannot start."""
    parent_end, child_end = ctx.Pipe(duplex=True)
    fork = method == "fork"
    spec = bootstrap.ChildSpec(
        name=name,
        out_path=out_path,
        err_path=err_path,
        control=child_end,
        payload=bootstrap.Payload((target, args, kwargs)),
        modules=[] if fork else _modules_for(target, args, kwargs),
        close_fds=live_control_fds() if fork else [],
        parent_end=parent_end if fork else None,
        parent_pid=os.getpid(),
    )
    process = ctx.Process(  # type: ignore[attr-defined]
        target=bootstrap.run, args=(spec,), name=name, daemon=False
    )
    try:
        # 3.12+ warns when forking a multi-threaded process (queue feeder threads);
        # the test chose the fork start method on purpose.  (Older versions do not.)
        with warnings.catch_warnings() if _FORK_WARNS else contextlib.nullcontext():
            if _FORK_WARNS:
                warnings.filterwarnings("ignore", message=".*multi-threaded.*use of fork")
            with _skip_pytest_main(method):
                process.start()
    except Exception as exc:
        parent_end.close()
        child_end.close()
        raise SpawnError(
            f"spawn(): could not start {name!r} under the {method!r} start "
            f"method: {type(exc).__name__}: {exc}. Under spawn and forkserver the target "
            "and every argument are pickled: use module-level functions and classes, and "
            "pass queues made by this harness."
        ) from exc
    child_end.close()
    # The child's first step creates its output files, which takes a file system
    # a while (~0.2 ms each here): create them now, while the child starts.
    for path in (out_path, err_path):
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return Child(
        process,
        parent_end,
        name,
        out_path,
        err_path,
        start_method=method,
        limit=limit,
        hang=hang,
        last_operation=last_operation,
        target_name=getattr(target, "__qualname__", None) or repr(target),
    )
