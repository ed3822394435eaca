"""Confirm, without mpfault, every verdict other than pass the contract gives billiard.Queue.

Run: python billiard_findings.py [fork|spawn]   (exit status 0: all confirmed)
"""

from __future__ import annotations

import queue
import sys
import time

import billiard


class Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle 'Unpicklable' object")


def put_one(q):
    q.put("x")


results: list[tuple[str, bool, str]] = []


def confirm(row: str, ok: bool, seen: str) -> None:
    results.append((row, ok, seen))
    print(f"{'CONFIRMED' if ok else 'NOT CONFIRMED'}  {row}: {seen}")


def main(method: str) -> int:
    ctx = billiard.get_context(method)

    # row 8 (fail): get(timeout=0) on a non-empty queue raises Empty.
    q = ctx.Queue()
    q.put("item")
    end = time.monotonic() + 10
    while q.empty() and time.monotonic() < end:
        time.sleep(0)
    try:
        got = q.get(timeout=0)
        confirm("row 8", False, f"get(timeout=0) returned {got!r}")
    except queue.Empty:
        confirm(
            "row 8",
            True,
            "get(timeout=0) raised Empty while empty() was False; "
            f"get(timeout=10) then gave {q.get(timeout=10)!r}",
        )

    # row 36 (fail; and its detail row differs): after one unpicklable put, later puts vanish.
    q = ctx.Queue()
    q.put(Unpicklable())  # the feeder prints a TypeError traceback to stderr
    q.put("after-1")
    try:
        got = q.get(timeout=5)
        confirm("row 36", False, f"the next item arrived: {got!r}")
    except queue.Empty:
        confirm(
            "row 36", True, "put(Unpicklable()) returned, then put('after-1') never arrived (5 s)"
        )

    # row 6 (differs): get(timeout=0.1) returns a little before 0.1 s.
    q = ctx.Queue()
    shortest = 1.0
    for _ in range(20):
        t0 = time.perf_counter()
        try:
            q.get(timeout=0.1)
        except queue.Empty:
            pass
        shortest = min(shortest, time.perf_counter() - t0)
    confirm(
        "row 6",
        shortest < 0.1,
        f"shortest of 20 get(timeout=0.1) on an empty queue: {shortest:.4f} s",
    )

    # row 18 (differs): an unused, closed queue's empty() raises OSError (CPython 3.9+: True).
    q = ctx.Queue()
    q.close()
    try:
        confirm("row 18", False, f"empty() returned {q.empty()!r}")
    except OSError as exc:
        confirm("row 18", True, f"empty() on an unused closed queue raised OSError({exc})")

    # row 32 (differs): join_thread() before close() raises ValueError, not AssertionError.
    q = ctx.Queue()
    try:
        q.join_thread()
        confirm("row 32", False, "join_thread() returned")
    except AssertionError:
        confirm("row 32", False, "AssertionError, as CPython")
    except ValueError as exc:
        confirm("row 32", True, f"join_thread() on an open queue raised ValueError({exc})")

    # row 35 (differs): put(); close(); join_thread() prints BrokenPipeError tracebacks
    # (close() closes the reader at once, as CPython 3.8 did).
    import contextlib
    import io

    noisy = 0
    for _ in range(20):
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            q = ctx.Queue()
            q.put(b"x" * 1000)
            q.close()
            q.join_thread()
        noisy += "BrokenPipeError" in buf.getvalue()
    confirm(
        "row 35",
        noisy > 0,
        f"BrokenPipeError printed in {noisy}/20 trials of put(); close(); join_thread()",
    )

    # row 68 (differs, spawn only): a fork-context queue in a spawn child: the child crashes.
    if method != "fork":
        q = billiard.get_context("fork").Queue()
        p = ctx.Process(target=put_one, args=(q,))
        try:
            p.start()
        except RuntimeError as exc:
            confirm("row 68", False, f"start() raised RuntimeError({exc})")
        else:
            p.join(30)
            confirm(
                "row 68",
                p.exitcode not in (0, None),
                f"start() did not raise; the child exited with {p.exitcode}",
            )
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "fork"))
