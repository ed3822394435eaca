"""The Python stack of every thread of this process, as text: what a child sends when
the test process asks (:data:`.control.STACK_REQUEST`).

Loaded by the child's control thread on the first request.  Standard library only.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

__all__ = ["format_stacks"]


def _scratch_file() -> Any:
    """An anonymous file to read faulthandler's output back from."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("mpfault-stacks"), "w+b")
    import tempfile  # pragma: no cover - not Linux

    return tempfile.TemporaryFile()  # pragma: no cover


_FRAME_LINE = re.compile(r'^  File "(.*)", line (\d+) in (.*)$')


_MPFAULT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _startup_frames(frames: list[str]) -> int:
    """How many frames (oldest first) lead up to the target's call: in ``bootstrap.run``
    for a harness child, else in ``BaseProcess.run`` (a process the code under test
    started: a pool worker's stack starts at ``pool.worker``)."""
    import multiprocessing.process

    from .bootstrap import run

    for path in (run.__code__.co_filename, multiprocessing.process.__file__):
        for i in range(len(frames) - 1, -1, -1):
            m = _FRAME_LINE.match(frames[i])
            if m is not None and m.group(3) == "run" and m.group(1) == path:
                return i + 1 if i + 1 < len(frames) else 0
    return 0


def _ours(line: str) -> bool:
    """Whether a frame line is one of mpfault's runtime (instrumentation, faults)."""
    m = _FRAME_LINE.match(line)
    return m is not None and m.group(1).startswith(_MPFAULT_DIR)


def format_stacks() -> str:
    """Return the Python stack of every thread of this process, with source lines.

    The frames are read by ``faulthandler`` (C, no frame objects made): making
    frame objects for the running frames of other threads (``sys._current_frames``
    and ``f_back``) crashes some CPython 3.12 releases later, at exit (seen with a
    queue's feeder thread blocked in a write: "deallocated BytesIO object has
    exported buffers", then SIGSEGV).
    """
    import faulthandler
    import linecache

    names = {t.ident: t for t in threading.enumerate()}
    with _scratch_file() as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
    blocks: list[tuple[bool, str]] = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if not lines:
            continue
        head = lines[0]
        if head.startswith("Current thread"):
            continue  # the control thread itself
        try:
            ident = int(head.split()[1], 16)
        except (IndexError, ValueError):
            ident = -1
        t = names.get(ident)
        label = f"Thread {t.name!r}" if t is not None else f"Thread {ident:#x}"
        main = t is threading.main_thread()
        if main:
            label += " (main)"
        out = [f"{label} (most recent call last):"]
        frames = list(reversed(lines[1:]))  # faulthandler: most recent call first
        skip = _startup_frames(frames) if main else 0
        if skip:
            out.append(
                f"  ({skip} frames of the child's start-up not shown: multiprocessing's "
                "bootstrap, mpfault's, and any inherited from the parent)"
            )
        shown = frames[skip:]
        if len(shown) > 1 and not _ours(shown[-1]):
            # between the code's call and the queue's own code: mpfault's wrappers
            kept = [line for line in shown if not _ours(line)]
            if len(kept) < len(shown):
                out.append(
                    f"  ({len(shown) - len(kept)} frames of mpfault's recording and faults"
                    " not shown)"
                )
                shown = kept
        for line in shown:
            m = _FRAME_LINE.match(line)
            if m is None:
                out.append(line)  # "  ..." (truncated) or "  <no Python frame>"
                continue
            filename, lineno, func = m.group(1), int(m.group(2)), m.group(3)
            out.append(f'  File "{filename}", line {lineno}, in {func}')
            source = linecache.getline(filename, lineno).strip()
            if source:
                out.append(f"    {source}")
        blocks.append((main, "\n".join(out)))
    blocks.sort(key=lambda b: not b[0])  # the main thread first
    return "\n\n".join(b for _, b in blocks)
