"""The server of a served queue: a ``multiprocessing.managers`` server that records.

It runs in a process of its own, started by the harness (``Harness.serve``), and
serves one queue as ``get_queue`` to plain ``BaseManager`` clients.  Every
operation is recorded here, at the server, in the history of the client that made
it (a log per client, named by the program: see :mod:`peers`), through the same
``FaultQueue`` as every harness queue, so queue faults (``put@producer#3:kill(after)``)
apply here, selected by the client's name.  A ``kill`` or ``pause`` fault acts on
the client's process.

Network faults (:mod:`netfaults`) apply in a TCP proxy this process runs in front
of the server for each client they select: the harness gives that program the
proxy's address instead of the server's.

A connection that fails the authkey challenge is refused (as the manager does) and
the attempt is recorded (a ``refused`` mark).

This module imports nothing outside ``mpfault._runtime`` and never pytest.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickletools
import queue as _queue
import random
import signal
import socket
import struct
import sys
import threading
import time
from multiprocessing import connection as _connection
from multiprocessing.connection import Connection
from multiprocessing.managers import Server
from typing import Any

from . import bootstrap as _bootstrap
from . import peers as _peers
from . import state as _st
from .events import Recorder
from .fqueue import FaultQueue
from .netfaults import NetFault, as_net

__all__ = ["KINDS", "ServeConfig", "main"]

#: kind -> (the queue class, the operations a client may call)
_BASIC = ("put", "put_nowait", "get", "get_nowait", "qsize", "empty", "full")
KINDS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "Queue": (_queue.Queue, _BASIC),
    "JoinableQueue": (_queue.Queue, (*_BASIC, "task_done", "join")),
    "LifoQueue": (_queue.LifoQueue, _BASIC),
    "PriorityQueue": (_queue.PriorityQueue, _BASIC),
}
_QUEUE_CALLS = frozenset(KINDS["JoinableQueue"][1])


class ServeConfig:
    """What the server process needs (plain picklable data)."""

    def __init__(
        self,
        name: str,
        kind: str,
        maxsize: int,
        address: tuple[str, int],
        authkey: bytes,
        run: _st.RunInfo,
        faults: list[Any],
        formatters: bytes = b"",
    ) -> None:
        self.name = name
        self.kind = kind
        self.maxsize = maxsize
        self.address = address
        self.authkey = authkey
        self.run = run
        #: the plan (``Fault`` objects; those of op ``net`` apply in the proxy)
        self.faults = faults
        #: ``key`` and ``show`` (see :func:`pickle_formatters`), loaded by the server
        self.formatters = formatters


def pickle_formatters(key: Any, show: Any) -> bytes:
    """``key``/``show`` for the server: pickled apart from the config, with the test
    process's ``sys.path`` (the server imports their modules from there), so that one
    that does not load leaves the defaults and a note, not a server that cannot start."""
    if key is None and show is None:
        return b""
    import pickle
    import sys

    return pickle.dumps((list(sys.path), pickle.dumps((key, show))))


def load_formatters(data: bytes) -> tuple[Any, Any, str]:
    """``(key, show, why not)`` from :func:`pickle_formatters`'s bytes."""
    if not data:
        return None, None, ""
    import pickle
    import sys

    path, inner = pickle.loads(data)
    sys.path.extend(p for p in path if p not in sys.path)
    try:
        key, show = pickle.loads(inner)
    except Exception as e:
        return (
            None,
            None,
            (
                f"key/show could not be loaded in the server ({type(e).__name__}: {e}); "
                "default key and repr used"
            ),
        )
    return key, show, ""


