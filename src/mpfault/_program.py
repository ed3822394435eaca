"""Programs: independent subprocesses (any command) that a test starts and supervises.

``Harness.program(argv, name=..., env=..., cwd=...)`` starts ``argv`` as a
subprocess with the served queues' addresses and the authkey in its environment
(see :mod:`mpfault._serve`), its stdout and stderr in files (report sections), in
a session of its own, with a parent-death watchdog (``PR_SET_PDEATHSIG``: the
program gets SIGKILL if the test process dies).  A :class:`Program` has what a
``Child`` has where it makes sense.

**Stacks without importing mpfault.**  The program's ``PYTHONPATH`` starts with a
directory of the run holding a ``sitecustomize.py`` that, in a Python program,
installs a handler for ``SIGUSR2`` (and then runs the ``sitecustomize`` it
shadows, if any): on the signal it sends the stack of every thread to the harness
over a datagram socket.  :meth:`Program.stack` sends the signal only to processes
that installed it (the program, or a Python process it started), so a program in
another language is never hit by a signal it does not expect.  The limits: the
program's Python must honour ``PYTHONPATH`` (not ``-I``/``-E``), and the handler
runs between bytecodes, so a thread holding the GIL in C code answers late.

It does not import pytest.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._errors import MpfaultError
from ._runtime import bootstrap as _bootstrap
from ._runtime import peers as _peers
from ._runtime import procfs as _procfs

if TYPE_CHECKING:
    from ._serve import Parts

__all__ = ["STACK_SIGNAL", "Program", "program", "stop_all"]

#: the signal a Python program answers with its stacks
STACK_SIGNAL = signal.SIGUSR2
_SITE = '''\
"""mpfault's stack helper for programs (see mpfault._program); then the shadowed one."""
import os as _os


def _mpfault_arm():
    sock = _os.environ.get("MPFAULT_STACK_SOCK")
    armed = _os.environ.get("MPFAULT_STACK_ARMED")
    if not sock or not armed:
        return
    import signal
    import socket
    import sys

    def answer(signum, frame):
        import threading
        import traceback

        names = {t.ident: t.name for t in threading.enumerate()}
        parts = []
        me = threading.get_ident()
        for ident, f in sys._current_frames().items():
            if ident == me:
                f = frame
            head = "Thread %s (%s)" % (names.get(ident, "?"), ident)
            parts.append(head + ":\\n" + "".join(traceback.format_stack(f)))
        text = ("pid %d\\n" % _os.getpid()) + "\\n".join(parts)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(text.encode("utf-8", "replace")[:60000], sock)
        except OSError:
            pass
        finally:
            s.close()

    try:
        signal.signal(signal.SIGUSR2, answer)
    except (ValueError, OSError):
        return
    try:
        _os.close(_os.open(_os.path.join(armed, str(_os.getpid())), _os.O_CREAT | _os.O_WRONLY))
    except OSError:
        pass


_mpfault_arm()


def _mpfault_chain():
    import importlib.machinery
    import importlib.util
    import sys

    here = _os.path.dirname(_os.path.abspath(__file__))
    path = [p for p in sys.path if _os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)


