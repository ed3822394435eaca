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
        for line in reversed(lines[1:]):  # faulthandler: most recent call first
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
