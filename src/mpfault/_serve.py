"""Served queues: a queue that independently started programs share through a manager.

``Harness.serve()`` starts a ``multiprocessing.managers`` server in a supervised
process of the harness (see :mod:`mpfault._runtime.served`) and returns a
:class:`Served`: its address and the harness's authkey.  Programs
(``Harness.program``) get both in their environment (:data:`ENV_AUTHKEY`,
:data:`ENV_QUEUE`, ``MPFAULT_QUEUE_<NAME>``).  Every operation is recorded at the
server, named by the program that made the connection; queue faults apply there,
network faults in a proxy in front of it.

It does not import pytest.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import MpfaultError
from ._runtime import peers as _peers
from ._runtime import served as _served
from ._runtime.errors import FaultSpecError
from ._runtime.netfaults import NetFault, as_net

if TYPE_CHECKING:
    from ._harness import Harness
    from ._program import Program

__all__ = [
    "ENV_AUTHKEY",
    "ENV_PROGRAM",
    "ENV_QUEUE",
    "SERVE_KINDS",
    "Served",
    "env_name",
]

#: the authkey of the harness's served queues, in hex (``bytes.fromhex``)
ENV_AUTHKEY = "MPFAULT_AUTHKEY"
#: ``host:port`` of the first served queue (``MPFAULT_QUEUE_<NAME>``: of each, by name)
ENV_QUEUE = "MPFAULT_QUEUE"
#: the program's own name (what fault selectors ``who=`` match)
ENV_PROGRAM = "MPFAULT_PROGRAM"
SERVE_KINDS = tuple(_served.KINDS)

_START_TIMEOUT = 30.0


def env_name(queue: str) -> str:
    """The environment variable holding the address of served queue ``queue``."""
    return f"{ENV_QUEUE}_" + re.sub(r"[^A-Za-z0-9]", "_", queue).upper()


class Served:
    """A served queue: where it listens and the key it wants.

    Unpacks as ``address, authkey = h.serve()``.  ``client()`` gives the test
    process a manager proxy of it (recorded as ``MainProcess``).
    """

    def __init__(
        self,
        harness: Harness,
        name: str,
        kind: str,
        address: tuple[str, int],
        authkey: bytes,
        process: Any,
        control: Any,
        net: list[NetFault],
    ) -> None:
        self._harness = harness
        self.name = name
        self.kind = kind
        #: (host, port) the server listens on
        self.address = address
        #: the authkey clients must present
        self.authkey = authkey
        #: the network faults of this queue
        self.net = tuple(net)
        self._process = process
        self._control = control
        self._managers: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        return iter((self.address, self.authkey))

    def __repr__(self) -> str:
        return f"<Served {self.name!r} {self.kind} at {self.host_port}>"

    @property
    def host_port(self) -> str:
        """``host:port``, as in the programs' environment."""
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def pid(self) -> int:
        """The server process's pid."""
        return int(self._process.pid)

    def _ask(self, *msg: Any) -> Any:
        if self._control is None:
            raise MpfaultError(f"served queue {self.name!r} is closed")
        self._control.send(msg)
        if not self._control.poll(_START_TIMEOUT):
            raise MpfaultError(f"served queue {self.name!r}: the server does not answer")
        status, value = self._control.recv()
        if status != "ok":
            raise MpfaultError(f"served queue {self.name!r}: {value}")
        return value

    def address_for(self, program: str) -> tuple[str, int]:
        """Where program ``program`` connects: the server, or the proxy that carries its
        network faults."""
        if any(f.selects(program) for f in self.net):
            host, port = self._ask("proxy", program)
            return (host, int(port))
        return self.address

    def partition(self, who: str, seconds: float | None = None) -> None:
        """Cut client ``who`` off the server now, for ``seconds`` (None: until :meth:`heal`).

        Only a client whose traffic goes through the proxy (one that a network fault
        of this queue selects) can be cut off."""
        self._ask("partition", who, seconds)

    def heal(self, who: str) -> None:
        """End a partition of client ``who``."""
        self._ask("heal", who)

    def qsize(self) -> int:
        """How many items the server holds now."""
        return int(self._ask("qsize"))

    def client(self) -> Any:
        """A manager proxy of the queue, for the test process (recorded as ``MainProcess``)."""
        from multiprocessing.managers import BaseManager

        class _M(BaseManager):
            pass

        _M.register("get_queue")
        m = _M(address=self.address, authkey=self.authkey)
        m.connect()
        self._managers.append(m)
        return m.get_queue()  # type: ignore[attr-defined]

    def refused(self) -> list[Any]:
        """The connections refused so far (the ``refused`` marks of the history)."""
        return [m for m in self._harness.history.marks if m.kind == "refused"]

    def _close(self) -> None:
        self._managers.clear()
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
            self._control = None
        p = self._process
        # the records are in the page cache already: nothing to wait for
        with contextlib.suppress(OSError):
            p.kill()
        with contextlib.suppress(Exception):
            p.wait(5.0)


