"""The test process's side of instrumentation: adopted processes and the session.

:class:`Instrumentation` installs :mod:`mpfault._runtime.instrument` for a harness and
takes in every process the code under test starts: a direct child (a ``Pool`` or
``ProcessPoolExecutor`` worker started by the test process) as soon as it starts, a
process started by a descendant when it announces itself in the run directory.  Each
one becomes an :class:`AdoptedChild` in ``harness.children``: its stack is in every
``Hang``, its death is told in words, and teardown terminates, kills and reaps it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._harness import Child
from ._runtime import instrument as _ins
from ._runtime.faults import Fault

if TYPE_CHECKING:
    from ._harness import Harness

__all__ = ["AdoptedChild", "Instrumentation"]


class _PidProcess:
    """The little of a ``multiprocessing`` process object a harness needs, for a process
    that is not the test process's child (started by a descendant): it is watched
    through a pidfd and /proc, and signalled, but never reaped here."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.name = name
        try:
            self._fd = os.pidfd_open(pid)
        except OSError:
            self._fd = -1

    @property
    def sentinel(self) -> int:
        return self._fd

    @property
    def exitcode(self) -> int | None:
        return None

    def is_alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return False
        return data[data.rfind(b")") + 2 :][:1] not in (b"Z", b"X")

    def join(self, timeout: float | None = None) -> None:
        import select

        if self._fd < 0 or not self.is_alive():
            return
        select.select([self._fd], [], [], timeout)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGTERM)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class AdoptedChild(Child):
    """A process the code under test started (a pool worker...), adopted by the harness.

    Like a :class:`Child` it has ``name``, ``pid``, ``exitcode``, ``is_alive()``,
    ``join()``, ``kill()``, ``terminate()``, ``pause()``/``resume()`` and ``stack()``;
    ``adopted`` is true.  It has no result of its own: :meth:`result` waits for it to
    end and raises :class:`ChildError` if it died by a signal or a non-zero exit code.
    """

    adopted = True

    def __init__(self, harness: Harness, process: Any, name: str) -> None:
        self._harness = harness
        self._start_method = harness.start_method
        self._limit = harness._limit
        self._hang = harness._hang
        self._last_operation = harness._last_operation
        self._process = process
        self._conn = None
        self.name = name
        self.out_path = ""
        self.err_path = ""
        self._outcome = None
        self._stack = None
        self._fd = -1
        target = getattr(process, "_target", None)
        self.target_name = getattr(target, "__qualname__", "") or ""

    def __repr__(self) -> str:
        return f"<adopted Child {self.name!r} pid={self.pid} exitcode={self.exitcode}>"

    def stack(self, timeout: float = 5.0) -> str:
        """The process's current Python stack, every thread (asked of the thread the
        instrumentation started in it)."""
        if not self.is_alive():
            return f"(process exited with code {self.exitcode})"
        addr = _ins.stack_address(self._harness.run_dir, self.pid)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        chunks: list[bytes] = []
        try:
            s.connect(addr)
            s.sendall(b"stack")
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError:
            return f"(no answer within {timeout}s: the process may hold the GIL in C code)"
        except OSError as e:
            return f"(no stack: {e.strerror or e})"
        finally:
            s.close()
        return b"".join(chunks).decode("utf-8", "replace")

    def output(self) -> tuple[str, str]:
        """An adopted process writes where its parent does: nothing is kept apart."""
        return "", ""

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the process to end; None if it exited with 0, else ChildError."""
        __tracebackhide__ = True
        self.join(timeout)
        if self.exitcode in (0, None):
            return None
        raise self._death_error()

    def fate(self) -> str:
        """What became of the process and what it last did, in words."""
        hist = self._harness.history
        evs = [e for e in hist.events if e.pid == self.pid]
        last = evs[-1] if evs else None
        alive = self.is_alive()
        code = None if alive else self.exitcode
        if alive:
            how = "is alive"
        elif code is None:
            how = "has ended"
        elif code < 0:
            how = f"was killed by {_signame(-code)}"
        else:
            how = f"exited with code {code}"
        text = f"{self.name} (pid {self.pid}) {how}"
        if last is None:
            return text + ", before any recorded operation"
        what = f"{last.op}() on {last.queue!r}"
        if last.end is None:
            if alive:
                return text + f", blocked in {what}"
            held = [w for m, w in hist.locks_held_by_the_dead() if m.pid == self.pid]
            which = ("task" if held[-1] == "cond" else held[-1]) if held else ""
            lock = f", holding its {which} lock" if held else ""
            return text + f" while in {what}{lock}"
        if alive:
            return text + f"; its last operation: {what}"
        if last.outcome == "raised":
            return text + f" right after {what} raised {last.exc}"
        val = None if last.op.startswith(("put", "send")) else last.result
        return text + f" right after {what} returned" + (f" {val}" if val else "")


class Instrumentation:
    """Instrumentation of one harness: install, adopt, report, restore."""

    def __init__(
        self,
        harness: Harness,
        faults: Iterable[tuple[str, Iterable[Fault]]] = (),
        formatters: tuple[Any, Any] = ((), ()),
    ) -> None:
        self.harness = harness
        self.by_name = tuple((glob, tuple(fs)) for glob, fs in faults)
        #: the (glob, callable) rules of ``key`` and ``show`` (``instrument.Config``)
        self.formatters = formatters
        self.on = False
        self.closing = False
        self._known: set[int] = set()
        self._pools: list[weakref.ref[Any]] = []

    def start(self) -> None:
        if _ins.active():
            from ._runtime.errors import MpfaultError

            raise MpfaultError("instrumentation is already on in this process (another harness)")
        h = self.harness
        config = _ins.Config(h.run, h.faults, self.by_name, *self.formatters)
        _ins.install(config, on_start=self._on_start)
        self.on = True

    def _on_start(self, proc: Any) -> None:
        cls = AdoptedChild
        if self.closing:  # started while the harness tears down: not to outlive it
            with contextlib.suppress(Exception):
                proc.kill()
        pid = proc.pid
        self._known.add(pid)
        self.harness.children.append(cls(self.harness, proc, proc.name))

    def sync(self) -> None:
        """Take in the processes descendants started (announced in the run directory)."""
        d = os.path.join(self.harness.run_dir, _ins.ADOPTED_DIR)
        try:
            names = os.listdir(d)
        except OSError:
            return
        cls = AdoptedChild
        known = self._known | {c.pid for c in self.harness.children if c._process.pid}
        for n in names:
            if not n.isdigit() or int(n) in known:
                continue
            try:
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    _ppid, name = f.read().splitlines()[:2]
            except (OSError, ValueError):
                continue
            pid = int(n)
            self._known.add(pid)
            self.harness.children.append(cls(self.harness, _PidProcess(pid, name), name))

    def adopted(self) -> list[Any]:
        self.sync()
        return [c for c in self.harness.children if getattr(c, "adopted", False)]

    def report(self) -> list[str]:
        """One line per adopted process: its fate and what it last did."""
        out = []
        for c in self.adopted():
            try:
                out.append("  " + c.fate())
            except Exception:  # a report must not fail
                out.append(f"  {c.name} (pid {c.pid})")
        return out

    def begin_close(self) -> None:
        """Teardown begins: processes started from now on are killed at once, and the
        pools made under instrumentation stop replacing the workers teardown kills."""
        self.closing = True
        self.sync()
        for pool in self._live_pools():
            with contextlib.suppress(Exception):
                from multiprocessing.pool import TERMINATE

                pool._worker_handler._state = TERMINATE

    def _finish_pools(self) -> None:
        """Terminate the pools (their workers are dead): bounded, and not wedged by a
        lock a killed worker held (``_help_stuff_finish`` takes the task queue's).

        A worker the pool started as teardown began is killed at once, maybe holding
        a lock again: the locks are freed while ``terminate()`` runs, and the workers
        it could not end in time are killed and reaped here.
        """
        import threading

        pools = self._live_pools()
        self._pools = []
        ends = []
        for pool in pools:
            _free_dead_locks(pool)
            t = threading.Thread(target=pool.terminate, daemon=True, name="mpfault-pool-end")
            t.start()
            ends.append((pool, t))
        deadline = time.monotonic() + self.harness.grace + 1.0
        for pool, t in ends:
            while t.is_alive() and time.monotonic() < deadline:
                t.join(0.05)
                _free_dead_locks(pool)
            for w in list(getattr(pool, "_pool", ()) or ()):
                with contextlib.suppress(Exception):
                    if w.exitcode is None:
                        w.kill()
                        w.join(max(0.1, deadline - time.monotonic()))

    def _live_pools(self) -> list[Any]:
        if self.on:
            self._pools = [weakref.ref(p) for p in _ins.pools()]
        return [p for p in (r() for r in self._pools) if p is not None]

    def end_close(self) -> None:
        """Teardown ends: the pools are terminated, everything is restored."""
        self._finish_pools()
        self.stop()

    def stop(self) -> None:
        """Restore what :meth:`start` patched (the adopted processes stay adopted); the
        queues made meanwhile no longer hold the interpreter's exit (``release_queues``)."""
        if self.on:
            self._live_pools()
            self.on = False
            _ins.release_queues()
            _ins.uninstall()
        for c in self.harness.children:
            p = c._process
            if isinstance(p, _PidProcess):
                p.close()


def _free_dead_locks(pool: Any) -> None:
    """Release a pool's queue read locks held now: at teardown only dead (or killed)
    workers can hold them."""
    for q in (getattr(pool, "_inqueue", None), getattr(pool, "_outqueue", None)):
        lock = getattr(q, "_rlock", None)
        if lock is None:
            continue
        if lock.acquire(False):
            lock.release()
        else:  # held by a process that is dead now
            with contextlib.suppress(Exception):
                lock.release()


def wait_gone(children: list[Any], timeout: float) -> None:
    """Wait (bounded) until none of ``children`` is alive."""
    end = time.monotonic() + timeout
    while any(c.is_alive() for c in children) and time.monotonic() < end:
        for c in children:
            if c.is_alive():
                c._process.join(max(0.0, min(0.05, end - time.monotonic())))
