"""Where a harness keeps its run files, and the check that the place is usable.

Light (the plugin's settings read it at start-up): the standard library only.
"""

from __future__ import annotations

import os

__all__ = ["TMPDIR_ENV", "check_tmpdir", "default_tmpdir"]

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
