"""Throughput of a harness queue against the raw ``multiprocessing`` queue.

One producer process puts items into a queue, one consumer process gets them.
Variants, in the same run:

* raw:     ``ctx.Queue()``
* wrapped: ``Harness.queue()``: no faults, every operation recorded in the history
  (a BEGIN and an END event per ``put`` and per ``get``, in both processes)

Items: small ints and 10 KB ``bytes``.  The targets (wrapped items/s over raw
items/s) are at least 0.90x (small) and 0.98x (10 KB), judged on ``paired``: the
median of the ratios of raw and wrapped measurements made back to back.

Two modes:

* ``bursts`` (the default): the same two processes hold both queues and move the
  items in short bursts, alternating raw and wrapped (ABBA order); a burst starts
  once the consumer has got all of the previous one.  Each burst is timed from the
  producer's first ``put`` to the consumer's last ``get``.  Neighbouring bursts see
  the same machine, processes and CPUs, so the noise of a shared machine (which moves
  a whole run by +-15% here, see ``--aa``) cancels out of the paired ratios.
* ``rounds``: each measurement is a run of its own (new processes, a new queue),
  raw and wrapped rounds alternating; also prints what the first operation of a
  process costs (where a harness queue creates the process's history file).

    .venv/bin/python benchmarks/bench_queue.py [--quick] [--mode rounds] [--aa]
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import multiprocessing.connection
import statistics
import sys
from typing import Any

if __package__:
    from . import _targets
else:  # run as a script: benchmarks/ is sys.path[0]
    import _targets  # type: ignore[no-redef]

TARGETS = {"small": 0.90, "10KB": 0.98}
ITEMS = {"small": None, "10KB": b"x" * 10240}


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return (xs[0],) * 3
    q1, q2, q3 = statistics.quantiles(xs, n=4)
    return q1, q2, q3


def _median_ci(xs: list[float]) -> tuple[float, float]:
    """A distribution-free 95 % confidence interval of the median of ``xs``: the order
    statistics n/2 -+ 0.98 sqrt(n) (normal approximation of the binomial)."""
    ys = sorted(xs)
    n = len(ys)
    half = 0.98 * math.sqrt(n)
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(n / 2 + half + 1))
    return ys[lo - 1], ys[hi - 1]


def _queues(ctx: Any, method: str, aa: bool, side: str) -> tuple[Any, Any, Any, Any]:
    """(harness or None, raw queue, the producer's and the consumer's other queue)."""
    if aa:
        q = ctx.Queue()
        return None, ctx.Queue(), q, q
    from mpfault import Harness

    h = Harness(method, deadline=600.0)
    q = h.queue()
    qp, qc = q, q
    if side != "both":  # wrap one side only (to see which one costs what)
        qp, qc = (q, q.wrapped) if side == "producer" else (q.wrapped, q)
    return h, None, qp, qc


def _collect(out: Any, k: int, procs: list[Any]) -> list[Any]:
    """``k`` results from the SimpleQueue ``out``; a RuntimeError, not a hang, when the
    children exit (one killed, or failing) before sending them all."""
    got: list[Any] = []
    reader = out._reader
    live = {p.sentinel: p for p in procs}
    while len(got) < k:
        ready = multiprocessing.connection.wait([reader, *live])
        if reader in ready:
            got.append(out.get())
            continue
        for s in ready:
            p = live.pop(s)
            p.join()
            if p.exitcode:
                raise RuntimeError(f"benchmark child {p.name} failed: exit code {p.exitcode}")
        if not live and not reader.poll():
            raise RuntimeError(f"the benchmark children exited with {k - len(got)} results unsent")
    return got


def _close(h: Any, *queues: Any) -> None:
    if h is not None:
        h.close()
    for q in queues:
        if q is not None and hasattr(q, "join_thread"):
            q.close()
            q.join_thread()


def _check_history(h: Any, want: int) -> None:
    """Every operation is in the history (not timed)."""
    if h is not None:
        got = len(h.history.events)
        if got != want:
            raise RuntimeError(f"expected {want} recorded operations, got {got}")


# -- bursts ---------------------------------------------------------------------------------


def bench_bursts(
    ctx: Any, method: str, label: str, m: int, pairs: int, pin: bool, side: str, aa: bool
) -> dict[str, Any]:
    """``pairs`` pairs of bursts of ``m`` items, raw and wrapped, in one pair of processes."""
    item = ITEMS[label]
    h, raw, qp, qc = _queues(ctx, method, aa, side)
    if raw is None:
        raw = ctx.Queue()
    # burst k uses queue order[k] (0 raw, 1 wrapped): one warm-up burst of each, then
    # ABBA pairs, so that neither variant always goes first
    order = [0, 1] + [k for j in range(pairs) for k in ((0, 1) if j % 2 == 0 else (1, 0))]
    out = ctx.SimpleQueue()
    ready_r, ready_w = ctx.Pipe(duplex=False)
    cpus = (0, 1) if pin else (None, None)
    try:
        prod = ctx.Process(
            target=_targets.burst_producer, args=([raw, qp], order, m, item, ready_r, out, cpus[0])
        )
        cons = ctx.Process(
            target=_targets.burst_consumer, args=([raw, qc], order, m, ready_w, out, cpus[1])
        )
        cons.start()
        prod.start()
        got = dict(_collect(out, 2, [prod, cons]))
        prod.join()
        cons.join()
        if prod.exitcode or cons.exitcode:
            raise RuntimeError(f"child failed: {prod.exitcode=} {cons.exitcode=}")
        bursts = len(order) // 2
        _check_history(h, (2 if side == "both" else 1) * m * bursts)
    finally:
        _close(h, raw, qp if h is None else None)  # an A/A run: qp is the second raw queue
    per: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}
    timed = zip(order, got["producer"], got["consumer"], strict=True)
    for k, (t0, cpu_p), (t1, cpu_c) in list(timed)[2:]:
        per[k].append((m / ((t1 - t0) / 1e9), cpu_p / m, cpu_c / m))
    paired = [w[0] / r[0] for r, w in zip(per[0], per[1], strict=True)]
    total = {k: len(v) * m / sum(m / x[0] for x in v) for k, v in per.items()}

    def med(k: int, i: int) -> float:
        return statistics.median(x[i] for x in per[k])

    return {
        "label": label,
        "n": m,
        "rounds": pairs,
        "raw": med(0, 0),
        "wrapped": med(1, 0),
        "ratio": total[1] / total[0],
        "paired": _quartiles(paired),
        "ci": _median_ci(paired),
        "raw_all": [x[0] for x in per[0]],
        "wrapped_all": [x[0] for x in per[1]],
        "cpu": {w: (med(int(w), 1), med(int(w), 2)) for w in (False, True)},
        "first": None,
    }


# -- rounds ---------------------------------------------------------------------------------


def _round(
    ctx: Any,
    method: str,
    wrapped: bool,
    n: int,
    item: Any,
    pin: bool,
    side: str = "both",
    check: bool = True,
) -> tuple[float, float, float, float]:
    """One producer -> consumer run of ``n`` items, in processes of its own.

    Returns (items per second, producer CPU seconds per item, consumer CPU seconds
    per item, seconds the first put took), all but the last from the second item on.
    """
    h = None
    if wrapped:
        h, _, qp, qc = _queues(ctx, method, False, side)
    else:
        qp = qc = ctx.Queue()
    out = ctx.SimpleQueue()
    barrier = ctx.Barrier(2)
    done = ctx.Event()
    cpus = (0, 1) if pin else (None, None)
    try:
        prod = ctx.Process(
            target=_targets.producer, args=(qp, n, item, barrier, out, done, cpus[0])
        )
        cons = ctx.Process(target=_targets.consumer, args=(qc, n, barrier, out, cpus[1]))
        cons.start()
        prod.start()
        # first_put, first_put_cost, last_get, consumer_cpu
        got = dict(_collect(out, 4, [prod, cons]))
        done.set()
        got.update(_collect(out, 1, [prod]))  # producer_cpu
        prod.join()
        cons.join()
        if prod.exitcode or cons.exitcode:
            raise RuntimeError(f"child failed: {prod.exitcode=} {cons.exitcode=}")
        if check:
            _check_history(h, 2 * n if side == "both" else n)
    finally:
        _close(h, None if h is not None else qp)
    rate = (n - 1) / ((got["last_get"] - got["first_put"]) / 1e9)
    return (
        rate,
        got["producer_cpu"] / (n - 1),
        got["consumer_cpu"] / (n - 1),
        got["first_put_cost"] / 1e9,
    )


def bench_rounds(
    ctx: Any, method: str, label: str, n: int, rounds: int, pin: bool, side: str, aa: bool
) -> dict[str, Any]:
    """Alternating rounds of both variants (with ``aa``, "wrapped" is raw as well)."""
    item = ITEMS[label]
    warm = max(n // 20, 100)
    _round(ctx, method, False, warm, item, pin)  # warm up both
    _round(ctx, method, not aa, warm, item, pin, side)
    res: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
    for i in range(rounds):
        gc.collect()
        # alternate the order so a drift of the machine hits both sides alike
        for wrapped in (True, False) if i % 2 else (False, True):
            res[wrapped].append(
                _round(ctx, method, wrapped and not aa, n, item, pin, side, check=i == 0)
            )

    def med(wrapped: bool, k: int) -> float:
        return statistics.median(r[k] for r in res[wrapped])

    paired = [w[0] / r[0] for r, w in zip(res[False], res[True], strict=True)]
    return {
        "label": label,
        "n": n,
        "rounds": rounds,
        "raw": med(False, 0),
        "wrapped": med(True, 0),
        "ratio": med(True, 0) / med(False, 0),
        "paired": _quartiles(paired),
        "ci": _median_ci(paired),
        "raw_all": [r[0] for r in res[False]],
        "wrapped_all": [r[0] for r in res[True]],
        "cpu": {w: (med(w, 1), med(w, 2)) for w in (False, True)},
        "first": {w: med(w, 3) for w in (False, True)},
    }


# -- report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items and rounds")
    ap.add_argument("--method", default=multiprocessing.get_start_method(), help="start method")
    ap.add_argument(
        "--mode",
        choices=("bursts", "rounds"),
        default="bursts",
        help="bursts in one pair of processes (default), or rounds of their own",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="pairs of bursts (default 150, quick 10) or rounds per variant (default 15, quick 3)",
    )
    ap.add_argument("--small", type=int, default=0, help="small items per burst/round")
    ap.add_argument("--large", type=int, default=0, help="10 KB items per burst/round")
    ap.add_argument(
        "--items",
        choices=["both", "small", "10KB"],
        default="both",
        help="which item sizes to measure (default both)",
    )
    ap.add_argument(
        "--pin", action="store_true", help="pin the producer to CPU 0 and the consumer to CPU 1"
    )
    ap.add_argument(
        "--wrap",
        choices=("both", "producer", "consumer"),
        default="both",
        help="which side uses the harness queue (default both; the others are diagnostics)",
    )
    ap.add_argument(
        "--aa",
        action="store_true",
        help="raw against raw: the ratios then show the machine's noise, not the harness",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print every measurement")
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context(args.method)
    if args.mode == "bursts":
        rounds = args.rounds or (10 if args.quick else 150)
        sizes = {"small": args.small or 3_000, "10KB": args.large or 1_000}
        unit = "burst"
    else:
        rounds = args.rounds or (3 if args.quick else 15)
        sizes = {
            "small": args.small or (50_000 if args.quick else 100_000),
            "10KB": args.large or (5_000 if args.quick else 10_000),
        }
        unit = "round"
    rows = []
    for label in ("small", "10KB") if args.items == "both" else (args.items,):
        fn = bench_bursts if args.mode == "bursts" else bench_rounds
        rows.append(fn(ctx, args.method, label, sizes[label], rounds, args.pin, args.wrap, args.aa))
    from mpfault._runtime import events

    recorder = (
        "C (_fastrec)"
        if events._fastrec is not None
        else f"pure Python ({events.PURE_ENV} set or _fastrec not built)"
    )
    print(
        f"Python {sys.version.split()[0]}, {sys.platform}, start method {args.method}, "
        f"mode {args.mode}, recorder {recorder}"
        + ("" if args.wrap == "both" else f", only the {args.wrap} uses the harness queue")
        + (", A/A: raw against raw" if args.aa else "")
    )
    pairs = "pairs" if args.mode == "bursts" else "rounds"
    head = (
        f"{'items':<6} {unit + ' of':>8} {pairs:>6} {'raw items/s':>12} {'wrapped items/s':>16} "
        f"{'ratio':>6} {'paired [95% CI]':>24} {'[q1, q3]':>15} {'target':>7}"
    )
    print(head)
    print("-" * (len(head) + 5))
    failed = False
    for r in rows:
        target = TARGETS[r["label"]]
        q1, q2, q3 = r["paired"]
        lo, hi = r["ci"]
        ok = q2 >= target
        failed |= not ok
        print(
            f"{r['label']:<6} {r['n']:>8} {r['rounds']:>6} {r['raw']:>12,.0f} "
            f"{r['wrapped']:>16,.0f} {r['ratio']:>5.3f}x "
            f"{q2:>7.3f}x [{lo:.3f}, {hi:.3f}] [{q1:.3f}, {q3:.3f}] "
            f"{'>=' + format(target, '.2f'):>7} "
            f"{'ok' if ok else 'MISS'}"
            + ("  (the CI holds the target: not settled)" if lo < target <= hi else "")
        )
        if args.verbose:
            print("   raw:     " + " ".join(f"{x:,.0f}" for x in r["raw_all"]))
            print("   wrapped: " + " ".join(f"{x:,.0f}" for x in r["wrapped_all"]))
    print(
        "items/s: medians.  paired: median of the ratios of the measurements made back to\n"
        "back, the figure the target is judged on, with its 95 % confidence interval (more\n"
        "pairs narrow it) and the ratios' quartiles.  ratio: of the "
        + ("items/s over all bursts" if args.mode == "bursts" else "median items/s")
        + ".\nCPU time per item, in µs (medians; the producer's includes its feeder thread)"
        + (", and what\nthe first put cost (not timed), in ms:" if args.mode == "rounds" else ":")
    )
    for r in rows:
        (rp, rc), (wp, wc) = r["cpu"][False], r["cpu"][True]
        line = (
            f"  {r['label']:<6} producer raw {rp * 1e6:6.2f}  wrapped {wp * 1e6:6.2f}"
            f"  ({(wp - rp) * 1e6:+.2f})   consumer raw {rc * 1e6:6.2f}  wrapped {wc * 1e6:6.2f}"
            f"  ({(wc - rc) * 1e6:+.2f})"
        )
        if r["first"] is not None:
            line += f"   first put {r['first'][False] * 1e3:.2f} / {r['first'][True] * 1e3:.2f}"
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
