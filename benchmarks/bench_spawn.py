"""Start-up cost of a harness child against a raw ``multiprocessing`` process.

For every start method (fork, spawn, forkserver), in the same run, interleaved:

* raw:     ``p = ctx.Process(target=trivial); p.start(); p.join()``
* harness: ``h.spawn(trivial).result()``  (the issue's measure), and, for
           information, the same followed by ``.join()``

``ratio`` is ``median(harness) / median(raw)``; ``paired`` is the median of the
ratios of the pairs run back to back (steadier on a busy machine), with its
quartiles.  The target is at most 1.15x.

Harness creation and teardown (``Harness()``: a temporary run directory; ``close()``:
reaping the children, removing the directory) are *excluded* from the timed region: a
test pays them once whatever number of children it starts, and the issue is about the
cost of a child (``spawn`` + ``result`` of a trivial target).  Each repetition uses a
fresh harness, so every timed spawn is a test's first child (no children or control
channels piling up); the median cost of ``Harness()`` + ``close()`` is printed apart.

Run it outside pytest::

    .venv/bin/python benchmarks/bench_spawn.py [--quick] [--methods fork,spawn]

Spawn and forkserver children import the runtime (``mpfault._runtime``) from source
when bytecode caching is off (``PYTHONDONTWRITEBYTECODE``/``-B``, printed in the
header): that is slower than with the ``.pyc`` files an installation has.
"""

from __future__ import annotations

# Only what a child needs at the top: spawn and forkserver children re-run this
# script (as ``__mp_main__``), raw and harness children alike, so anything imported
# here would be paid by both and flatter the ratio.
import multiprocessing
import sys
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a child ms
if TYPE_CHECKING:
    from typing import Any

if __package__:
    from . import _targets
else:  # run as a script: benchmarks/ is sys.path[0]
    import _targets  # type: ignore[no-redef]

TARGET_RATIO = 1.15
REPS = {"fork": 60, "spawn": 16, "forkserver": 30}
QUICK_REPS = {"fork": 16, "spawn": 4, "forkserver": 8}
WARMUP = 3


def _raw(ctx: Any, with_queue: bool) -> float:
    args = (ctx.Queue(),) if with_queue else ()
    t0 = time.perf_counter()
    p = ctx.Process(target=_targets.trivial, args=args)
    p.start()
    p.join()
    t = time.perf_counter() - t0
    if p.exitcode != 0:
        raise RuntimeError(f"raw child exited with {p.exitcode}")
    return t


def _harness(method: str, with_queue: bool) -> tuple[float, float, float]:
    """(spawn+result, spawn+result+join, harness create+close), in seconds."""
    from mpfault import Harness

    t_setup = time.perf_counter()
    h = Harness(method, deadline=60.0)
    setup = time.perf_counter() - t_setup
    try:
        args = (h.queue(),) if with_queue else ()
        t0 = time.perf_counter()
        c = h.spawn(_targets.trivial, *args)
        c.result(timeout=30)
        t1 = time.perf_counter()
        code = c.join(timeout=30)
        t2 = time.perf_counter()
        if code != 0:
            raise RuntimeError(f"harness child exited with {code}")
    finally:
        t_close = time.perf_counter()
        h.close()
        setup += time.perf_counter() - t_close
    return t1 - t0, t2 - t0, setup


def bench(method: str, reps: int, with_queue: bool = False) -> dict[str, Any]:
    import gc
    import statistics

    from mpfault import Harness

    ctx = multiprocessing.get_context(method)
    # A first harness before any process of this context is started: under
    # forkserver it sets the server's preload list, as in a real test session.
    Harness(method).close()
    for _ in range(WARMUP):
        _raw(ctx, with_queue)
        _harness(method, with_queue)
    raw: list[float] = []
    res: list[float] = []
    joined: list[float] = []
    setup: list[float] = []
    gc.collect()
    for i in range(reps):
        # alternate the order so a drift of the machine hits both sides alike
        if i % 2:
            a, b, s = _harness(method, with_queue)
            raw.append(_raw(ctx, with_queue))
        else:
            raw.append(_raw(ctx, with_queue))
            a, b, s = _harness(method, with_queue)
        res.append(a)
        joined.append(b)
        setup.append(s)
    m_raw = statistics.median(raw)
    m_res = statistics.median(res)
    m_join = statistics.median(joined)
    paired = sorted(h / r for h, r in zip(res, raw, strict=True))
    return {
        "method": method,
        "reps": reps,
        "raw": m_raw,
        "result": m_res,
        "joined": m_join,
        "setup": statistics.median(setup),
        "ratio": m_res / m_raw,
        "paired": statistics.median(paired),
        "paired_q": (paired[len(paired) // 4], paired[(3 * len(paired)) // 4]),
        "ratio_join": m_join / m_raw,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument(
        "--methods",
        default=",".join(multiprocessing.get_all_start_methods()),
        help="comma-separated start methods (default: all this platform has)",
    )
    ap.add_argument("--reps", type=int, default=0, help="repetitions for every method")
    ap.add_argument(
        "--queue",
        action="store_true",
        help="give the child a queue (raw: ctx.Queue(); harness: h.queue()), as a real test "
        "does: the child then also imports the runtime's queue wrapper",
    )
    args = ap.parse_args(argv)
    table = QUICK_REPS if args.quick else REPS
    methods = [m for m in args.methods.split(",") if m]
    rows = [bench(m, args.reps or table.get(m, 10), args.queue) for m in methods]
    print(
        f"Python {sys.version.split()[0]} on {sys.platform}, {multiprocessing.cpu_count()} CPUs; "
        f"bytecode caching {'OFF' if sys.dont_write_bytecode else 'on'}; medians in ms"
        + ("; the child gets a queue" if args.queue else "")
    )
    head = (
        f"{'method':<11} {'reps':>4} {'raw start+join':>14} {'spawn+result':>12} "
        f"{'ratio':>6} {'paired (quartiles)':>21} {'target':>6}      "
        f"{'+join':>6} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    failed = False
    for r in rows:
        ok = r["ratio"] <= TARGET_RATIO
        failed |= not ok
        q1, q3 = r["paired_q"]
        print(
            f"{r['method']:<11} {r['reps']:>4} {r['raw'] * 1e3:>14.2f} {r['result'] * 1e3:>12.2f} "
            f"{r['ratio']:>5.2f}x {r['paired']:>6.2f}x ({q1:.2f}-{q3:.2f}) "
            f"{'<=' + format(TARGET_RATIO, '.2f'):>6} {'ok' if ok else 'MISS':<4}"
            f"{r['joined'] * 1e3:>7.2f} {r['ratio_join']:>5.2f}x"
        )
    print(
        "+join: the harness child also joined (it has sent its result, then exits).\n"
        "Not timed: Harness() + close(), once per test: "
        + ", ".join(f"{r['method']} {r['setup'] * 1e3:.1f} ms" for r in rows)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
