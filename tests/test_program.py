"""Programs: independent subprocesses a test starts, with what a Child has where it makes
sense (exit code, output, kill/pause/resume, a Python stack without importing mpfault),
teardown, and the parent-death watchdog."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import mpfault
from mpfault import Hang, MpfaultError

PY = sys.executable

# A program that says it is ready (on the FIFO named in READY), then blocks in a
# function of its own.
WAITER = textwrap.dedent(
    """
    import os, threading

    def block_here(event):
        with open(os.environ["READY"], "w") as f:
            f.write("ready")
        event.wait()

    block_here(threading.Event())
    """
)


class Ready:
    """A FIFO a program writes to once it is ready; ``wait()`` blocks (bounded) until then."""

    def __init__(self, tmp_path) -> None:
        self.path = str(tmp_path / "ready.fifo")
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    def wait(self, timeout: float = 30.0) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        assert r, "the program never said it was ready"
        assert os.read(self.fd, 100) == b"ready"
        os.close(self.fd)


def test_exit_code_output_and_environment(tmp_path) -> None:
    with mpfault.Harness() as h:
        served = h.serve()
        code = (
            "import os, sys; print(os.environ['MPFAULT_PROGRAM'], os.environ['MPFAULT_QUEUE'],"
            " os.environ['MPFAULT_QUEUE_S1'], os.environ['MPFAULT_AUTHKEY'], os.getcwd());"
            " print('oops', file=sys.stderr); sys.exit(3)"
        )
        p = h.program([PY, "-c", code], name="envy", cwd=str(tmp_path))
        assert p.wait(30) == 3
        assert p.exitcode == 3
        assert not p.is_alive()
        out, err = p.output()
        name, q, q1, key, cwd = out.split()
        assert name == "envy"
        assert q == q1 == served.host_port
        assert bytes.fromhex(key) == served.authkey
        assert cwd == str(tmp_path)
        assert err == "oops\n"
        assert "exited with code 3" in p.describe()


def test_kill_pause_resume_and_stack(tmp_path) -> None:
    ready = Ready(tmp_path)
    with mpfault.Harness() as h:
        script = tmp_path / "waiter.py"
        script.write_text(WAITER)
        p = h.program([PY, str(script)], env={"READY": ready.path})
        assert p.name == "waiter"
        ready.wait()
        stack = p.stack(timeout=10)
        assert "in block_here" in stack  # (after "ready": its last two lines)
        assert "waiter.py" in stack
        assert "\n    with open(" in stack or "\n    event.wait()" in stack  # source lines
        assert "Thread MainThread" in stack
        p.pause()
        assert "stopped by SIGSTOP" in p.stack()
        p.resume()
        assert "block_here" in p.stack(timeout=10)
        p.kill()
        assert p.wait(30) == -signal.SIGKILL
        assert "killed by SIGKILL" in p.describe()
        assert "exited" in p.stack()


def test_a_program_that_is_not_python_has_no_stack_and_is_not_signalled() -> None:
    with mpfault.Harness() as h:
        p = h.program(["sleep", "60"])
        assert p.name == "sleep"
        assert "no stack" in p.stack()
        assert p.is_alive()  # SIGUSR2 was not sent: it would have killed sleep
        with pytest.raises(Hang, match=r"wait\(timeout=0.2\) of program 'sleep'"):
            p.wait(0.2)


def test_teardown_stops_a_program_that_ignores_sigterm_and_its_children() -> None:
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " c = subprocess.Popen(['sleep', '60']); print(c.pid, flush=True);"
        " signal.pause()"
    )
    h = mpfault.Harness(grace=0.2)
    with h:
        p = h.program([PY, "-c", code], name="stubborn")
        for _ in range(10000):  # its child's pid, once printed (bounded)
            if p.output()[0].strip():
                break
            os.sched_yield()
        grandchild = int(p.output()[0])
        pid = p.pid
    assert p.exitcode == -signal.SIGKILL
    assert not os.path.exists(f"/proc/{pid}")
    assert not os.path.exists(f"/proc/{grandchild}") or _zombie(grandchild)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_program_dies_with_the_test_process(tmp_path) -> None:
    script = tmp_path / "dies.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys
            import mpfault

            h = mpfault.Harness()
            p = h.program(["sleep", "60"])
            print(p.pid, h.run_dir, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    proc = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    pid, run_dir = proc.stdout.split()[:2]
    shutil.rmtree(run_dir)  # the harness died: nobody else removes its run directory
    pid = int(pid)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        r, _, _ = select.select([fd], [], [], 10)
        assert r, f"program {pid} outlived the test process"
    finally:
        os.close(fd)


def test_bad_arguments() -> None:
    with mpfault.Harness() as h:
        with pytest.raises(MpfaultError, match="argv must be a list"):
            h.program("sleep 1")
        with pytest.raises(MpfaultError, match="argv is empty"):
            h.program([])
        with pytest.raises(MpfaultError, match="could not start"):
            h.program(["/nonexistent/program"])
        h.program(["true"], name="x")
        with pytest.raises(MpfaultError, match="named 'x' already exists"):
            h.program(["true"], name="x")
        with pytest.raises(MpfaultError, match="MainProcess"):
            h.program(["true"], name="MainProcess")
    with pytest.raises(MpfaultError, match="closed"):
        h.program(["true"])


def _blocks(q):
    return q.get()


def test_a_hang_of_the_harness_holds_every_programs_stack(tmp_path) -> None:
    ready = Ready(tmp_path)
    with mpfault.Harness(start_method="fork") as h:
        script = tmp_path / "waiter.py"
        script.write_text(WAITER)
        p = h.program([PY, str(script)], env={"READY": ready.path})
        ready.wait()
        child = h.spawn(_blocks, h.queue())
        with pytest.raises(Hang) as info:
            child.result(timeout=0.5)
    text = str(info.value)
    assert f"--- program waiter (pid {p.pid}) ---" in text
    assert "in block_here" in text.split("Programs:", 1)[1]
    assert any(name.startswith("program waiter") for name in info.value.stacks)
