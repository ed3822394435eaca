"""Throughput of a served queue against a plain manager queue.

One producer program puts items into a queue served by a ``multiprocessing.managers``
server, one consumer program gets them; both are independent programs (plain scripts
that use only ``multiprocessing.managers``).  Variants, in the same run:

* plain:  a ``BaseManager`` server of a ``queue.Queue`` (``get_server().serve_forever()``)
  in a process of its own, the programs started with ``subprocess``;
* served: ``Harness.serve()`` (every operation recorded at the server, named by the
  program; no network fault, so no proxy) and ``Harness.program()``.

Each round starts a fresh server and both programs; the consumer times itself from
its first item to the sentinel (the programs' start-up is not timed), so a round
measures the steady state of 1 producer -> 1 consumer.  Rounds alternate (ABBA).
The target: the served queue moves at least 0.90x the plain queue's items/s, judged
on ``paired`` (the median of the ratios of rounds made back to back).

    .venv/bin/python benchmarks/bench_serve.py [--quick] [--items N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import mpfault

TARGET = 0.90

PRODUCER = """
import os, sys
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register("get_queue")
host, port = os.environ["MPFAULT_QUEUE"].rsplit(":", 1)
m = M(address=(host, int(port)), authkey=bytes.fromhex(os.environ["MPFAULT_AUTHKEY"]))
m.connect()
q = m.get_queue()
for i in range(int(sys.argv[1])):
    q.put(i)
q.put(None)
"""

CONSUMER = """
import os, sys, time
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register("get_queue")
host, port = os.environ["MPFAULT_QUEUE"].rsplit(":", 1)
m = M(address=(host, int(port)), authkey=bytes.fromhex(os.environ["MPFAULT_AUTHKEY"]))
m.connect()
q = m.get_queue()
q.get()
t0 = time.perf_counter()
n = 0
while q.get() is not None:
    n += 1
print(n / (time.perf_counter() - t0), flush=True)
"""

SERVER = """
import queue, sys
from multiprocessing.managers import BaseManager
q = queue.Queue()
class M(BaseManager): pass
M.register("get_queue", callable=lambda: q)
s = M(address=("127.0.0.1", 0), authkey=bytes.fromhex(sys.argv[1])).get_server()
print(s.address[1], flush=True)
s.serve_forever()
"""


def _rate(out: str) -> float:
    return float(out.strip().splitlines()[-1])


def plain_round(d: str, items: int) -> float:
    """Items/s through a plain manager queue."""
    key = os.urandom(32).hex()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, key], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        env = {**os.environ, "MPFAULT_QUEUE": f"127.0.0.1:{port}", "MPFAULT_AUTHKEY": key}
        cons = subprocess.Popen(
            [sys.executable, os.path.join(d, "consumer.py")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        prod = subprocess.Popen(
            [sys.executable, os.path.join(d, "producer.py"), str(items)], env=env
        )
        out, _ = cons.communicate(timeout=300)
        prod.wait(60)
        return _rate(out)
    finally:
        server.kill()
        server.wait(10)


def served_round(d: str, items: int) -> float:
    """Items/s through ``Harness.serve()``, the programs started by ``Harness.program()``."""
    with mpfault.Harness(deadline=300) as h:
        h.serve()
        cons = h.program([sys.executable, os.path.join(d, "consumer.py")], name="consumer")
        prod = h.program([sys.executable, os.path.join(d, "producer.py"), str(items)])
        if cons.wait(300) != 0 or prod.wait(60) != 0:
            raise SystemExit(f"a program failed: {cons.output()} {prod.output()}")
        rate = _rate(cons.output()[0])
        gets = len(h.history.ops("get", process="consumer"))
        if gets != items + 1:
            raise SystemExit(f"the history holds {gets} gets, expected {items + 1}")
        return rate


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if the target is missed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few rounds, few items")
    ap.add_argument("--items", type=int, default=None, help="items per round (default 5000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of each variant (default 20)")
    args = ap.parse_args(argv)
    items = args.items or (1000 if args.quick else 5000)
    rounds = args.rounds or (3 if args.quick else 20)
    plain: list[float] = []
    served: list[float] = []
    pairs: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        for name, text in (("producer.py", PRODUCER), ("consumer.py", CONSUMER)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        plain_round(d, items // 4)  # warm-up (page cache, imports)
        served_round(d, items // 4)
        for r in range(rounds):
            order = (plain_round, served_round) if r % 2 == 0 else (served_round, plain_round)
            got = {fn: fn(d, items) for fn in order}
            p, s = got[plain_round], got[served_round]
            plain.append(p)
            served.append(s)
            pairs.append(s / p)
            print(f"round {r + 1:2d}: plain {p:8.0f}/s  served {s:8.0f}/s  ratio {s / p:.3f}")
    mp, ms = statistics.median(plain), statistics.median(served)
    paired = statistics.median(pairs)
    q = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [paired, paired, paired]
    print(
        f"\n1 producer program -> 1 consumer program, {items} small ints a round, "
        f"{rounds} rounds each (Python {sys.version.split()[0]})"
    )
    print(f"plain manager queue : {mp:8.0f} items/s (median)")
    print(f"served (recorded)   : {ms:8.0f} items/s (median)")
    print(
        f"ratio {ms / mp:.3f}; paired {paired:.3f} (quartiles {q[0]:.3f}..{q[2]:.3f}); "
        f"target >= {TARGET:.2f}"
    )
    ok = paired >= TARGET
    print("PASS" if ok else "FAIL: below the target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
