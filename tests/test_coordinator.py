"""The coordinator of gates: who is parked where, releasing one process at a time in
the order the test chooses, and the decisions in the history."""

from __future__ import annotations

import pytest

from mpfault import FaultQueue, Harness


def put_one(q: FaultQueue, x: int) -> int:
    q.put(x)
    return x


@pytest.mark.mpfault(start_methods=["fork"])
def test_release_one_parked_process_at_a_time(mpfault: Harness) -> None:
    g = mpfault.gate("put", who="w*")
    q = mpfault.queue(faults=[g])
    children = {"w1": mpfault.spawn(put_one, q, 1, name="w1")}
    children["w2"] = mpfault.spawn(put_one, q, 2, name="w2")
    g.wait_reached(count=2, timeout=30)
    coord = mpfault.coordinator
    parked = coord.parked()
    assert sorted(p.process for p in parked) == ["w1", "w2"]
    first, second = parked
    coord.release_one(first)
    assert children[first.process].result(timeout=30) == int(first.process[1])
    assert q.get(timeout=30) == int(first.process[1])
    # the other one is still parked: the gate stays closed to it
    assert coord.parked() == [second]
    assert not g.released
    assert children[second.process].is_alive()
    with pytest.raises(KeyError):
        coord.release_one(first)  # not parked any more
    g.release()
    assert children[second.process].result(timeout=30) == int(second.process[1])
    assert coord.parked() == []
    assert coord.decisions == [("g1", first), ("g1", None)]
    released = [m.detail for m in mpfault.history.marks if m.kind == "release"]
    assert released == [f"g1: {first.process} {first.pid}", "g1"]


@pytest.mark.mpfault(start_methods=["fork"])
def test_a_released_gate_lets_later_arrivals_pass(mpfault: Harness) -> None:
    g = mpfault.gate("put")
    q = mpfault.queue(faults=[g])
    g.release()
    c = mpfault.spawn(put_one, q, 7, name="late")
    assert c.result(timeout=30) == 7
    assert [a.process for a in g.reached] == ["late"]
    assert mpfault.coordinator.parked() == []
