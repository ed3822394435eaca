"""Stress: a clean ProcessPoolExecutor(2).map of 200 items, instrumented, N times: the
history must show no lost and no duplicated call or result item (issue 12).

Run: ``python benchmarks/stress_instrument_executor.py [fork|spawn|forkserver] [N=100]``.
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor

import mpfault


def double(x: int) -> int:
    return 2 * x


def main() -> None:
    method = sys.argv[1] if len(sys.argv) > 1 else "fork"
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    bad = 0
    for r in range(reps):
        with mpfault.Harness(start_method=method, instrument=True) as h:
            with ProcessPoolExecutor(2, mp_context=h.ctx) as ex:
                assert list(ex.map(double, range(200))) == [2 * x for x in range(200)]
            hist = h.history
            queues = {e.queue for e in hist.events}
            lost = [
                i
                for q in queues
                for i in hist.lost(q)
                if "_CallItem" in i.key or "_ResultItem" in i.key
            ]
            dup = [i for q in queues for i in hist.duplicated(q)]
            if lost or dup:
                bad += 1
                print("BAD", r, lost[:2], dup[:2])
    print(method, reps, "repetitions, bad:", bad)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
