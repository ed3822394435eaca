"""Confirm, without mpfault, every verdict other than pass the contract gives faster-fifo.

Run: python faster_fifo_findings.py [fork|spawn]   (exit status 0: all confirmed)

The contract runs faster-fifo through ``faster_fifo_provider.FasterFifo`` (64 MiB buffer;
CPython's maxsize semantics); this script makes the queues the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading

import faster_fifo

BUFFER = 64 * 1024 * 1024


def make(maxsize: int = 0) -> faster_fifo.Queue:
    if maxsize <= 0:
        return faster_fifo.Queue(max_size_bytes=BUFFER)
    return faster_fifo.Queue(max_size_bytes=BUFFER, maxsize=maxsize)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle 'Unpicklable' object")


def put_then(q, how):
    q.put(b"x" * 1_000_000 if how == "return-1MB" else "x")
    if how == "os_exit":
        os._exit(0)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


def put_bad_last(q):
    q.put(("item", 0))
    q.put(Unpicklable())


def put_one(q):
    q.put("x")


results: list[tuple[str, bool, str]] = []


def confirm(row: str, ok: bool, seen: str) -> None:
    results.append((row, ok, seen))
    print(f"{'CONFIRMED' if ok else 'NOT CONFIRMED'}  {row}: {seen}")


def raised(fn) -> str | None:
    try:
        fn()
    except Exception as exc:
        return f"{type(exc).__name__}({exc})"
    return None


def main(method: str) -> int:
    ctx = multiprocessing.get_context(method)

    # why a provider: maxsize=0 holds nothing (CPython: no limit)
    err = raised(lambda: faster_fifo.Queue(maxsize=0).put("x", timeout=0.1))
    confirm(
        "provider",
        err is not None and "Full" in err,
        f"Queue(maxsize=0).put('x', timeout=0.1) raised {err}",
    )

    # rows 1, 2 (fail): block=True with timeout=None is refused.
    full = make(1)
    full.put("a")
    confirm(
        "row 1",
        bool(raised(lambda: full.put("b", True, None))),
        f"put('b', True, None) on a full queue raised {raised(lambda: full.put('b', True, None))}",
    )
    empty = make()
    confirm(
        "row 2",
        bool(raised(lambda: empty.get(True, None))),
        f"get(True, None) on an empty queue raised {raised(lambda: empty.get(True, None))}",
    )

    # row 8 detail (differs): get(timeout=-1) blocks instead of returning at once.
    t = threading.Thread(target=lambda: raised(lambda: make().get(timeout=-1)), daemon=True)
    t.start()
    t.join(2.0)
    confirm("row 8", t.is_alive(), "get(timeout=-1) on an empty queue still blocked after 2 s")

    # rows 13, 14, 15 (differ): state is exact right after put().
    q = make(1)
    q.put("x")
    e, f = q.empty(), q.full()
    confirm(
        "rows 13/15",
        e is False and f is True,
        f"right after put(): empty()={e}, full()={f} (never both True)",
    )
    q2 = make()
    q2.put("y")
    confirm(
        "row 14", raised(q2.get_nowait) is None, "get_nowait() right after put() returned the item"
    )

    # row 18 (differs): a used, closed queue's empty() is True (CPython: OSError).
    q = make()
    q.put(1)
    q.get(timeout=5)
    q.close()
    confirm(
        "row 18", raised(q.empty) is None, f"empty() on a used, closed queue returned {q.empty()!r}"
    )

    # row 34 (fail): put() on a closed queue does not raise.
    q = make()
    q.close()
    err = raised(lambda: q.put("x"))
    confirm("row 34", err is None, f"put('x') on a closed queue raised {err}")

    # row 23 (differs): put() pickles at once (a later mutation is not seen).
    q = make()
    d = {"v": 1}
    q.put(d)
    d["v"] = 2
    confirm(
        "row 23", q.get(timeout=5)["v"] == 1, "a mutation right after put() was not seen by get()"
    )

    # row 24 (differs): no feeder thread.
    before = threading.active_count()
    make().put(b"x" * 200_000)
    confirm(
        "row 24", threading.active_count() == before, "put(200 KB) with no reader started no thread"
    )

    # rows 25/26, 27, 28 (differ): no buffer to flush at exit; nothing lost on os._exit/SIGKILL.
    for how, row in (("return-1MB", "rows 25/26"), ("os_exit", "row 27"), ("sigkill", "row 28")):
        q = make()
        p = ctx.Process(target=put_then, args=(q, how))
        p.start()
        p.join(5)
        exited = p.exitcode
        try:
            q.get(timeout=5)
            arrived = "arrived"
        except queue.Empty:
            arrived = "was lost"
        confirm(
            row,
            exited is not None and arrived == "arrived",
            f"child {how}: exit code {exited} before any get(); the item {arrived}",
        )

    # row 32 (differs): join_thread() on an open queue returns.
    confirm("row 32", raised(make().join_thread) is None, "join_thread() on an open queue returned")

    # rows 36, 37 (differ): an unpicklable object raises in put(), in the caller.
    err = raised(lambda: make().put(Unpicklable()))
    confirm("row 36", err is not None, f"put(Unpicklable()) raised {err} in the caller")
    q = make()
    p = ctx.Process(target=put_bad_last, args=(q,))
    p.start()
    p.join(10)
    confirm(
        "row 37",
        p.exitcode == 1,
        f"a child whose last put() was unpicklable exited with {p.exitcode} (raised there)",
    )

    # row 40 (differs): pickling the queue raises TypeError (mmap), not RuntimeError.
    err = raised(lambda: pickle.dumps(make()))
    confirm(
        "row 40", err is not None and err.startswith("TypeError"), f"pickle.dumps(q) raised {err}"
    )

    # row 68 (differs, spawn): a queue made before a spawn child just works there.
    if method != "fork":
        q = make()
        p = ctx.Process(target=put_one, args=(q,))
        p.start()
        p.join(30)
        confirm(
            "row 68",
            p.exitcode == 0 and q.get(timeout=5) == "x",
            f"the spawn child exited with {p.exitcode} and its item arrived",
        )
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "fork"))
