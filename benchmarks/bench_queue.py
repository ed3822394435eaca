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


def _round(
    ctx: Any,
    method: str,
    wrapped: bool,
    n: int,
    item: Any,
    pin: bool,
    side: str = "both",
    check: bool = True,
) -> tuple[float, float, float]:
    """One producer -> consumer run of ``n`` items.

    Returns (items per second, producer CPU seconds per item, consumer CPU seconds
    per item).
    """
    h = None
    if wrapped:
        from mpfault import Harness

        h = Harness(method, deadline=600.0)
        q: Any = h.queue()
    else:
        q = ctx.Queue()
    out = ctx.SimpleQueue()
    barrier = ctx.Barrier(2)
    done = ctx.Event()
    cpus = (0, 1) if pin else (None, None)
    qp = qc = q
    if wrapped and side != "both":  # wrap one side only (to see which one costs what)
        qp, qc = (q, q.wrapped) if side == "producer" else (q.wrapped, q)
    try:
        prod = ctx.Process(
            target=_targets.producer, args=(qp, n, item, barrier, out, done, cpus[0])
        )
        cons = ctx.Process(target=_targets.consumer, args=(qc, n, barrier, out, cpus[1]))
        cons.start()
        prod.start()
        got = dict(out.get() for _ in range(3))  # first_put, last_get, consumer_cpu
        done.set()
        got.update([out.get()])  # producer_cpu
        prod.join()
        cons.join()
        if prod.exitcode or cons.exitcode:
            raise RuntimeError(f"child failed: {prod.exitcode=} {cons.exitcode=}")
        if wrapped and check:  # every operation is in the history (not timed)
            assert h is not None
            events = h.history.events
            want = 2 * n if side == "both" else n
            if len(events) != want:
                raise RuntimeError(f"expected {want} recorded operations, got {len(events)}")
    finally:
        if h is not None:
            h.close()
        else:
            q.close()
            q.join_thread()
    rate = n / ((got["last_get"] - got["first_put"]) / 1e9)
    return rate, got["producer_cpu"] / n, got["consumer_cpu"] / n


def bench(
    ctx: Any, method: str, label: str, n: int, item: Any, rounds: int, pin: bool, side: str
) -> dict[str, Any]:
    warm = max(n // 20, 100)
    _round(ctx, method, False, warm, item, pin)  # warm up both
    _round(ctx, method, True, warm, item, pin, side)
    res: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for i in range(rounds):
        gc.collect()
        # alternate the order so a drift of the machine hits both sides alike
        for wrapped in (True, False) if i % 2 else (False, True):
            res[wrapped].append(_round(ctx, method, wrapped, n, item, pin, side, check=i == 0))

    def med(wrapped: bool, k: int) -> float:
        return statistics.median(r[k] for r in res[wrapped])

    return {
        "label": label,
        "n": n,
        "rounds": rounds,
        "raw": med(False, 0),
        "wrapped": med(True, 0),
        "ratio": med(True, 0) / med(False, 0),
        "paired": statistics.median(
            w[0] / r[0] for r, w in zip(res[False], res[True], strict=True)
        ),
        "raw_all": [r[0] for r in res[False]],
        "wrapped_all": [r[0] for r in res[True]],
        "cpu": {w: (med(w, 1), med(w, 2)) for w in (False, True)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items and rounds")
    ap.add_argument("--method", default=multiprocessing.get_start_method(), help="start method")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per variant (default 5, quick 3)")
    ap.add_argument("--small", type=int, default=0, help="number of small items")
    ap.add_argument("--large", type=int, default=0, help="number of 10 KB items")
    ap.add_argument(
        "--pin", action="store_true", help="pin the producer to CPU 0 and the consumer to CPU 1"
    )
    ap.add_argument(
        "--wrap",
        choices=("both", "producer", "consumer"),
        default="both",
        help="which side uses the harness queue (default both; the others are diagnostics)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print every round")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    n_small = args.small or (50_000 if args.quick else 200_000)
    n_large = args.large or (5_000 if args.quick else 20_000)
    ctx = multiprocessing.get_context(args.method)
    rows = [
        bench(ctx, args.method, "small", n_small, None, rounds, args.pin, args.wrap),
        bench(ctx, args.method, "10KB", n_large, b"x" * 10240, rounds, args.pin, args.wrap),
    ]
    print(
        f"Python {sys.version.split()[0]}, {sys.platform}, start method {args.method}"
        + ("" if args.wrap == "both" else f", only the {args.wrap} uses the harness queue")
    )
    head = (
        f"{'items':<6} {'count':>8} {'rounds':>6} {'raw items/s':>12} {'wrapped items/s':>16} "
        f"{'ratio':>6} {'paired':>7} {'target':>7}"
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
            f"{r['wrapped']:>16,.0f} {r['ratio']:>5.3f}x {r['paired']:>6.3f}x "
            f"{'>=' + format(target, '.2f'):>7} "
            f"{'ok' if ok else 'MISS'}"
        )
        if args.verbose:
            print("   raw:     " + " ".join(f"{x:,.0f}" for x in r["raw_all"]))
            print("   wrapped: " + " ".join(f"{x:,.0f}" for x in r["wrapped_all"]))
    print(
        "ratio: of the medians; paired: median of the rounds' ratios (raw and wrapped run\n"
        "back to back).  CPU time per item, in µs (medians; the producer's includes its\n"
        "feeder thread):"
    )
    for r in rows:
        (rp, rc), (wp, wc) = r["cpu"][False], r["cpu"][True]
        print(
            f"  {r['label']:<6} producer raw {rp * 1e6:6.2f}  wrapped {wp * 1e6:6.2f}"
            f"  (+{(wp - rp) * 1e6:.2f})   consumer raw {rc * 1e6:6.2f}  wrapped {wc * 1e6:6.2f}"
            f"  (+{(wc - rc) * 1e6:.2f})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