# -- clients ------------------------------------------------------------------------------
class _ClientState(_st.ProcessState):
    """The runtime of one client, inside the server: its name, pid and history."""

    own_process = False

    def __init__(self, run: _st.RunInfo, process: str, pid: int, recorder: Recorder) -> None:
        self.run = run
        self.pid = pid
        self.process = process
        self.is_controller = pid == run.controller_pid
        self.recorder = recorder
        self._counters = {}
        self._rngs = {}
        self._gate_seq = 0
        self.lock = threading.RLock()
        self.plan_marked = False

    def kill_self(self, sig: int) -> None:
        """A ``kill`` fault at the server kills the client's process (never the server)."""
        if self.pid > 0 and not self.is_controller:
            try:
                os.kill(self.pid, sig)
            except OSError:
                pass

    def exit_self(self, code: int) -> None:  # pragma: no cover - refused by serve()
        """No ``exit`` at a server: a program's exit code is its own."""

    def pause_self(self, seconds: float) -> None:
        """Stop the client's process for ``seconds`` (SIGSTOP ... SIGCONT)."""
        if self.pid <= 0:
            return
        os.kill(self.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)  # the fault's duration, not synchronisation
        finally:
            os.kill(self.pid, signal.SIGCONT)


class _ClientQueue(FaultQueue):
    """The served queue as one client sees it: recorded in the client's history."""

    def __init__(
        self,
        q: Any,
        plan: list[Any],
        name: str,
        cstate: _ClientState,
        specs: list[str],
        formats: tuple[Any, Any, str] = (None, None, ""),
    ) -> None:
        self._cstate = cstate
        self._specs = specs
        self._load_error = formats[2]
        super().__init__(q, plan, name, cstate.run, key=formats[0], show=formats[1])

    def _state(self) -> _st.ProcessState:
        st = self._cstate
        if not st.plan_marked:
            st.plan_marked = True
            st.recorder.mark("plan", self._name, json.dumps(self._specs))
            if self._load_error:
                st.recorder.mark("note", self._name, self._load_error)
        return st


class _Client:
    def __init__(self, name: str, pid: int, fq: _ClientQueue, state: _ClientState) -> None:
        self.name = name
        self.pid = pid
        self.fq = fq
        self.state = state
        self.connected = False


class _Dispatch:
    """What ``get_queue`` returns: the manager looks each method up on it per call, and
    gets the calling client's operation (recorded in its history, faulted by its name)."""

    def __init__(self, server: _Server) -> None:
        self._server = server


def _dispatcher(ops: tuple[str, ...]) -> type[_Dispatch]:
    """A ``_Dispatch`` class whose attribute ``op`` is the calling client's ``fq.op`` (a
    property: the manager then calls the recording operation itself)."""

    def lookup(op: str) -> property:
        return property(lambda self: getattr(self._server._client().fq, op))

    return type("ServedQueue", (_Dispatch,), {op: lookup(op) for op in ops})


