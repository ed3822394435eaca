"""Where a harness keeps its run files, the check that the place is usable, who owns
a run directory, and removing those whose owner died.

Light (the plugin's settings read it at start-up): the standard library only.
"""

from __future__ import annotations

import os
import shutil

__all__ = [
    "OWNER",
    "TMPDIR_ENV",
    "check_tmpdir",
    "default_tmpdir",
    "is_stale",
    "process_start_time",
    "remove_stale",
    "write_owner",
]

#: the environment variable that says where harnesses keep their run files
TMPDIR_ENV = "MPFAULT_TMPDIR"


def check_tmpdir(path: str, where: str) -> str:
    """``path``, made absolute, if it is a writable directory; else an ``MpfaultError``
    naming ``where`` the path came from."""
    problem = (
        "is not a directory"
        if not os.path.isdir(path)
        else "is not writable"
        if not os.access(path, os.W_OK | os.X_OK)
        else None
    )
    if problem is not None:
        from ._runtime.errors import MpfaultError  # (not loaded by every session)

        raise MpfaultError(f"run files directory {path!r} from {where} {problem}")
    return os.path.abspath(path)


def default_tmpdir() -> str | None:
    """Where a harness keeps its run files (history logs, gates, children's output)
    when it is not told: ``$MPFAULT_TMPDIR``, else None (the system's temporary
    directory, ``tempfile.gettempdir()``: ``TMPDIR``, ``/tmp``...)."""
    env = os.environ.get(TMPDIR_ENV)
    if env:
        return check_tmpdir(env, f"env {TMPDIR_ENV}")
    return None


# -- owners and stale run directories ----------------------------------------
# Every harness makes a run directory (``mpf-*``) and removes it when it closes.  A
# test process killed outright (SIGKILL, ``os._exit`` by pytest-timeout's thread
# method) cannot; the next run removes such stale directories, and only those: each run
# directory holds an ``owner`` file with the pid and the start time (``/proc/<pid>/stat``,
# field 22) of the process that made it, so a directory whose pid now belongs to another
# process (pid reuse) is recognised as stale too, and the directory of a live test
# process (another pytest, an xdist worker) is never touched.

#: the name of the owner file in a run directory
OWNER = "owner"
#: the prefix of run directories
PREFIX = "mpf-"


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def write_owner(run_dir: str, pid: int | None = None) -> None:
    """Record the process that owns ``run_dir`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    start = process_start_time(pid)
    path = os.path.join(run_dir, OWNER)
    with open(path + ".tmp", "w") as f:
        f.write(f"{pid} {start if start is not None else 0}\n")
    os.replace(path + ".tmp", path)


def is_stale(run_dir: str) -> bool:
    """Whether ``run_dir``'s owner is dead (or its pid now names another process).

    A directory without a readable owner file is not stale: it may be one being made
    right now, or one of an older version; it is left alone.
    """
    try:
        with open(os.path.join(run_dir, OWNER)) as f:
            pid_s, start_s = f.read().split()[:2]
        pid, start = int(pid_s), int(start_s)
    except (OSError, ValueError):
        return False
    now = process_start_time(pid)
    if now is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return False  # no /proc entry but alive: keep it
    return start != 0 and now != start


def remove_stale(base: str) -> list[str]:
    """Remove the stale run directories under ``base``; returns those removed."""
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    for name in names:
        if not name.startswith(PREFIX):
            continue
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path) and is_stale(path):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    return removed
