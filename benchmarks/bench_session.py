"""What the plugin costs a project that merely has it installed: a whole pytest session
of a one-test file that does not use mpfault, against the same session with
``-p no:mpfault``.

Each run is a fresh ``python -m pytest`` process (start-up, plugin loading,
collection, the run, the report: what every ``pytest``, ``pytest --co`` and IDE
discovery pays), timed from outside.  The two sides run interleaved, in pairs whose
order alternates; ``paired`` is the median of the pairs' ratios (with its quartiles and
a 95 % confidence interval), ``ratio`` the ratio of the medians.  The target is at
most 1.03x.

By default both bytecode modes are measured, one after the other:

* ``cached``: bytecode caching on (``PYTHONDONTWRITEBYTECODE`` unset; a warm-up run
  writes the ``.pyc`` files), as in an installed package;
* ``source``: caching off (``PYTHONDONTWRITEBYTECODE=1``, this machine's default) and,
  for an editable install (mpfault imported from a source tree, not site-packages),
  the tree's ``__pycache__`` directories removed first: every mpfault module the
  session loads is compiled again in every run, so the size of what the plugin
  imports shows.  (The standard library's and the other packages' ``.pyc`` files stay,
  as on this machine.)

Run it from the repository root, with the project's virtualenv::

    .venv/bin/python benchmarks/bench_session.py [--pairs 30] [--modes cached,source]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_RATIO = 1.03
TEST_FILE = "def test_plain():\n    assert sum(range(10)) == 45\n"


def _run(cmd: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    t = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return t


def _ci(ratios: list[float], rng: random.Random, rounds: int = 2000) -> tuple[float, float]:
    """A bootstrap 95 % confidence interval of the median of ``ratios``."""
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return medians[int(rounds * 0.025)], medians[int(rounds * 0.975)]


def _drop_source_pycache() -> str:
    """Remove the ``__pycache__`` directories of an editable mpfault; say what was done."""
    import mpfault

    root = os.path.dirname(mpfault.__file__)
    if "site-packages" in root.split(os.sep):
        return "installed package: its .pyc files stay"
    for dirpath, dirnames, _ in os.walk(root):
        if "__pycache__" in dirnames:
            shutil.rmtree(os.path.join(dirpath, "__pycache__"), ignore_errors=True)
    return f"no .pyc files under {root}"


def measure(mode: str, pairs: int, warmup: int, extra: list[str]) -> float:
    """Print one mode's figures; return its paired median ratio."""
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    if mode == "source":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        print(f"source: {_drop_source_pycache()}")
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    base = [sys.executable, "-m", "pytest", *extra]
    with tempfile.TemporaryDirectory(prefix="mpf-bench-session-") as d:
        with open(os.path.join(d, "test_one.py"), "w") as f:
            f.write(TEST_FILE)
        with open(os.path.join(d, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        sides = {"mpfault": base, "no:mpfault": [*base, "-p", "no:mpfault"]}
        for _ in range(warmup):
            for cmd in sides.values():
                _run(cmd, d, env)
        times: dict[str, list[float]] = {k: [] for k in sides}
        ratios = []
        for i in range(pairs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            got = {k: _run(sides[k], d, env) for k in order}
            for k, t in got.items():
                times[k].append(t)
            ratios.append(got["mpfault"] / got["no:mpfault"])
    a, b = (statistics.median(times[k]) for k in sides)
    q = statistics.quantiles(ratios, n=4)
    low, high = _ci(ratios, random.Random(0))
    paired = statistics.median(ratios)
    print(
        f"{mode:7} plugin {a * 1000:7.1f} ms  -p no:mpfault {b * 1000:7.1f} ms  "
        f"(+{(a - b) * 1000:5.1f} ms)  ratio {a / b:.3f}  paired {paired:.3f} "
        f"[q1 {q[0]:.3f}, q3 {q[2]:.3f}; 95% CI {low:.3f}..{high:.3f}]  "
        f"{'ok' if paired <= TARGET_RATIO else 'MISSED'} (target <= {TARGET_RATIO}x)"
    )
    return paired


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=30, help="interleaved pairs of runs per mode")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured pairs first")
    ap.add_argument(
        "--modes", default="cached,source", help="bytecode modes: cached, source (comma-separated)"
    )
    ap.add_argument("--quick", action="store_true", help="8 pairs (a smoke run)")
    ap.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments for both sides (after --)"
    )
    args = ap.parse_args(argv)
    pairs = 8 if args.quick else args.pairs
    print(f"Python {sys.version.split()[0]}, {pairs} pairs, pytest {' '.join(args.pytest_args)}")
    ok = True
    for mode in args.modes.split(","):
        ok &= measure(mode.strip(), pairs, args.warmup, args.pytest_args) <= TARGET_RATIO
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
