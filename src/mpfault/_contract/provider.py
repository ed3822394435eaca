"""Queue providers: how the contract makes the queue under test and starts its children.

A :class:`QueueProvider` says

* how to make a queue: :meth:`~QueueProvider.make` ``(maxsize)``, for the start method
  the provider was set up for (:meth:`~QueueProvider.setup`);
* which context's ``Process`` (and ``Pipe``, ``Event``...) the children must use:
  :meth:`~QueueProvider.context` ``(method)`` - for a fork of multiprocessing that is
  the package's own ``get_context(method)``;
* which kind of queue it behaves like: :attr:`~QueueProvider.kind` (``"Q"``
  Queue, ``"JQ"`` JoinableQueue, ``"SQ"`` SimpleQueue, ``"MQ"`` Manager queue), or
  ``None`` to have it probed from the queue's API (:func:`probe_kind`);
* what ``maxsize`` 0 and negative mean: :attr:`~QueueProvider.unbounded` lists the
  maxsize values meaning "no limit" (CPython: 0 and every negative value);
* how to tear down what :meth:`~QueueProvider.setup` made (a manager, say):
  :meth:`~QueueProvider.teardown`.

The command line and the pytest options build a provider from a one-liner
(:func:`load_provider`): ``--queue pkg.mod:Queue`` names a class or a callable taking
``maxsize`` (or ``FACTORY(ctx, maxsize)``, detected from its signature), ``--context
pkg:get_context`` the context, ``--kind SimpleQueue`` the kind.  ``--queue`` may also
name a :class:`QueueProvider` instance or subclass, for everything else.

This module imports only the standard library.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import os
import sys
from collections.abc import Callable, Mapping
from multiprocessing.context import BaseContext
from typing import Any

from .._runtime.errors import MpfaultError

__all__ = [
    "KIND_API",
    "KIND_LABELS",
    "ProviderError",
    "QueueProvider",
    "SpecProvider",
    "StdlibProvider",
    "load_provider",
    "parse_kind",
    "probe_kind",
]

#: The documented API of each queue kind (what a declared kind promises).
KIND_API: Mapping[str, tuple[str, ...]] = {
    "Q": (
        "put",
        "get",
        "put_nowait",
        "get_nowait",
        "qsize",
        "empty",
        "full",
        "close",
        "join_thread",
        "cancel_join_thread",
    ),
    "JQ": (
        "put",
        "get",
        "put_nowait",
        "get_nowait",
        "qsize",
        "empty",
        "full",
        "close",
        "join_thread",
        "cancel_join_thread",
        "task_done",
        "join",
    ),
    "SQ": ("put", "get", "empty", "close"),
    "MQ": ("put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full", "task_done", "join"),
}
#: The names of the kinds, as ``--kind`` accepts and the reports print them.
KIND_LABELS: Mapping[str, str] = {
    "Q": "Queue",
    "JQ": "JoinableQueue",
    "SQ": "SimpleQueue",
    "MQ": "ManagerQueue",
}
_ALIASES = {
    **{k.lower(): k for k in KIND_LABELS},
    **{v.lower(): k for k, v in KIND_LABELS.items()},
    "manager": "MQ",
    "manager-queue": "MQ",
    "manager queue": "MQ",
}


class ProviderError(MpfaultError, ValueError):
    """A queue provider that cannot be loaded or used; the message says what failed."""


def parse_kind(value: str) -> str:
    """The kind code (``Q``, ``JQ``, ``SQ``, ``MQ``) of *value* (``SimpleQueue``, ``sq``...)."""
    kind = _ALIASES.get(value.strip().lower())
    if kind is None:
        names = ", ".join(KIND_LABELS.values())
        raise ProviderError(f"unknown queue kind {value!r} (known: {names})")
    return kind


def probe_kind(q: Any) -> tuple[str, str]:
    """The kind queue *q* behaves like, judged from its API, and why (for the report)."""
    if hasattr(q, "_callmethod") and hasattr(q, "_exposed_"):
        return "MQ", "a multiprocessing manager proxy"
    has = [n for n in ("task_done", "join") if callable(getattr(q, n, None))]
    if len(has) == 2:
        return "JQ", "has task_done() and join()"
    timed = [
        n for n in ("put_nowait", "get_nowait", "qsize", "full") if callable(getattr(q, n, None))
    ]
    if timed:
        return "Q", f"has {', '.join(n + '()' for n in timed)}, no task_done()/join()"
    return "SQ", "has no put_nowait(), get_nowait(), qsize() nor full()"


def _distribution(module: str) -> tuple[str | None, str | None]:
    """The ``(package, version)`` that provides top-level *module*, as far as known."""
    top = module.split(".")[0]
    if top in ("multiprocessing", "queue", "builtins") or top in sys.stdlib_module_names:
        return "python", sys.version.split()[0]
    try:
        from importlib import metadata

        dists = metadata.packages_distributions().get(top) or [top]
        return dists[0], metadata.version(dists[0])
    except Exception:
        mod = sys.modules.get(top)
        version = getattr(mod, "__version__", None)
        return top, str(version) if version is not None else None


class QueueProvider:
    """How the contract makes, describes and tears down the queue under test.

    Subclass it (or give an instance to ``--queue module:provider``) when a one-liner
    does not say enough.  Override :meth:`create` (or :meth:`make`); the rest has
    defaults.

    Attributes:
        name: what the reports call the queue (``"faster_fifo.Queue"``).
        kind: ``"Q"``, ``"JQ"``, ``"SQ"`` or ``"MQ"``; ``None`` to probe it.
        unbounded: the maxsize values meaning "no limit" (CPython: 0 and negatives);
            the capacity row checks them.
        package: the distribution the queue comes from (``None``: found out).
        version: its version (``None``: found out).
        stdlib: whether this is CPython's own queue (only then do checks of CPython's
            private attributes, such as ``_rlock``, run unconditionally).
        method: the start method of the last :meth:`setup` (``None`` before).
        ctx: :meth:`context` of that start method.
    """

    name: str = "custom queue"
    kind: str | None = None
    unbounded: tuple[int, ...] = (0, -1)
    package: str | None = None
    version: str | None = None
    stdlib: bool = False
    context_name: str = "multiprocessing.get_context"
    kind_reason: str = "declared"

    def __init__(self) -> None:
        self.method: str | None = None
        self.ctx: Any = None

    def context(self, method: str) -> BaseContext:
        """The context whose ``Process`` the children of *method* must use."""
        return multiprocessing.get_context(method)

    def setup(self, method: str) -> None:
        """Prepare to make queues for start method *method* (before its cells)."""
        self.method = method
        self.ctx = self.context(method)

    def create(self, ctx: Any, maxsize: int) -> Any:
        """Make a queue of capacity *maxsize* for context *ctx* (override this)."""
        raise NotImplementedError(f"{type(self).__name__} does not define create()")

    def make(self, maxsize: int = 0) -> Any:
        """A fresh queue of capacity *maxsize* for the start method set up last."""
        if self.ctx is None:
            raise ProviderError(f"{self.name}: make() before setup()")
        return self.create(self.ctx, maxsize)

    def teardown(self) -> None:
        """Release what :meth:`setup` made (a manager, say)."""
        self.method = None
        self.ctx = None

    def describe(self) -> dict[str, Any]:
        """The provider as JSON-ready data (for the report)."""
        package, version = self.package, self.version
        if package is None:
            package, version = _distribution(type(self).__module__)
        return {
            "name": self.name,
            "kind": self.kind,
            "kind_name": KIND_LABELS.get(self.kind or "", None),
            "kind_reason": self.kind_reason,
            "context": self.context_name,
            "unbounded_maxsizes": list(self.unbounded),
            "package": package,
            "version": version,
            "stdlib": self.stdlib,
        }


class StdlibProvider(QueueProvider):
    """CPython's own queues: ``Queue``, ``JoinableQueue``, ``SimpleQueue``, a Manager queue."""

    stdlib = True

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in KIND_LABELS:
            raise ProviderError(f"unknown queue kind {kind!r}")
        self.kind = kind
        self.name = {
            "Q": "multiprocessing.Queue",
            "JQ": "multiprocessing.JoinableQueue",
            "SQ": "multiprocessing.SimpleQueue",
            "MQ": "Manager().Queue()",
        }[kind]
        self.package = "python"
        self.version = sys.version.split()[0]
        self._manager: Any = None

    def setup(self, method: str) -> None:
        """Set up for *method*; the Manager queue kind starts its manager lazily."""
        if self.method != method:
            self.teardown()
        super().setup(method)

    def create(self, ctx: Any, maxsize: int) -> Any:
        """The stdlib queue of this kind."""
        if self.kind == "Q":
            return ctx.Queue(maxsize)
        if self.kind == "JQ":
            return ctx.JoinableQueue(maxsize)
        if self.kind == "SQ":
            return ctx.SimpleQueue()
        if self._manager is None:
            self._manager = ctx.Manager()
        return self._manager.Queue(maxsize)

    def teardown(self) -> None:
        """Shut the manager down (Manager queue kind)."""
        manager, self._manager = self._manager, None
        if manager is not None:
            try:
                manager.shutdown()
            except Exception:  # pragma: no cover - the manager died
                pass
        super().teardown()