# -- the server ---------------------------------------------------------------------------
class _Server(Server):
    """A manager server that names its clients and records what they do."""

    def __init__(self, cfg: ServeConfig) -> None:
        cls, ops = KINDS[cfg.kind]
        self.cfg = cfg
        self.queue = cls(cfg.maxsize)
        self.dispatch = _dispatcher(ops)(self)
        self.specs = [str(f) for f in cfg.faults]
        #: key, show and why they could not be loaded ("" when they could, or none)
        self.formats = load_formatters(cfg.formatters)
        #: the network faults, by plan index
        self.net = [(i, as_net(f)) for i, f in enumerate(cfg.faults) if f.op == "net"]
        self._tls = threading.local()
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, int], _Client] = {}
        self._files = itertools.count(1)
        self.proxied: dict[tuple[str, int], tuple[str, int]] = {}
        self.nets: dict[str, _NetState] = {}
        self.proxies: dict[str, _Proxy] = {}
        registry: dict[str, Any] = {"get_queue": (lambda: self.dispatch, ops, None, None)}
        super().__init__(registry, cfg.address, cfg.authkey, "pickle")
        #: (host, port) the server listens on
        self.tcp: tuple[str, int] = tuple(self.address)  # type: ignore[arg-type,assignment]

    # -- who is calling -----------------------------------------------------------------
    def client(self, name: str, pid: int) -> _Client:
        with self._lock:
            c = self._clients.get((name, pid))
            if c is None:
                run = self.cfg.run
                rec = Recorder(
                    os.path.join(run.run_dir, "events"),
                    name,
                    pid,
                    filename=f"served-{os.getpid()}-{next(self._files)}.ev",
                )
                st = _ClientState(run, name, pid, rec)
                fq = _ClientQueue(
                    self.queue, list(self.cfg.faults), self.cfg.name, st, self.specs, self.formats
                )
                c = _Client(name, pid, fq, st)
                self._clients[(name, pid)] = c
            return c

    def identify(self, peer: tuple[str, int], local: tuple[str, int]) -> _Client:
        known = self.proxied.get((peer[0], peer[1]))
        if known is not None:
            return self.client(*known)
        candidates = _peers.registered(self.cfg.run.run_dir)
        pid = _peers.find_peer_pid(peer, local, candidates)
        if pid is not None:
            named = _peers.name_of(pid, candidates)
            if named is not None:
                return self.client(named[0], pid)
            return self.client(f"pid-{pid}", pid)
        return self.client(f"client@{peer[0]}", 0)

    def _client(self) -> _Client:
        c: _Client | None = getattr(self._tls, "client", None)
        if c is None:  # pragma: no cover - every serving thread is named first
            c = self.client("unknown", 0)
        return c

    # -- connections ----------------------------------------------------------------------
    def _handle_request(self, c: Connection) -> None:
        """The manager's ``_handle_request``, with the client named first and a
        refused authkey recorded."""
        try:
            s = socket.socket(fileno=os.dup(c.fileno()))
            try:
                peer, local = s.getpeername(), s.getsockname()
            finally:
                s.close()
            client = self.identify(peer, local)
        except OSError:
            return
        self._tls.client = client
        try:
            _connection.deliver_challenge(c, self.authkey)  # type: ignore[attr-defined]
        except (EOFError, OSError):
            return
        except Exception as e:
            client.state.recorder.mark(
                "refused",
                self.cfg.name,
                f"{type(e).__name__}: {e} (from {peer[0]}:{peer[1]})",
            )
            return
        request = None
        try:
            _connection.answer_challenge(c, self.authkey)  # type: ignore[attr-defined]
            request = c.recv()
            _ignore, funcname, args, kwds = request
            assert funcname in self.public, f"{funcname!r} unrecognized"
            func = getattr(self, funcname)
        except Exception:
            import traceback

            msg: tuple[str, Any] = ("#TRACEBACK", traceback.format_exc())
        else:
            if funcname == "accept_connection" and not client.connected:
                client.connected = True
                client.state.recorder.mark(
                    "connect", self.cfg.name, f"{client.name} from {peer[0]}:{peer[1]}"
                )
            try:
                result = func(c, *args, **kwds)
            except Exception:
                import traceback

                msg = ("#TRACEBACK", traceback.format_exc())
            else:
                msg = ("#RETURN", result)
        try:
            c.send(msg)
        except Exception:
            pass

    # -- network faults -----------------------------------------------------------------
    def net_for(self, name: str) -> _NetState:
        with self._lock:
            n = self.nets.get(name)
            if n is None:
                faults = [(i, f) for i, f in self.net if f.selects(name)]
                n = _NetState(self, name, faults)
                self.nets[name] = n
            return n

    def open_proxy(self, name: str) -> tuple[str, int]:
        with self._lock:
            p = self.proxies.get(name)
        if p is None:
            p = _Proxy(self, name, self.net_for(name))
            with self._lock:
                self.proxies[name] = p
        return p.address

    def control_loop(self, control: Connection) -> None:
        while True:
            try:
                msg = control.recv()
            except (EOFError, OSError):
                os._exit(0)  # the harness closed the channel (teardown) or died
            try:
                if msg[0] == "proxy":
                    reply: Any = ("ok", self.open_proxy(msg[1]))
                elif msg[0] == "partition":
                    self.net_for(msg[1]).partition(msg[2], "by the test")
                    reply = ("ok", None)
                elif msg[0] == "heal":
                    self.net_for(msg[1]).heal()
                    reply = ("ok", None)
                elif msg[0] == "qsize":
                    reply = ("ok", self.queue.qsize())
                else:
                    reply = ("error", f"unknown request {msg[0]!r}")
            except Exception as e:
                reply = ("error", f"{type(e).__name__}: {e}")
            try:
                control.send(reply)
            except OSError:
                os._exit(0)


