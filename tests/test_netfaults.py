"""Network faults: the spec grammar of op ``net``, the proxy's view of a fault, its seeded
jitter, and the proxy's reading of manager traffic (frames, the method of a request)."""

from __future__ import annotations

import pickle
import socket
import tempfile

import pytest

from mpfault import FaultSpecError, faults
from mpfault._runtime import served
from mpfault._runtime import state as _st
from mpfault._runtime.netfaults import as_net


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("net@consumer:latency(20ms)", faults.latency(0.02, who="consumer")),
        ("net:latency(10ms..50ms)", faults.latency(0.01, 0.04)),
        ("net@*:bandwidth(64KB)", faults.bandwidth(65536, who="*")),
        ("net@consumer#3:reset", faults.reset(who="consumer", nth=3)),
        ("net:reset(1KB)", faults.reset(1024)),
        ("net@producer#4:partition(2s)", faults.partition(2.0, who="producer", nth=4)),
        ("net:partition", faults.partition()),
    ],
)
def test_specs_read_back(spec: str, fault: faults.Fault) -> None:
    assert faults.parse(spec) == [fault]
    assert str(fault) == spec
    assert fault.ops() == frozenset({"net"})


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("net:drop", "action 'drop' does not apply to op 'net'"),
        ("put:latency(1ms)", "action 'latency' does not apply to op 'put'"),
        ("partition", "give an op"),
        ("*:reset", "apply to no op in common"),
        ("net:latency", "latency needs a duration"),
        ("net:latency(5ms..1ms)", "ends before it starts"),
        ("net:bandwidth(3)", "'3' is not a size"),
        ("net:reset(-1B)", "is not a size"),
    ],
)
def test_bad_specs_say_why(spec: str, reason: str) -> None:
    with pytest.raises(FaultSpecError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        faults.parse(spec, source="--mpfault")


def test_the_proxys_view() -> None:
    f = as_net(faults.parse("net@prod*#3..5:latency(1ms)")[0])
    assert f.selects("producer")
    assert not f.selects("consumer")
    assert f.first == 3
    assert [f.active_at(n) for n in (2, 3, 5, 6)] == [False, True, True, False]
    assert not f.one_shot
    assert as_net(faults.partition(1.0)).one_shot
    assert as_net(faults.partition(1.0)).first is None
    with pytest.raises(FaultSpecError, match="one action, without a probability or a count"):
        as_net(faults.parse("net:50%reset")[0])


def _server(seed: int) -> served._Server:
    d = tempfile.mkdtemp(prefix="mpf-test-")
    run = _st.RunInfo(d, seed, -1, "test_id")
    plan = faults.parse("net@consumer:latency(1ms..9ms)")
    return served._Server(served.ServeConfig("s1", "Queue", 0, ("127.0.0.1", 0), b"k", run, plan))


def test_jitter_is_drawn_from_the_seed() -> None:
    import shutil

    servers = [_server(7), _server(7), _server(8)]
    try:
        draws = [[s.net_for("consumer").rngs[0].random() for _ in range(5)] for s in servers]
        assert draws[0] == draws[1]
        assert draws[0] != draws[2]
        assert servers[0].net_for("producer").faults == []  # the fault selects the consumer
    finally:
        for s in servers:
            s.listener.close()
            shutil.rmtree(s.cfg.run.run_dir)


def test_the_proxy_reads_frames_and_the_method_of_a_request() -> None:
    from multiprocessing.connection import Connection

    a, b = socket.socketpair()
    conn = Connection(a.detach())
    try:
        conn.send(("7f00", "put", ("get",), {}))  # a proxy's call: (id, method, args, kwds)
        conn.send((None, "incref", ("7f00",), {}))  # a dispatch: (None, function, ...)
        big = b"x" * 70000
        conn.send_bytes(big)
        frames = [served._read_frame(b) for _ in range(3)]
        assert all(f is not None for f in frames)
        methods = [served._method_of(f[1]) for f in frames[:2]]  # type: ignore[index]
        assert methods == ["put", "incref"]
        assert frames[2][1] == big  # type: ignore[index]
        assert served._method_of(b"#CHALLENGE#") is None  # not a pickle
        assert pickle.loads(frames[0][1]) == ("7f00", "put", ("get",), {})  # type: ignore[index]
        conn.close()
        assert served._read_frame(b) is None  # EOF
    finally:
        b.close()
