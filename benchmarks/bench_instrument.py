"""Instrumented against plain, in the same run: what instrumentation costs real code.

Three workloads, each run plain (no mpfault) and instrumented (``Harness(instrument=True)``:
every queue, pipe and process recorded), alternating, ``--rounds`` pairs each; the ratio
is instrumented throughput / plain throughput (median of the pairs; target >= 0.90):

* ``multiprocessing.Pool(2).map`` of 20 000 trivial tasks, chunksize 1;
* ``ProcessPoolExecutor(2).map`` of 5 000 trivial tasks;
* a plain ``multiprocessing.Queue``, 1 producer -> 1 consumer, small ints.

Each line also shows the CPU time an item costs, all processes of the run together
(``getrusage`` of this process and its reaped children), plain and instrumented, and their
ratio: on a busy machine the throughput of these latency-bound pipelines moves by +-30 %
from run to run, the CPU they burn much less (but Pool's worker-handler thread spins while
results wait unread, ~15 us a turn, and how often depends on timing).  Under forkserver the
workers are the fork server's children: only this process's CPU is counted there.

Run: ``python benchmarks/bench_instrument.py [--rounds 5] [--start-method fork]
[--only pool|executor|queue]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import mpfault


def nothing(x: int) -> int:
    return x


def produce(q: Any, n: int) -> None:
    for i in range(n):
        q.put(i)
    q.put(None)


#: turns of Pool's worker-handler loop (``Pool._wait_for_updates`` calls), counted in the
#: test process for plain and instrumented runs alike: it wakes whenever results wait
#: unread, and its turns (~15 us each, under the GIL) are what spreads Pool's throughput
TURNS = [0]


def _count_turns() -> None:
    import multiprocessing.pool as mpp

    orig = mpp.Pool.__dict__["_wait_for_updates"].__func__

    def _wait_for_updates(sentinels: Any, change_notifier: Any, timeout: Any = None) -> Any:
        TURNS[0] += 1
        return orig(sentinels, change_notifier, timeout)

    mpp.Pool._wait_for_updates = staticmethod(_wait_for_updates)  # type: ignore[attr-defined]


def pool_map(ctx: Any, n: int) -> None:
    with ctx.Pool(2) as pool:
        assert len(pool.map(nothing, range(n), chunksize=1)) == n
        pool.close()
        pool.join()


def executor_map(ctx: Any, n: int) -> None:
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert sum(1 for _ in ex.map(nothing, range(n))) == n


def queue_1to1(ctx: Any, n: int) -> None:
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, n))
    p.start()
    got = 0
    while q.get() is not None:
        got += 1
    p.join()
    assert got == n


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of this process and its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = me.ru_utime + me.ru_stime
    return mine, mine + kids.ru_utime + kids.ru_stime


def timed(
    fn: Callable[[Any, int], None], ctx: Any, n: int, instrument: bool, method: str
) -> tuple[float, float, float, float]:
    """Items per second of one run, CPU microseconds per item (all processes), worker-
    handler turns per item (Pool only), CPU microseconds per item of this process."""
    TURNS[0] = 0
    if instrument:
        with mpfault.Harness(start_method=method, instrument=True, deadline=None):
            c0 = _cpu()
            t0 = time.perf_counter()
            fn(ctx, n)
            dt = time.perf_counter() - t0
            c1 = _cpu()
    else:
        c0 = _cpu()
        t0 = time.perf_counter()
        fn(ctx, n)
        dt = time.perf_counter() - t0
        c1 = _cpu()
    cpu, mine = c1[1] - c0[1], c1[0] - c0[0]
    return n / dt, cpu / n * 1e6, TURNS[0] / n, mine / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="pairs per workload (default 9)")
    ap.add_argument("--start-method", default="fork")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the item counts")
    ap.add_argument(
        "--only",
        choices=("pool", "executor", "queue"),
        action="append",
        help="run only this workload (repeatable; default: all three)",
    )
    args = ap.parse_args()
    _count_turns()
    ctx = multiprocessing.get_context(args.start_method)
    work = [
        ("Pool(2).map, chunksize 1", pool_map, 20_000, "pool"),
        ("ProcessPoolExecutor(2).map", executor_map, 5_000, "executor"),
        ("Queue 1 -> 1", queue_1to1, 50_000, "queue"),
    ]
    work = [w for w in work if not args.only or w[3] in args.only]
    print(f"start method {args.start_method}, {args.rounds} pairs per workload")
    for title, fn, n, _ in work:
        n = max(1, int(n * args.scale))
        timed(fn, ctx, max(1, n // 10), False, args.start_method)  # warm up
        ratios, plain, inst, cpu_plain, cpu_inst = [], [], [], [], []
        turns_plain, turns_inst, mine_plain, mine_inst = [], [], [], []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {i: timed(fn, ctx, n, i, args.start_method) for i in order}
            plain.append(got[False][0])
            inst.append(got[True][0])
            ratios.append(got[True][0] / got[False][0])
            cpu_plain.append(got[False][1])
            cpu_inst.append(got[True][1])
            turns_plain.append(got[False][2])
            turns_inst.append(got[True][2])
            mine_plain.append(got[False][3])
            mine_inst.append(got[True][3])
        cp, ci = statistics.median(cpu_plain), statistics.median(cpu_inst)
        print(
            f"{title:<28} plain {statistics.median(plain):>9.0f}/s  instrumented "
            f"{statistics.median(inst):>9.0f}/s  ratio {statistics.median(ratios):.3f}x "
            f"(pairs {min(ratios):.3f}..{max(ratios):.3f}; best of each "
            f"{max(inst) / max(plain):.3f}x)  CPU/item {cp:.1f} -> {ci:.1f} us ({cp / ci:.3f}x; "
            f"this process {statistics.median(mine_plain):.1f} -> "
            f"{statistics.median(mine_inst):.1f})"
        )
        if any(turns_plain):
            print(
                f"{'':<28} worker-handler turns/item: plain "
                f"{' '.join(f'{t:.2f}' for t in turns_plain)}; instrumented "
                f"{' '.join(f'{t:.2f}' for t in turns_inst)}"
            )


if __name__ == "__main__":
    main()