def _import(spec: str, what: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not module_name:
        raise ProviderError(f"expected module:{what}, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ProviderError(
            f"cannot import module {module_name!r}: {type(exc).__name__}({str(exc)!r})"
        ) from None
    if not sep:
        return obj
    if not attr:
        raise ProviderError(f"expected module:{what}, got {spec!r}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProviderError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _call_style(fn: Any) -> str:
    """How to call queue constructor *fn*: ``ctx-maxsize``, ``maxsize-ctxkw``, ``ctxkw``,
    ``maxsize-kw``, ``maxsize``, ``none`` or ``try`` (no signature)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return "try"
    params = list(sig.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    required = [p for p in positional if p.default is p.empty]
    names = {p.name for p in params}
    if len(required) >= 2:
        return "ctx-maxsize"
    if "ctx" in names and any(p.name == "ctx" and p.kind == p.KEYWORD_ONLY for p in params):
        return "maxsize-ctxkw" if positional or "maxsize" in names else "ctxkw"
    if "maxsize" in names:
        return "maxsize-kw"
    if positional or any(p.kind == p.VAR_POSITIONAL for p in params):
        return "maxsize"
    return "none"


class SpecProvider(QueueProvider):
    """A provider built from ``--queue``/``--context``/``--kind`` one-liners.

    Args:
        queue: the class or callable making the queue; called as ``FACTORY(ctx,
            maxsize)`` if it takes two required arguments, ``Q(maxsize, ctx=ctx)`` if it
            has a keyword-only ``ctx``, ``Q(maxsize=maxsize)`` if it has a ``maxsize``
            parameter, ``Q(maxsize)`` if it takes one argument, ``Q()`` if none.  A
            context's own constructor (``multiprocess.Queue``, bound to the package's
            default context) is called on the start method's context instead.
        context: ``get_context(method)`` of the queue's package (default: inferred from
            a context-bound constructor, else ``multiprocessing.get_context``).
        kind: the kind code, or ``None`` to probe it.
        name: the label of the queue (the ``--queue`` text).
    """

    def __init__(
        self,
        queue: Callable[..., Any],
        *,
        context: Callable[[str], Any] | None = None,
        context_name: str | None = None,
        kind: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self._queue = queue
        self.name = str(name or getattr(queue, "__qualname__", repr(queue)))
        self.kind = kind
        self._bound_name: str | None = None
        owner = getattr(queue, "__self__", None)
        if owner is not None and callable(getattr(owner, "get_context", None)):
            # e.g. multiprocess.Queue: a method of the package's default context
            self._bound_name = queue.__name__
            if context is None:
                pkg = type(owner).__module__.split(".")[0]
                context = importlib.import_module(pkg).get_context
                context_name = f"{pkg}.get_context (inferred from {self.name})"
        self._context = context or multiprocessing.get_context
        self.context_name = context_name or (
            "multiprocessing.get_context" if context is None else repr(context)
        )
        self._style = "ctxattr" if self._bound_name else _call_style(queue)
        module = getattr(queue, "__module__", None) or type(queue).__module__
        if owner is not None:
            module = type(owner).__module__
        self.package, self.version = _distribution(module)

    def context(self, method: str) -> BaseContext:
        """The given ``get_context(method)``."""
        try:
            ctx = self._context(method)
        except Exception as exc:
            raise ProviderError(
                f"{self.context_name}({method!r}) raised {type(exc).__name__}({str(exc)!r})"
            ) from None
        if not callable(getattr(ctx, "Process", None)):
            raise ProviderError(f"{self.context_name}({method!r}) has no Process")
        return ctx

    def create(self, ctx: Any, maxsize: int) -> Any:
        """Call the queue constructor in the detected style."""
        fn = self._queue
        style = self._style
        if style == "ctxattr":
            assert self._bound_name is not None
            bound = getattr(ctx, self._bound_name)
            return bound() if self._bound_name == "SimpleQueue" else bound(maxsize)
        if style == "ctx-maxsize":
            return fn(ctx, maxsize)
        if style == "maxsize-ctxkw":
            return fn(maxsize, ctx=ctx)
        if style == "ctxkw":
            return fn(ctx=ctx)
        if style == "maxsize-kw":
            return fn(maxsize=maxsize)
        if style == "maxsize":
            return fn(maxsize)
        if style == "none":
            return fn()
        try:
            return fn(maxsize)
        except TypeError:
            return fn()

    @property
    def call_text(self) -> str:
        """How the constructor is called, as text (for the report)."""
        return {
            "ctxattr": f"ctx.{self._bound_name}(maxsize)",
            "ctx-maxsize": f"{self.name}(ctx, maxsize)",
            "maxsize-ctxkw": f"{self.name}(maxsize, ctx=ctx)",
            "ctxkw": f"{self.name}(ctx=ctx)",
            "maxsize-kw": f"{self.name}(maxsize=maxsize)",
            "maxsize": f"{self.name}(maxsize)",
            "none": f"{self.name}()",
            "try": f"{self.name}(maxsize), else {self.name}()",
        }[self._style]

    def describe(self) -> dict[str, Any]:
        """As :meth:`QueueProvider.describe`, plus how the constructor is called."""
        return {**super().describe(), "call": self.call_text}


def load_provider(
    spec: str, *, context: str | None = None, kind: str | None = None
) -> QueueProvider:
    """Build the provider that ``--queue SPEC [--context CTX] [--kind KIND]`` names.

    *spec* is ``module:attr``: a :class:`QueueProvider` instance or subclass, or a class
    or callable making the queue (see :class:`SpecProvider`).  *context* is
    ``module:get_context`` or a module with a ``get_context``.  Relative modules are
    found from the current directory, as ``python -m`` does.

    Raises:
        ProviderError: naming what cannot be loaded.
    """
    if ":" not in spec:
        raise ProviderError(f"expected module:queue, got {spec!r}")
    obj = _import(spec, "queue")
    code = parse_kind(kind) if kind is not None else None
    if isinstance(obj, type) and issubclass(obj, QueueProvider):
        obj = obj()
    if isinstance(obj, QueueProvider):
        if context is not None:
            raise ProviderError("--context is not used with a QueueProvider (it has context())")
        if code is not None:
            obj.kind = code
        if obj.name == QueueProvider.name:
            obj.name = spec
        return obj
    if not callable(obj):
        raise ProviderError(f"{spec!r} is not callable")
    get_context = None
    context_name = None
    if context is not None:
        ctx_obj = _import(context, "get_context")
        if not callable(ctx_obj):
            ctx_obj = getattr(ctx_obj, "get_context", None)
        if not callable(ctx_obj):
            raise ProviderError(f"{context!r} is not a get_context(method) callable")
        get_context = ctx_obj
        context_name = context
    return SpecProvider(obj, context=get_context, context_name=context_name, kind=code, name=spec)
