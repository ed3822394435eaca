"""multiprocess (the dill-based fork of multiprocessing) passes every applicable row when
its children come from its own context; this script shows why the context matters.

Run: python multiprocess_context.py   (exit status 0: confirmed)

* with ``multiprocess.get_context(m).Process`` 200 items put by a child all arrive, under
  fork and spawn;
* with the standard library's ``Process``, the queue cannot even be sent to a spawn child
  (``RuntimeError: Queue objects should only be shared between processes through
  inheritance``) - the errors an earlier contract counted against the queue.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys

import multiprocess


def produce(q, n):
    for i in range(n):
        q.put(i)


def run(process_ctx, queue_ctx, n=200):
    q = queue_ctx.Queue()
    p = process_ctx.Process(target=produce, args=(q, n))
    try:
        p.start()
    except Exception as exc:
        return f"start() raised {type(exc).__name__}: {exc}"
    got = []
    try:
        for _ in range(n):
            got.append(q.get(timeout=10))
    except queue.Empty:
        pass
    p.join(10)
    return f"{len(got)} of {n} arrived, exit code {p.exitcode}"


def main() -> int:
    ok = True
    for method in ("fork", "spawn"):
        own = run(multiprocess.get_context(method), multiprocess.get_context(method))
        print(f"{method}: multiprocess Process: {own}")
        ok &= own.startswith("200 of 200")
    other = run(multiprocessing.get_context("spawn"), multiprocess.get_context("spawn"))
    print(f"spawn: stdlib Process: {other}")
    ok &= "inheritance" in other
    print("CONFIRMED" if ok else "NOT CONFIRMED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