class Parts(NamedTuple):
    """What the harness hands its served queues and programs (its own, not to be
    reached into from here)."""

    harness: Harness
    check_open: Callable[[], None]
    validate: Callable[[Any, str], None]
    as_faults: Callable[[Any, str], list[Any]]
    #: the names of the harness's children and programs (one namespace)
    names: set[str]
    limit: Callable[[float | None], float]
    hang: Callable[[str, float], Exception]


class ServeState:
    """The served queues and programs of one harness."""

    def __init__(self, harness: Harness, parts: Parts) -> None:
        self.harness = harness
        self.parts = parts
        self.served: list[Served] = []
        self.programs: list[Program] = []
        self.authkey = os.urandom(32)
        self.outputs: dict[str, tuple[str, str]] = {}
        self.counter = 0
        self.noted: set[int] = set()
        _peers.register(harness.run_dir, os.getpid(), "MainProcess", descendants=False)

    def note_children(self) -> None:
        """Name the harness's children for the servers (they are the test's descendants)."""
        for c in self.harness.children:
            if c.process.pid is not None and c.pid not in self.noted:
                self.noted.add(c.pid)
                _peers.register(self.harness.run_dir, c.pid, c.name, descendants=False)

    def env(self, program: str) -> dict[str, str]:
        """The variables a program gets: every served queue's address, the authkey."""
        out = {ENV_PROGRAM: program}
        if self.served:
            out[ENV_AUTHKEY] = self.served[0].authkey.hex()
        for i, s in enumerate(self.served):
            host, port = s.address_for(program)
            out[env_name(s.name)] = f"{host}:{port}"
            if i == 0:
                out[ENV_QUEUE] = f"{host}:{port}"
        return out


def state(parts: Parts) -> ServeState:
    """The harness's served queues and programs (made on first use)."""
    harness = parts.harness
    st = current(harness)
    if st is None:
        st = ServeState(harness, parts)
        harness.__dict__["_serve_state"] = st
    return st


def current(harness: Harness) -> ServeState | None:
    """The harness's served queues and programs, if it has any."""
    st: ServeState | None = harness.__dict__.get("_serve_state")
    return st


def _check_address(address: Any, allow_remote: bool) -> tuple[str, int]:
    try:
        host, port = address
        host, port = str(host), int(port)
    except (TypeError, ValueError):
        raise MpfaultError(f"serve(): address {address!r} is not a (host, port) pair") from None
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        raise MpfaultError(f"serve(): cannot resolve the host of address {address!r}") from None
    if not ip.is_loopback and not allow_remote:
        raise MpfaultError(
            f"serve(): address {address!r} is not a loopback address: a served queue "
            "listens on loopback unless serve(allow_remote=True) says otherwise (anyone "
            "who can reach it and knows the authkey can unpickle data into the server)"
        )
    return str(ip), port


def serve(
    parts: Parts,
    kind: str = "Queue",
    maxsize: int = 0,
    address: tuple[str, int] = ("127.0.0.1", 0),
    authkey: bytes | None = None,
    *,
    name: str | None = None,
    faults: Iterable[Any] = (),
    allow_remote: bool = False,
    key: Any = None,
    show: Any = None,
) -> Served:
    """``Harness.serve``: start a served queue (see :class:`Served`)."""
    harness = parts.harness
    parts.check_open()
    st = state(parts)
    if kind not in _served.KINDS:
        raise MpfaultError(
            f"serve(): unknown kind {kind!r} (expected one of: {', '.join(SERVE_KINDS)})"
        )
    if not isinstance(maxsize, int) or maxsize < 0:
        raise MpfaultError(f"serve(): maxsize must be an int >= 0, not {maxsize!r}")
    host, port = _check_address(address, allow_remote)
    if authkey is not None and not isinstance(authkey, bytes):
        raise MpfaultError("serve(): authkey must be bytes")
    st.counter += 1
    if name is None:
        name = f"s{st.counter}"
    if any(s.name == name for s in st.served) or any(q.name == name for q in harness.queues):
        raise MpfaultError(f"serve(): a queue named {name!r} already exists in this test")
    where = f"faults of served queue {name!r}"
    plan = list(harness.faults) + parts.as_faults(faults, where)
    net: list[NetFault] = []
    for f in plan:
        if f.op == "net":
            try:
                net.append(as_net(f))
            except FaultSpecError as e:
                raise MpfaultError(f"{where}: {e}") from None
        parts.validate(f, where)
        for term in f.terms():
            if term.action == "exit":
                raise MpfaultError(
                    f"{where}: fault '{f}' cannot fire at a server (a program's exit code "
                    "is its own): use kill"
                )
    key, show = harness._formatters(name, key, show, "serve")
    cfg = _served.ServeConfig(
        name,
        kind,
        maxsize,
        (host, port),
        st.authkey if authkey is None else authkey,
        harness.run,
        plan,
        formatters=_served.pickle_formatters(key, show),
    )
    served = _start_server(harness, cfg, net)
    st.served.append(served)
    return served


