"""Beyond one machine: programs in network namespaces of their own reach a served queue
over a real virtual link (a veth pair each), as programs on other hosts would.

Needs root and ``ip`` (iproute2); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import mpfault

PY = sys.executable
PROGRAMS = Path(__file__).parent / "serve_programs"


@dataclass
class Netns:
    """Two namespaces; ``ns[i]`` reaches ``server_ip`` (in this namespace) over its link."""

    ns: list[str]
    server_ip: str
    client_ips: list[str]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


_COUNT = [0]


@pytest.fixture
def netns() -> Iterator[Netns]:
    """Two network namespaces, each linked to this one by a veth pair."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    _COUNT[0] += 1
    tag = f"{os.getpid() % 100000}{_COUNT[0] % 100}"
    k = (os.getpid() + _COUNT[0]) % 250 + 1
    names = [f"mpf{tag}n{i}" for i in (1, 2)]
    made: list[str] = []
    links: list[str] = []
    try:
        try:
            _ip("netns", "add", names[0])
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot make a network namespace here: {e.stderr.strip()}")
        made.append(names[0])
        _ip("netns", "add", names[1])
        made.append(names[1])
        server_ip = f"10.231.{k}.1"
        clients = []
        for i, ns in enumerate(names):
            host, peer = f"mpf{tag}h{i}", f"mpf{tag}p{i}"
            base = 4 * i
            here, there = f"10.231.{k}.{base + 1}", f"10.231.{k}.{base + 2}"
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            links.append(host)
            _ip("link", "set", peer, "netns", ns)
            _ip("addr", "add", f"{here}/30", "dev", host)
            _ip("link", "set", host, "up")
            _ip("-n", ns, "addr", "add", f"{there}/30", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", here)
            clients.append(there)
        yield Netns(names, server_ip, clients)
    finally:
        for link in links:  # deleting one end of a veth pair deletes both (at once)
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _netns_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_programs_in_other_namespaces_share_a_served_queue(netns: Netns) -> None:
    with mpfault.Harness() as h:
        served = h.serve(
            address=(netns.server_ip, 0),
            allow_remote=True,
            faults=["net@consumer:latency(1ms..3ms)", "put@producer#5:delay(10ms)"],
        )
        consumer = h.program(
            ["ip", "netns", "exec", netns.ns[0], PY, "consumer.py"],
            name="consumer",
            cwd=str(PROGRAMS),
        )
        producer = h.program(
            ["ip", "netns", "exec", netns.ns[1], PY, "producer.py", "20"],
            name="producer",
            cwd=str(PROGRAMS),
        )
        assert producer.wait(60) == 0, producer.output()
        assert consumer.wait(60) == 0, consumer.output()
        assert "got " + str(list(range(20))) in consumer.output()[0]
        hist = h.history
        puts = hist.ops("put", process="producer")
        assert len(puts) == 21
        assert {e.pid for e in puts} == {producer.pid}
        assert len(hist.ops("get", process="consumer")) == 21
        hist.assert_no_loss()
        hist.assert_no_duplicates()
        connects = {m.process: m.detail for m in hist.marks if m.kind == "connect"}
        # the producer came over its own link, from its namespace's address
        assert connects["producer"].startswith(f"producer from {netns.client_ips[1]}:")
        fired = h.fired()
        assert fired["s1: net@consumer:latency(1ms..3ms)"] == 1
        assert fired["s1: put@producer#5:delay(10ms)"] == 1
        port = served.address[1]
    with open("/proc/net/tcp") as f:
        listening = f.read().split("\n")[1:]
    assert not [x for x in listening if x.split()[3:4] == ["0A"] and f":{port:04X}" in x]


def test_the_namespaces_are_apart(netns: Netns) -> None:
    with mpfault.Harness() as h:
        p = h.program(["ip", "netns", "exec", netns.ns[0], "sleep", "30"])
        ours = _netns_of(os.getpid())
        for _ in range(100000):  # until ip netns exec has entered the namespace (bounded)
            if _netns_of(p.pid) != ours:
                break
            os.sched_yield()
        assert _netns_of(p.pid) != ours
