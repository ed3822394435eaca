"""Throughput of a harness queue against the raw ``multiprocessing`` queue.

One producer process puts N items into the queue, one consumer process gets them;
the two start together on a barrier, and the time runs from the producer's first
``put`` to the consumer's last ``get`` (``time.monotonic_ns``, the same clock in
every process).  Variants, in the same run, in alternating rounds:

* raw:     ``ctx.Queue()``
* wrapped: ``Harness.queue()``: no faults, every operation recorded in the history
  (a BEGIN and an END event per ``put`` and per ``get``, in both processes)

Both variants use the same processes (``ctx.Process``), so only the queue differs.
Items: small ints (``0..N-1``) and 10 KB ``bytes``.  The ratio is
``median(wrapped items/s) / median(raw items/s)``; the targets are at least 0.90x
(small) and 0.98x (10 KB).

    .venv/bin/python benchmarks/bench_queue.py [--quick] [--method fork]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import sys
from typing import Any

if __package__:
    from . import _targets
else:  # run as a script: benchmarks/ is sys.path[0]
    import _targets  # type: ignore[no-redef]

TARGETS = {"small": 0.90, "10KB": 0.98}


def _round(ctx: Any, method: str, wrapped: bool, n: int, item: Any) -> float:
    """One producer -> consumer run of ``n`` items; return items per second."""
    h = None
    if wrapped:
        from mpfault import Harness

        h = Harness(method, deadline=600.0)
        q: Any = h.queue()
    else:
        q = ctx.Queue()
    out = ctx.SimpleQueue()
    barrier = ctx.Barrier(2)
    try:
        prod = ctx.Process(target=_targets.producer, args=(q, n, item, barrier, out))
        cons = ctx.Process(target=_targets.consumer, args=(q, n, barrier, out))
        cons.start()
        prod.start()
        got = dict(out.get() for _ in range(2))
        prod.join()
        cons.join()
        if prod.exitcode or cons.exitcode:
            raise RuntimeError(f"child failed: {prod.exitcode=} {cons.exitcode=}")
        if wrapped:
            assert h is not None
            events = h.history.events
            if len(events) != 2 * n:
                raise RuntimeError(f"expected {2 * n} recorded operations, got {len(events)}")
    finally:
        if h is not None:
            h.close()
        else:
            q.close()
            q.join_thread()
    return n / ((got["last_get"] - got["first_put"]) / 1e9)


def bench(ctx: Any, method: str, label: str, n: int, item: Any, rounds: int) -> dict[str, Any]:
    _round(ctx, method, False, max(n // 20, 100), item)  # warm up both
    _round(ctx, method, True, max(n // 20, 100), item)
    raw: list[float] = []
    wrapped: list[float] = []
    for i in range(rounds):
        gc.collect()
        if i % 2:
            wrapped.append(_round(ctx, method, True, n, item))
            raw.append(_round(ctx, method, False, n, item))
        else:
            raw.append(_round(ctx, method, False, n, item))
            wrapped.append(_round(ctx, method, True, n, item))
    m_raw = statistics.median(raw)
    m_wrapped = statistics.median(wrapped)
    return {
        "label": label,
        "n": n,
        "rounds": rounds,
        "raw": m_raw,
        "wrapped": m_wrapped,
        "ratio": m_wrapped / m_raw,
        "raw_all": raw,
        "wrapped_all": wrapped,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items and rounds")
    ap.add_argument("--method", default=multiprocessing.get_start_method(), help="start method")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per variant (default 5, quick 3)")
    ap.add_argument("--small", type=int, default=0, help="number of small items")
    ap.add_argument("--large", type=int, default=0, help="number of 10 KB items")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every round")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    n_small = args.small or (50_000 if args.quick else 200_000)
    n_large = args.large or (5_000 if args.quick else 20_000)
    ctx = multiprocessing.get_context(args.method)
    rows = [
        bench(ctx, args.method, "small", n_small, None, rounds),
        bench(ctx, args.method, "10KB", n_large, b"x" * 10240, rounds),
    ]
    print(f"Python {sys.version.split()[0]}, {sys.platform}, start method {args.method}")
    head = (
        f"{'items':<6} {'count':>8} {'rounds':>6} {'raw items/s':>12} {'wrapped items/s':>16} "
        f"{'ratio':>6} {'target':>7}"
    )
    print(head)
    print("-" * (len(head) + 5))
    failed = False
    for r in rows:
        target = TARGETS[r["label"]]
        ok = r["ratio"] >= target
        failed |= not ok
        print(
            f"{r['label']:<6} {r['n']:>8} {r['rounds']:>6} {r['raw']:>12,.0f} "
            f"{r['wrapped']:>16,.0f} {r['ratio']:>5.3f}x {'>=' + format(target, '.2f'):>7} "
            f"{'ok' if ok else 'MISS'}"
        )
        if args.verbose:
            print("   raw:     " + " ".join(f"{x:,.0f}" for x in r["raw_all"]))
            print("   wrapped: " + " ".join(f"{x:,.0f}" for x in r["wrapped_all"]))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