_mpfault_chain()
'''
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))(?::.*)?$")


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Program:
    """An independent program started by :meth:`Harness.program`."""

    def __init__(
        self,
        parts: Parts,
        name: str,
        argv: list[str],
        popen: subprocess.Popen[bytes],
        out_path: str,
        err_path: str,
        armed_dir: str,
        stack_sock: str,
    ) -> None:
        self._parts = parts
        self.name = name
        self.argv = argv
        self._popen = popen
        self.out_path = out_path
        self.err_path = err_path
        self._armed_dir = armed_dir
        self._stack_sock = stack_sock

    def __repr__(self) -> str:
        return f"<Program {self.name!r} pid={self.pid} exitcode={self.exitcode}>"

    @property
    def pid(self) -> int:
        """The program's process id (it leads its own session and process group)."""
        return int(self._popen.pid)

    @property
    def exitcode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        """Whether the program is still running (or stopped)."""
        return self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait until the program exits; return its exit code.

        Raises :class:`mpfault.Hang` (with the stacks of live children and programs)
        if it still runs after ``timeout`` seconds (default: the test's deadline).
        """
        __tracebackhide__ = True
        limit = self._parts.limit(timeout)
        try:
            return self._popen.wait(limit)
        except subprocess.TimeoutExpired:
            err = self._parts.hang(f"wait(timeout={timeout}) of program {self.name!r}", limit)
            stacks = {f"program {p.name} (pid {p.pid})": p.stack() for p in self._live()}
            body = "\n\n".join(f"--- {k} ---\n{v}" for k, v in stacks.items() if v)
            err.args = (f"{err.args[0]}\n\nStacks of the test's live programs:\n{body}",)
            raise err from None

    def _live(self) -> list[Program]:
        from ._serve import current

        st = current(self._parts.harness)
        return [p for p in (st.programs if st else []) if p.is_alive()]

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the program's process."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def pause(self) -> None:
        """Stop the program's whole process group (SIGSTOP); returns once it is stopped."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGSTOP)
        end = time.monotonic() + 5.0
        while time.monotonic() < end and _state(self.pid) not in ("T", "t", "Z", None):
            os.sched_yield()

    def resume(self) -> None:
        """Resume a paused program (SIGCONT to its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGCONT)

    def _python_pids(self) -> list[int]:
        pids = [self.pid, *sorted(_procfs.descendants([self.pid]))]
        return [p for p in pids if os.path.exists(os.path.join(self._armed_dir, str(p)))]

    def stack(self, timeout: float = 5.0) -> str:
        """The current Python stack of every thread of the program (and of the Python
        processes it started), or why there is none."""
        if not self.is_alive():
            return f"(program exited with code {self.exitcode})"
        if _state(self.pid) in ("T", "t"):
            return "(program is stopped by SIGSTOP: no stack can be taken until it resumes)"
        pids = self._python_pids()
        if not pids:
            return (
                "(no stack: not a Python program, or its Python ignores PYTHONPATH "
                "(-I, -E), or it has not started yet)"
            )
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = self._stack_sock  # where the helper answers (in its environment)
        with contextlib.suppress(OSError):
            os.unlink(path)
        try:
            s.bind(path)
        except OSError:
            s.close()
            return "(no stack: cannot bind the reply socket)"
        try:
            got: dict[int, str] = {}
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, STACK_SIGNAL)
            end = time.monotonic() + timeout
            while len(got) < len(pids):
                left = end - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    data = s.recv(65536).decode("utf-8", "replace")
                except (TimeoutError, OSError):
                    break
                head, _, rest = data.partition("\n")
                with contextlib.suppress(ValueError):
                    got[int(head.split()[1])] = rest
            out = []
            for pid in pids:
                text = got.get(pid, f"(no answer within {timeout}s)")
                out.append(text if len(pids) == 1 else f"pid {pid}:\n{text}")
            return "\n".join(out)
        finally:
            s.close()
            with contextlib.suppress(OSError):
                os.unlink(path)

    def output(self) -> tuple[str, str]:
        """What the program wrote to stdout and stderr so far."""
        return _read(self.out_path), _read(self.err_path)

    def exception(self) -> str | None:
        """The last line of stderr that names an exception (``ConnectionResetError: ...``)."""
        for line in reversed(self.output()[1].splitlines()[-30:]):
            m = _EXC_LINE.match(line.strip())
            if m:
                return line.strip()
        return None

    def describe(self) -> str:
        """``producer (pid 123): killed by SIGKILL`` and the like."""
        code = self.exitcode
        if code is None:
            status = "still running"
        elif code < 0:
            status = f"killed by {_signame(-code)}"
        else:
            status = f"exited with code {code}"
        exc = self.exception() if code else None
        return f"{self.name} (pid {self.pid}): {status}" + (f"; it raised {exc}" if exc else "")


def _state(pid: int) -> str | None:
    return _procfs.state(pid)


def program(
    parts: Parts,
    argv: Sequence[str] | str,
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Program:
    """``Harness.program``: start ``argv`` (see :class:`Program`)."""
    from ._serve import state

    harness = parts.harness
    parts.check_open()
    st = state(parts)
    st.note_children()
    if isinstance(argv, str):
        raise MpfaultError(
            f"program(): argv must be a list of strings, not the string {argv!r} "
            "(use ['sh', '-c', ...] for a shell command)"
        )
    args = [os.fspath(a) for a in argv]
    if not args:
        raise MpfaultError("program(): argv is empty")
    n = len(st.programs) + 1
    if name is None:
        name = os.path.basename(args[0] if len(args) == 1 or "python" not in args[0] else args[1])
        name = os.path.splitext(name)[0] or "program"
        base, k = name, 1
        while name in parts.names or any(p.name == name for p in st.programs):
            k += 1
            name = f"{base}-{k}"
    elif name in parts.names or any(p.name == name for p in st.programs):
        raise MpfaultError(f"program(): a child or program named {name!r} already exists")
    if name == "MainProcess":
        raise MpfaultError("program(): 'MainProcess' is the test process's own name")
    parts.names.add(name)
    run_dir = harness.run_dir
    site = os.path.join(run_dir, "site")
    armed = os.path.join(run_dir, "armed")
    os.makedirs(armed, exist_ok=True)
    if not os.path.exists(os.path.join(site, "sitecustomize.py")):
        os.makedirs(site, exist_ok=True)
        with open(os.path.join(site, "sitecustomize.py"), "w", encoding="utf-8") as f:
            f.write(_SITE)
    out_path = os.path.join(run_dir, "out", f"program-{n}.out")
    err_path = os.path.join(run_dir, "out", f"program-{n}.err")
    stack_sock = os.path.join(run_dir, "armed", f"stack-{n}.sock")
    full_env = dict(os.environ)
    full_env.update(st.env(name))
    pp = full_env.get("PYTHONPATH")
    full_env["PYTHONPATH"] = site + (os.pathsep + pp if pp else "")
    full_env["MPFAULT_STACK_SOCK"] = stack_sock
    full_env["MPFAULT_STACK_ARMED"] = armed
    full_env.setdefault("PYTHONFAULTHANDLER", "1")
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update({str(k): str(v) for k, v in env.items()})
    parent = os.getpid()
    clients = run_dir

    def child_setup() -> None:  # pragma: no cover - runs in the child, before exec
        _bootstrap._arm_pdeathsig(signal.SIGKILL, parent)
        _peers.register(clients, os.getpid(), name)

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=child_setup,
                close_fds=True,
            )
        except OSError as e:
            parts.names.discard(name)
            raise MpfaultError(f"program(): could not start {args!r}: {e}") from e
    p = Program(parts, name, args, popen, out_path, err_path, armed, stack_sock)
    st.programs.append(p)
    return p


def stop_all(programs: list[Program], grace: float) -> list[str]:
    """SIGTERM (and SIGCONT) to every program's group and descendants, then SIGKILL
    after ``grace`` seconds; reap.  Every wait is bounded."""
    live = [p for p in programs if p.is_alive()]
    family = _procfs.descendants([p.pid for p in programs]) | {p.pid for p in live}
    if not family:
        return []
    for sig in (signal.SIGTERM, signal.SIGCONT):
        for p in programs:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, sig)
        for pid in family:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
    end = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p._popen.wait(max(0.0, end - time.monotonic()))
    for p in programs:
        with contextlib.suppress(OSError):
            os.killpg(p.pid, signal.SIGKILL)
    for pid in family:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    problems = []
    for p in live:
        try:
            p._popen.wait(5.0)
        except subprocess.TimeoutExpired:
            problems.append(f"program {p.name!r} (pid {p.pid}) could not be reaped")
    return problems


if sys.platform != "linux":  # pragma: no cover
    raise ImportError("mpfault programs need Linux")


Program.__module__ = "mpfault"  # its public name