def _start_server(harness: Harness, cfg: _served.ServeConfig, net: list[NetFault]) -> Served:
    """Start the server in a fresh interpreter (nothing of the test process inherited)."""
    import pickle
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    ours, theirs = socket.socketpair()
    err_path = os.path.join(harness.run_dir, "out", f"serve-{cfg.name}.err")
    try:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from mpfault._runtime.served import entry; entry()",
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
    except OSError as e:
        ours.close()
        raise MpfaultError(f"serve(): could not start the server of {cfg.name!r}: {e}") from e
    finally:
        theirs.close()
    control = Connection(ours.detach())
    msg: Any = None
    try:
        control.send_bytes(pickle.dumps(cfg))
        if control.poll(_START_TIMEOUT):
            msg = control.recv()
    except (EOFError, OSError):
        msg = None
    if not msg or msg[0] != "address":
        proc.kill()
        proc.wait(5.0)
        control.close()
        with open(err_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-2000:]
        raise MpfaultError(
            f"serve(): the server of {cfg.name!r} did not start (exit code {proc.poll()})"
            + (f":\n{tail}" if tail else "")
        )
    return Served(harness, cfg.name, cfg.kind, tuple(msg[1]), cfg.authkey, proc, control, net)


def close(harness: Harness) -> list[str]:
    """Teardown: stop the programs, then the servers; keep the programs' output."""
    st = current(harness)
    if st is None:
        return []
    problems: list[str] = []
    try:
        from ._program import stop_all

        problems += stop_all(st.programs, harness.grace)
    except Exception as e:  # teardown goes on
        problems.append(f"stopping programs: {type(e).__name__}: {e}")
    st.outputs = {p.name: p.output() for p in st.programs}
    for s in st.served:
        try:
            s._close()
        except Exception as e:
            problems.append(f"stopping served queue {s.name!r}: {type(e).__name__}: {e}")
    return problems


def describe(harness: Harness, history: Any = None) -> str:
    """What a report says about the harness's served queues and programs: each queue's
    traffic by client, what was lost (or that nothing was), refused connections, the
    network faults fired, and each program's fate with its last operation."""
    st = current(harness)
    if st is None:
        return ""
    hist = harness.history if history is None else history
    lines: list[str] = []
    for s in st.served:
        evs = [e for e in hist.events if e.queue == s.name]
        lines.append(f"served queue {s.name!r} ({s.kind} at {s.host_port}):")
        by: dict[str, list[int]] = {}
        for e in evs:
            counts = by.setdefault(e.process, [0, 0])
            if e.outcome == "ok" and e.op.startswith("put"):
                counts[0] += 1
            elif e.outcome == "ok" and e.op.startswith("get"):
                counts[1] += 1
        for who, (puts, gets) in by.items():
            lines.append(f"  {who}: {puts} put, {gets} got (acknowledged by the server)")
        lost = hist.lost(s.name)
        if lost:
            shown = ", ".join(f"{i.value} (by {i.process})" for i in lost[:10])
            more = f", ... {len(lost) - 10} more" if len(lost) > 10 else ""
            lines.append(
                f"  put, never got: {len(lost)} item(s) (in the server's queue at the end, "
                f"unless a drop fault took them): {shown}{more}"
            )
        else:
            lines.append(
                "  nothing lost: every item the server acknowledged was got (what a client "
                "sent that never reached the server is not in the history)"
            )
        for p in st.programs:
            code = p.exitcode
            mine = [e for e in evs if e.pid == p.pid]
            if code is not None and code < 0 and mine:
                e = mine[-1]
                if e.op.startswith("get") and e.outcome == "ok":
                    lines.append(
                        f"  lost in transit: {e.result} (the server handed it to {p.name}, "
                        f"which was killed before it could use it)"
                    )
        pending = [e for e in evs if e.end is None]
        for e in pending:
            what = f"{e.op}({e.item or ''})"
            lines.append(f"  in flight at the server, no reply sent: {what} by {e.process}")
        for m in hist.marks:
            if m.kind == "refused" and m.queue == s.name:
                lines.append(f"  refused: {m.process} (pid {m.pid}): {m.detail}")
        for spec, n in hist.fired().items():
            if spec.startswith(f"{s.name}: net") and n:
                lines.append(f"  network fault {spec.split(': ', 1)[1]} fired {n} time(s)")
        for m in hist.marks:
            if m.kind == "net" and m.queue == s.name:
                lines.append(f"  net {m.process}: {m.detail} (t={m.time - hist.t0:.3f}s)")
    if st.programs:
        lines.append("programs:")
        for p in st.programs:
            lines.append(f"  {p.describe()}")
            last = hist.last_operation(p.pid)
            if last:
                lines.append(f"    its last queue operation (at the server): {last}")
    return "\n".join(lines)


Served.__module__ = "mpfault"  # its public name
