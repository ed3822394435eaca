"""Per-process runtime state: the event recorder, shared fault counters, seeded
random streams, gates and self-pauses.

One :class:`ProcessState` exists per process and run directory.  It is created
lazily at the first queue operation of a process, and invalidated in a forked
child by an at-fork hook, so the hot path never calls ``os.getpid()``.
"""

from __future__ import annotations

import fcntl
import mmap
import multiprocessing
import os
import signal
import struct
import threading
import time
import warnings
from typing import TYPE_CHECKING, NamedTuple

from .events import Recorder

if TYPE_CHECKING:
    import random

# hashlib, json, random and socket are imported where they are used: a child that
# only puts and gets (no probabilistic fault, no gate) never needs them, and a
# spawn child pays for every module it imports.

__all__ = [
    "GATES_DIR",
    "ProcessState",
    "RunInfo",
    "derive_seed",
    "generation",
    "get_state",
]

GATES_DIR = "gates"
COORD_SOCK = "coord.sock"

#: a number that changes in every forked child (read directly on the hot path)
fork_generation = 0
_lock = threading.Lock()


def _after_fork() -> None:
    global fork_generation, _lock
    fork_generation += 1
    _states.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def generation() -> int:
    """A number that changes in every forked child (cheap staleness check)."""
    return fork_generation


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (same in every process and run)."""
    import hashlib

    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


class RunInfo(NamedTuple):
    """What every process needs to know about the test a queue belongs to."""

    run_dir: str
    seed: int
    #: pid of the test process (the controller): faults that kill, exit, pause
    #: or gate never fire there
    controller_pid: int
    test_id: str = ""


class _Counters:
    """Shared per-queue counters: a file of int64 pairs (matches, fires) per fault term.

    Read-modify-write under ``flock``, which the kernel releases if the holder
    dies, so a SIGKILLed process never wedges the counters.
    """

    _PAIR = struct.Struct("<qq")

    def __init__(self, path: str, slots: int) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = max(slots, 1) * self._PAIR.size
        if os.fstat(self._fd).st_size < size:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size < size:
                    os.ftruncate(self._fd, size)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mm = mmap.mmap(self._fd, size)

    def lock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def get(self, slot: int) -> tuple[int, int]:
        m, f = self._PAIR.unpack_from(self._mm, slot * self._PAIR.size)
        return int(m), int(f)

    def set(self, slot: int, matches: int, fires: int) -> None:
        self._PAIR.pack_into(self._mm, slot * self._PAIR.size, matches, fires)


class ProcessState:
    """The runtime of one process for one run directory."""

    #: whether faults act on the process making the call (a served queue's server
    #: acts for its client instead: it never takes a queue's lock for a kill)
    own_process = True

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self.pid = os.getpid()
        self.process = multiprocessing.current_process().name
        self.is_controller = self.pid == run.controller_pid
        self.recorder = Recorder(os.path.join(run.run_dir, "events"), self.process, self.pid)
        self._counters: dict[str, _Counters] = {}
        self._rngs: dict[tuple[str, int], random.Random] = {}
        self._gate_seq = 0
        self.lock = threading.RLock()

    # -- counters ---------------------------------------------------------------
    def counters(self, queue: str, slots: int) -> _Counters:
        c = self._counters.get(queue)
        if c is None:
            import hashlib

            d = os.path.join(self.run.run_dir, "counters")
            os.makedirs(d, exist_ok=True)
            safe = hashlib.sha1(queue.encode()).hexdigest()[:16]
            c = _Counters(os.path.join(d, safe), slots)
            self._counters[queue] = c
        return c

    def rng(self, queue: str, index: int) -> random.Random:
        r = self._rngs.get((queue, index))
        if r is None:
            import random

            r = random.Random(
                derive_seed(self.run.seed, self.run.test_id, queue, index, self.process)
            )
            self._rngs[(queue, index)] = r
        return r

    # -- process-level actions -------------------------------------------------------
    def kill_self(self, sig: int) -> None:
        """A ``kill`` fault: this process kills itself (a served queue's server kills
        the client instead)."""
        os.kill(os.getpid(), sig)

    def exit_self(self, code: int) -> None:
        """An ``exit`` fault: ``os._exit(code)``."""
        os._exit(code)

    def pause_self(self, seconds: float) -> None:
        """Stop this whole process (every thread) with SIGSTOP for ``seconds``.

        A forked helper stops us, waits, resumes us, and only then writes to a
        pipe we block on, so no operation runs before the pause has ended.
        """
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the helper; coverage cannot see it
            try:
                os.close(r)
                target = os.getppid()
                os.kill(target, signal.SIGSTOP)
                time.sleep(seconds)  # the fault's duration, not synchronisation
                if os.getppid() == target:
                    os.kill(target, signal.SIGCONT)
                os.write(w, b"x")
            finally:
                os._exit(0)
        os.close(w)
        try:
            os.read(r, 1)
        finally:
            os.close(r)
            os.waitpid(pid, 0)

    def wait_gate(self, name: str) -> None:
        """Announce arrival at gate ``name`` and wait until the test releases it."""
        import json
        import socket

        gdir = os.path.join(self.run.run_dir, GATES_DIR)
        self._gate_seq += 1
        reply = os.path.join(gdir, f"r{self.pid}-{self._gate_seq}.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.bind(reply)
            msg = {"gate": name, "pid": self.pid, "process": self.process, "reply": reply}
            s.sendto(json.dumps(msg).encode(), os.path.join(gdir, COORD_SOCK))
            if os.path.exists(os.path.join(gdir, f"{name}.released")):
                return
            s.recv(64)
        finally:
            s.close()
            try:
                os.unlink(reply)
            except OSError:
                pass


_states: dict[str, ProcessState] = {}


def get_state(run: RunInfo) -> ProcessState:
    """The state of this process for ``run`` (created on first use)."""
    st = _states.get(run.run_dir)
    if st is None:
        with _lock:
            st = _states.get(run.run_dir)
            if st is None:
                st = ProcessState(run)
                _states[run.run_dir] = st
    return st


def forget(run_dir: str) -> None:
    """Drop (and close) this process's state for a finished run."""
    st = _states.pop(run_dir, None)
    if st is not None:
        st.recorder.close()
