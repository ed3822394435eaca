"""The one /proc reader (mpfault._runtime.procfs), on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mpfault._runtime import procfs

PARENT = (
    "import subprocess, sys\n"
    "c = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
    " stdin=subprocess.PIPE)\n"
    "print(c.pid, flush=True)\n"
    "sys.stdin.read()\n"
)


def test_states_descendants_and_liveness() -> None:
    assert procfs.state(os.getpid()) == "R"  # reading its own stat: running
    assert procfs.state(os.getpid(), os.getpid()) == "R"  # the main thread
    p = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        grandchild = int(p.stdout.readline())
        assert procfs.descendants([os.getpid()]) >= {p.pid, grandchild}
        assert procfs.descendants([p.pid]) == {grandchild}
        assert procfs.alive(p.pid)
        assert procfs.alive(grandchild)
        assert not procfs.all_stopped(p.pid)
        os.kill(p.pid, signal.SIGSTOP)
        os.waitid(os.P_PID, p.pid, os.WSTOPPED | os.WNOWAIT)
        assert procfs.state(p.pid) == "T"
        assert set(procfs.thread_states(p.pid)) == {"T"}
        assert procfs.all_stopped(p.pid)
        os.kill(p.pid, signal.SIGCONT)
    finally:
        p.communicate(timeout=30)  # EOF on its stdin: it exits, and so does the grandchild
    assert p.returncode == 0
    assert not procfs.alive(p.pid)
    assert procfs.state(p.pid) is None
    assert procfs.thread_states(p.pid) == []
    assert procfs.all_stopped(p.pid)  # a process that is gone is not running


def test_a_missing_proc_entry_reads_as_none() -> None:
    assert procfs.stat_state("/proc/0/stat") is None
    assert procfs.descendants([]) == set()
