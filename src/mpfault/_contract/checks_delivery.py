"""Rows 20-23 and 46: ordering, copies, lazy pickling, the sentinel pattern."""

from __future__ import annotations

import itertools
import queue
from typing import Any

from . import _children
from .context import CheckContext
from .model import Outcome, failed, passed
from .registry import check, unobservable


def _first_inversion(seqs: list[int]) -> str | None:
    for pos in range(1, len(seqs)):
        if seqs[pos] < seqs[pos - 1]:
            return f"item {seqs[pos]} arrived after item {seqs[pos - 1]} (position {pos})"
    return None


@check(
    row=20,
    slug="fifo-per-producer",
    parallel=True,
    title="items put by one process arrive in the order it put them (no order across producers)",
    kind="documented",
    source=(
        'Doc "Pipes and Queues" note 2: "If multiple processes are enqueuing objects, it is '
        "possible for the objects to be received at the other end out-of-order. However, "
        "objects enqueued by the same process will always be in the expected order with "
        'respect to each other."'
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    generic=True,
    expect="2 producers (a child and this process) x 200 items: each producer's in order",
)
def fifo_per_producer(cx: CheckContext) -> Outcome:
    """Row 20."""
    n = 200
    q = cx.make()
    child = cx.start(_children.put_and_exit, q, [(1, i) for i in range(n)], "return")
    for i in range(n):
        q.put((0, i))
    child.join(cx.deadline)
    if child.exitcode != 0:
        return failed(f"the producer child exited with {child.exitcode} (expected 0)")
    got: list[Any] = []
    for _ in range(2 * n):
        try:
            got.append(cx.get(q))
        except queue.Empty:
            return failed(f"only {len(got)} of {2 * n} items arrived within {cx.deadline:g} s")
    switches = sum(1 for a, b in itertools.pairwise(got) if a[0] != b[0])
    cx.figure(switches=switches)
    problems = []
    for tag in (0, 1):
        seqs = [i for t, i in got if t == tag]
        inversion = _first_inversion(seqs)
        who = "this process" if tag == 0 else "the child"
        if inversion:
            problems.append(f"producer {who}: {inversion}")
        elif seqs != list(range(n)):
            problems.append(f"producer {who}: {len(seqs)} items, {len(set(seqs))} distinct")
    if problems:
        return failed("; ".join(problems))
    return passed(f"each producer's items in order; {switches} switches between producers")


unobservable(
    row=21,
    slug="no-consumer-fairness",
    title="no fairness between consumers: one consumer may take every item",
    kind="detail",
    source="(undocumented) whoever wins _rlock takes the next item",
    kinds=("Q", "JQ", "SQ"),
    expect="any split of the items between consumers",
    reason="the absence of a guarantee: every split, fair or not, is consistent with it",
)


@check(
    row=22,
    slug="items-are-copies",
    title="get() returns a re-created object, not the object that was put",
    kind="documented",
    source=(
        'Doc "Exchanging objects": "The object returned by the get method is a re-created '
        'object that does not share memory with the original object."'
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    generic=True,
    expect="got == original and got is not original",
)
def items_are_copies(cx: CheckContext) -> Outcome:
    """Row 22."""
    q = cx.make()
    original = ["payload", {"k": [1, 2]}]
    q.put(original)
    got = cx.get(q)
    if got is original:
        return failed("get() returned the very object that was put")
    if got != original:
        return failed(f"get() returned {got!r}, not equal to {original!r}")
    return passed("an equal copy came back")


@check(
    row=23,
    slug="lazy-pickling",
    title="Q/JQ pickle in the feeder thread (a mutation after put() is usually sent); "
    "SQ and MQ pickle in put()",
    kind="detail",
    source=(
        "Code _feed l.261-262: obj = _ForkingPickler.dumps(obj); gh-109554 closed as not a "
        "bug (undocumented)"
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    expect="Q/JQ: the mutated value arrives; SQ/MQ: the value at put() arrives (5 trials)",
)
def lazy_pickling(cx: CheckContext) -> Outcome:
    """Row 23."""
    q = cx.make()
    lazy = cx.kind in ("Q", "JQ")
    mutated = 0
    trials = 5
    for _ in range(trials):
        obj = {"v": "at put()"}
        q.put(obj)
        obj["v"] = "mutated"
        mutated += cx.get(q)["v"] == "mutated"
    cx.figure(**{"mutation seen": f"{mutated}/{trials}"})
    want = trials if lazy else 0
    what = f"the consumer saw the mutation made after put() in {mutated}/{trials} trials"
    if mutated != want:
        return failed(what)
    return passed(what)


@check(
    row=46,
    slug="one-sentinel-per-consumer",
    parallel=True,
    title="N consumers need N sentinels: each consumer takes exactly one",
    kind="documented",
    source=(
        "Pattern of CPython test_task_done: for obj in iter(q.get, None), one None per "
        "worker; follows from each item going to exactly one get() (rows 2, 20)"
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    generic=True,
    expect="2 consumers (a child, a thread), 20 items + 1 sentinel: one stops, one stays "
    "blocked; 2nd sentinel: both stopped, 20 items counted",
)
def one_sentinel_per_consumer(cx: CheckContext) -> Outcome:
    """Row 46."""
    n = 20
    q = cx.make()
    r, w = cx.pipe()
    # One consumer in a child, one in a thread; each reports its count when it stops.
    child = cx.start(_children.sentinel_consumer, q, w, "child")
    thread = cx.thread(_children.sentinel_consumer, cx.for_thread(q), w, "thread")
    for i in range(n):
        q.put(i)
    q.put(None)
    if not r.poll(cx.deadline):
        return failed(f"no consumer stopped within {cx.deadline:g} s of the first sentinel")
    first = r.recv()
    if r.poll(cx.hold):
        return failed(f"both consumers stopped after one sentinel ({first} and {r.recv()})")
    q.put(None)
    second = cx.recv(r, what="second consumer's count")
    if not thread.join(cx.deadline):
        return failed("the thread consumer did not stop after its sentinel")
    child.join(cx.deadline)
    counts = dict([first, second])
    cx.figure(split=f"child {counts.get('child')}/thread {counts.get('thread')}")
    if child.exitcode != 0:
        return failed(f"the child consumer's exit code is {child.exitcode}")
    if sum(counts.values()) != n:
        return failed(f"consumers counted {counts}, {sum(counts.values())} in all instead of {n}")
    return passed(f"one consumer per sentinel; items split {counts}")