# -- the proxy and its toxics -------------------------------------------------------------
class _NetState:
    """The network faults of one client, across its connections through the proxy."""

    def __init__(self, server: _Server, name: str, faults: list[tuple[int, NetFault]]) -> None:
        self.server = server
        self.name = name
        self.faults = faults
        self.calls = 0
        self.cond = threading.Condition()
        self.blocked_until = 0.0
        self.fired: set[int] = set()
        self.pid = 0
        run = server.cfg.run
        self.rngs = {
            i: random.Random(_st.derive_seed(run.seed, run.test_id, "net", name, i))
            for i, _ in faults
        }

    def _rec(self) -> Recorder:
        return self.server.client(self.name, self.pid).state.recorder

    def note(self, index: int, fault: NetFault, detail: str) -> None:
        self._rec().mark("fault", self.server.cfg.name, f"net: {detail} [{fault}]", index)

    def partition(self, seconds: float | None, why: str) -> None:
        with self.cond:
            until = math.inf if seconds is None else time.monotonic() + seconds
            self.blocked_until = max(self.blocked_until, until)
        how = "until healed" if seconds is None else f"for {seconds * 1000:.4g} ms"
        self._rec().mark("net", self.server.cfg.name, f"partition {how} ({why})")
        if seconds is not None:
            t = threading.Timer(seconds, self._healed_at, args=(until,))
            t.daemon = True
            t.start()

    def _healed_at(self, until: float) -> None:
        with self.cond:
            if self.blocked_until != until:
                return
            self.blocked_until = 0.0
            self.cond.notify_all()
        self._rec().mark("net", self.server.cfg.name, "partition healed")

    def heal(self) -> None:
        with self.cond:
            was = self.blocked_until
            self.blocked_until = 0.0
            self.cond.notify_all()
        if was:
            self._rec().mark("net", self.server.cfg.name, "partition healed (by the test)")

    def wait_open(self) -> None:
        with self.cond:
            while True:
                left = self.blocked_until - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(None if math.isinf(left) else left)

    def on_start(self, link: _Link) -> None:
        """A connection starts: faults without a call index that fire once fire now."""
        for index, f in self.faults:
            if f.first is None and f.one_shot:
                self._fire(index, f, link)

    def on_call(self, link: _Link) -> None:
        """The client sends a queue call: count it, fire what starts at it."""
        with self.cond:
            self.calls += 1
            n = self.calls
        for index, f in self.faults:
            if f.first is not None and f.one_shot and n == f.first:
                self._fire(index, f, link)

    def _fire(self, index: int, f: NetFault, link: _Link) -> None:
        with self.cond:
            if index in self.fired:
                return
            self.fired.add(index)
        if f.action == "partition":
            secs = f.args[0]
            self.note(index, f, "partition " + ("until healed" if secs is None else f"{secs:g}s"))
            self.partition(secs, str(f))
        else:
            self.note(index, f, f"reset after {f.args[0]} more bytes")
            link.reset_after(f.args[0])

    def shape(self, size: int) -> None:
        """Hold a message of ``size`` bytes as the latency and bandwidth faults say."""
        calls = self.calls
        for index, f in self.faults:
            if f.one_shot or not f.active_at(calls):
                continue
            if index not in self.fired:
                with self.cond:
                    first = index not in self.fired
                    self.fired.add(index)
                if first:
                    self.note(index, f, f.action)
            if f.action == "latency":
                d, j = f.args
                time.sleep(d + (self.rngs[index].uniform(0.0, j) if j else 0.0))  # the fault
            else:
                time.sleep(size / f.args[0])  # the fault: bytes at the rate


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(s: socket.socket) -> tuple[bytes, bytes] | None:
    """One ``multiprocessing.connection`` message: (header, payload), None at EOF."""
    head = _recv_exact(s, 4)
    if head is None:
        return None
    (size,) = struct.unpack("!i", head)
    if size == -1:
        more = _recv_exact(s, 8)
        if more is None:
            return None
        head += more
        (size,) = struct.unpack("!Q", more)
    body = _recv_exact(s, size) if size else b""
    if body is None:
        return None
    return head, body


def _method_of(payload: bytes) -> str | None:
    """The method a manager request calls (its pickle read without running it)."""
    strings: list[str] = []
    none_first = False
    try:
        for opcode, arg, _pos in pickletools.genops(payload):
            if opcode.name == "NONE" and not strings:
                none_first = True
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                strings.append(arg)
                if len(strings) == 2 or (none_first and strings):
                    break
    except Exception:
        return None
    if none_first:
        return strings[0] if strings else None
    return strings[1] if len(strings) > 1 else None


class _Link:
    """One client connection through the proxy: two pumps, toxics in between."""

    def __init__(self, net: _NetState, down: socket.socket, up: socket.socket) -> None:
        self.net = net
        self.down = down
        self.up = up
        self._reset_left: int | None = None
        self._lock = threading.Lock()
        self._closed = False

    def reset_after(self, nbytes: int) -> None:
        with self._lock:
            self._reset_left = nbytes
        if nbytes <= 0:
            self._reset()

    def _reset(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        for s in (self.down, self.up):
            try:
                s.close()
            except OSError:
                pass
        self.net._rec().mark("net", self.net.server.cfg.name, "connection reset")

    def _budget(self, data: bytes) -> bytes | None:
        """What of ``data`` may pass before a pending reset; None: reset now."""
        with self._lock:
            left = self._reset_left
            if left is None:
                return data
            if len(data) < left:
                self._reset_left = left - len(data)
                return data
            self._reset_left = 0
        return data[:left]

    def pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        while True:
            frame = _read_frame(src)
            if frame is None:
                break
            head, body = frame
            if upstream and _method_of(body) in _QUEUE_CALLS:
                self.net.on_call(self)
            self.net.wait_open()
            self.net.shape(len(head) + len(body))
            data = self._budget(head + body)
            try:
                if data:
                    dst.sendall(data)
            except OSError:
                break
            if data is not None and self._reset_left == 0:
                self._reset()
                return
        with self._lock:
            closed = self._closed
        if not closed:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class _Proxy:
    """A listening port for one client; every connection to it goes to the server."""

    def __init__(self, server: _Server, name: str, net: _NetState) -> None:
        self.server = server
        self.name = name
        self.net = net
        host = server.tcp[0]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{name}").start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(down,), daemon=True).start()

    def _serve(self, down: socket.socket) -> None:
        try:
            candidates = _peers.registered(self.server.cfg.run.run_dir)
            pid = _peers.find_peer_pid(down.getpeername(), down.getsockname(), candidates) or 0
            if self.net.pid == 0:
                self.net.pid = pid
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            up.bind((self.server.tcp[0], 0))
            key = up.getsockname()[:2]
            self.server.proxied[(key[0], key[1])] = (self.name, pid)
            up.connect(self.server.tcp)
        except OSError:
            down.close()
            return
        link = _Link(self.net, down, up)
        self.net.on_start(link)
        threading.Thread(target=link.pump, args=(up, down, False), daemon=True).start()
        link.pump(down, up, True)


def main(cfg: ServeConfig, control: Connection) -> None:
    """The server process: serve until the harness closes the control channel."""
    _bootstrap.arm_helper(cfg.run.controller_pid)
    srv = _Server(cfg)
    control.send(("address", srv.address))
    threading.Thread(target=srv.control_loop, args=(control,), daemon=True).start()
    try:
        srv.serve_forever()
    finally:
        sys.stdout.flush()
        os._exit(0)


def entry() -> None:
    """``python -c 'from mpfault._runtime.served import entry; entry()' FD``: the
    server's process, started by the harness, its configuration read from ``FD``."""
    import pickle

    control = Connection(int(sys.argv[1]))
    cfg = pickle.loads(control.recv_bytes())
    main(cfg, control)
