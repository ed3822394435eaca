"""Served queues: independently started plain programs share a queue through a manager
served by the harness; every operation recorded at the server, faults applied there,
network faults in the proxy, wrong keys refused, nothing left after teardown.

The programs (``tests/serve_programs/``) use only ``multiprocessing.managers``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PROGRAMS = Path(__file__).parent / "serve_programs"
ARGS = ("-p", "no:cacheprovider", "--mpfault-start-methods=fork", "-v")

HEADER = '''
import json
import os
import queue
import sys

import pytest

import mpfault
from mpfault import MpfaultError

PY = sys.executable


def run(h, name, *args, env=None):
    return h.program([PY, name + ".py", *map(str, args)], name=name, env=env)


def got(program):
    out = program.output()[0]
    line = [x for x in out.splitlines() if x.startswith("got ")][-1]
    return json.loads(line[4:])


def note(h, served):
    """Where the outer test checks that nothing is left: ports and pids."""
    from mpfault._serve import current

    st = current(h)
    with open("left.jsonl", "a") as f:
        pids = [served.pid] + [p.pid for p in st.programs]
        f.write(json.dumps({"port": served.address[1], "pids": pids}) + "\\n")
'''


def _setup(pytester: pytest.Pytester, body: str) -> None:
    for src in PROGRAMS.glob("*.py"):
        shutil.copy(src, pytester.path / src.name)
    pytester.makepyfile(test_inner=HEADER + body)


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A":  # LISTEN
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def _assert_nothing_left(pytester: pytest.Pytester) -> None:
    path = pytester.path / "left.jsonl"
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    assert entries
    listening = _listening_ports()
    for e in entries:
        assert e["port"] not in listening, f"port {e['port']} still listens after teardown"
        for pid in e["pids"]:
            assert not os.path.exists(f"/proc/{pid}"), f"process {pid} left after teardown"


SHARE = """
def test_share(mpfault):
    served = mpfault.serve()
    address, authkey = served
    assert address[0] == "127.0.0.1" and address[1] > 0 and len(authkey) >= 16
    consumer = run(mpfault, "consumer")
    producer = run(mpfault, "producer", 10)
    assert producer.wait(60) == 0
    assert consumer.wait(60) == 0
    assert got(consumer) == list(range(10))
    h = mpfault.history
    puts = h.ops("put", process="producer")
    gets = h.ops("get", process="consumer")
    assert [e.item for e in puts] == [str(i) for i in range(10)] + ["None"]
    assert [e.result for e in gets] == [str(i) for i in range(10)] + ["None"]
    assert {e.pid for e in puts} == {producer.pid} and {e.pid for e in gets} == {consumer.pid}
    h.assert_no_loss()
    h.assert_no_duplicates()
    h.assert_fifo_per_producer()
    assert "nothing lost" in mpfault_describe(mpfault)
    note(mpfault, served)


def mpfault_describe(h):
    from mpfault._serve import describe

    return describe(h)


def test_the_test_process_is_a_client_too(mpfault):
    served = mpfault.serve(maxsize=2, kind="JoinableQueue")
    q = served.client()
    q.put("a")
    q.put("b")
    with pytest.raises(queue.Full):
        q.put("c", timeout=0.1)
    assert served.qsize() == 2
    assert [q.get(), q.get()] == ["a", "b"]
    q.task_done()
    q.task_done()
    q.join()
    ops = [(e.process, e.op) for e in mpfault.history.events]
    assert ("MainProcess", "put") in ops and ("MainProcess", "task_done") in ops
    assert mpfault.history.ops("put", outcome="raised")[0].exc == "Full"
    note(mpfault, served)


def test_gates_and_pauses_at_the_server_hold_the_client(mpfault):
    gate = mpfault.gate("put", when="after", who="producer", nth=2)
    served = mpfault.serve(faults=[gate, "put@producer#4:pause(100ms)"])
    producer = run(mpfault, "producer", 5)
    arrival = gate.wait_reached(timeout=30)
    assert (arrival.process, arrival.pid) == ("producer", producer.pid)
    q = served.client()
    assert [q.get(timeout=10), q.get(timeout=10)] == [0, 1]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)  # the producer waits at the gate, after its 2nd put
    gate.release()
    assert [q.get(timeout=10) for _ in range(4)] == [2, 3, 4, None]
    assert producer.wait(60) == 0
    marks = [m.kind for m in mpfault.history.marks if m.process == "producer"]
    assert "gate-wait" in marks and "pause" in marks and "resume" in marks
    note(mpfault, served)


def test_not_loopback_needs_opt_in(mpfault):
    with pytest.raises(MpfaultError, match="not a loopback address.*allow_remote=True"):
        mpfault.serve(address=("0.0.0.0", 0))
    with pytest.raises(MpfaultError, match="unknown kind 'Stack'"):
        mpfault.serve(kind="Stack")
    with pytest.raises(MpfaultError, match="cannot fire at a server"):
        mpfault.serve(faults=["put:exit(3)"])
    with pytest.raises(Exception, match="bad fault spec 'net:drop'"):
        mpfault.serve(faults=["net:drop"])
"""


def test_plain_programs_share_a_served_queue(pytester: pytest.Pytester) -> None:
    _setup(pytester, SHARE)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=4)
    _assert_nothing_left(pytester)


KILL = """
def test_killed_after_third_put(mpfault):
    served = mpfault.serve(faults=["put@producer#3:kill(after)"])
    producer = run(mpfault, "producer", 10)
    assert producer.wait(60) == -9
    assert mpfault.fired() == {"s1: put@producer#3:kill(after)": 1}
    assert [e.item for e in mpfault.history.ops("put", process="producer")] == ["0", "1", "2"]
    assert served.qsize() == 3  # the server keeps what it acknowledged
    consumer = run(mpfault, "consumer", env={"GET_TIMEOUT": "0.2"})
    consumer.kill()
    q = served.client()
    assert [q.get(timeout=10) for _ in range(3)] == [0, 1, 2]
    mpfault.history.assert_no_loss()
    note(mpfault, served)
    assert False, "show the report"


def test_consumer_killed_after_a_get(mpfault):
    served = mpfault.serve(faults=["get@consumer#2:kill(after)"])
    producer = run(mpfault, "producer", 5)
    consumer = run(mpfault, "consumer")
    assert producer.wait(60) == 0
    assert consumer.wait(60) == -9
    note(mpfault, served)
    assert False, "show the report"
"""


def test_a_killed_program_and_what_the_report_says(pytester: pytest.Pytester) -> None:
    _setup(pytester, KILL)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    second = out.split("test_consumer_killed_after_a_get", 2)[2]
    assert "mpfault served" in out
    result.stdout.fnmatch_lines(
        [
            "*served queue 's1' (Queue at 127.0.0.1:*",
            "*producer: 3 put, 0 got (acknowledged by the server)",
            "*MainProcess: 0 put, 3 got*",
            "*nothing lost: every item the server acknowledged was got*",
            "*producer (pid *): killed by SIGKILL*",
            "*its last queue operation (at the server): put(2) on 's1', returned;"
            " then fault put@producer#3:kill(after) fired (kill SIGKILL)",
        ]
    )
    assert "lost in transit: 1 (the server handed it to consumer" in second
    assert "stdout (mpfault program producer)" in out
    _assert_nothing_left(pytester)


NET = """
def test_partition_then_heal(mpfault):
    served = mpfault.serve(faults=["net@producer#4:partition(2s)"])
    consumer = run(mpfault, "consumer", env={"GET_TIMEOUT": "0.3"})
    producer = run(mpfault, "producer", 8)
    assert producer.wait(60) == 0
    assert consumer.wait(60) == 0
    assert "Empty" in consumer.output()[0]  # get(timeout=0.3) ran out during the partition
    assert got(consumer) == list(range(8))  # after the heal, every item, once
    h = mpfault.history
    h.assert_no_loss()
    h.assert_no_duplicates()
    assert h.ops("get", outcome="raised")[0].exc == "Empty"
    assert mpfault.fired() == {"s1: net@producer#4:partition(2s)": 1}
    marks = [m for m in h.marks if m.kind == "net"]
    assert [m.detail for m in marks][-1] == "partition healed"
    assert marks[-1].time - marks[0].time >= 2.0 - 0.01
    puts = h.ops("put", process="producer")
    assert puts[3].start - puts[2].end >= 2.0 - 0.01  # the 4th put waited out the partition
    note(mpfault, served)


def test_reset(mpfault):
    served = mpfault.serve(faults=["net@consumer#3:reset"])
    producer = run(mpfault, "producer", 5)
    consumer = run(mpfault, "consumer")
    assert producer.wait(60) == 0
    assert consumer.wait(60) == 1
    exc = consumer.exception()
    assert exc and exc.split(":")[0] in ("ConnectionResetError", "EOFError", "BrokenPipeError")
    assert mpfault.fired() == {"s1: net@consumer#3:reset": 1}
    assert len(mpfault.history.ops("get", process="consumer")) == 2
    note(mpfault, served)
    assert False, "show the report"


def test_latency_is_seeded(mpfault):
    served = mpfault.serve(faults=["net@consumer:latency(2ms..6ms)", "net@*:bandwidth(1MB)"])
    producer = run(mpfault, "producer", 5)
    consumer = run(mpfault, "consumer")
    assert producer.wait(60) == 0 and consumer.wait(60) == 0
    assert got(consumer) == list(range(5))
    fired = mpfault.fired()
    assert fired["s1: net@consumer:latency(2ms..6ms)"] == 1
    assert fired["s1: net@*:bandwidth(1MB)"] == 2  # once for each client it shapes
    gets = mpfault.history.ops("get", process="consumer")
    assert all(e.end - e.start >= 0 for e in gets)
    note(mpfault, served)


def test_a_partition_until_the_test_heals_it(mpfault):
    served = mpfault.serve(faults=["net@producer#3:partition"])
    producer = run(mpfault, "producer", 5)
    q = served.client()
    assert [q.get(timeout=30), q.get(timeout=30)] == [0, 1]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)  # the producer's 3rd put is held, for as long as it takes
    assert producer.is_alive()
    served.heal("producer")
    assert [q.get(timeout=30) for _ in range(4)] == [2, 3, 4, None]
    assert producer.wait(60) == 0
    details = [m.detail for m in mpfault.history.marks if m.kind == "net"]
    assert details == [
        "partition until healed (net@producer#3:partition)",
        "partition healed (by the test)",
    ]
    served.partition("producer", 0.2)  # and one the test starts, healing by itself
    note(mpfault, served)


def test_wrong_authkey_is_refused(mpfault):
    served = mpfault.serve()
    intruder = mpfault.program(
        [PY, "producer.py", "1"], name="intruder", env={"MPFAULT_AUTHKEY": "00" * 32}
    )
    assert intruder.wait(60) == 1
    assert intruder.exception().startswith("multiprocessing.context.AuthenticationError")
    refused = served.refused()
    assert len(refused) == 1
    assert refused[0].process == "intruder" and refused[0].pid == intruder.pid
    assert "digest received was wrong" in refused[0].detail
    assert mpfault.history.ops("put") == []
    note(mpfault, served)
"""


def test_network_faults_and_a_wrong_key(pytester: pytest.Pytester) -> None:
    _setup(pytester, NET)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*network fault net@consumer#3:reset fired 1 time(s)",
            "*consumer (pid *): exited with code 1; it raised *Error*",
        ]
    )
    _assert_nothing_left(pytester)


# -- the guide's programs -------------------------------------------------------------------

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def test_the_guides_code_is_the_example_programs_code() -> None:
    guide = (Path(__file__).parent.parent / "docs" / "guide.md").read_text()
    chapter = guide.split("## Independently started programs", 1)[1].split("### The same", 1)[0]
    blocks = chapter.split("```python\n")[1:]
    assert len(blocks) == 2
    files = {n: (EXAMPLES / n).read_text() for n in ("shared_server.py", "shared_producer.py")}
    for block, name in zip(blocks, files, strict=True):
        code = block.split("```", 1)[0]
        assert code in files[name], f"the guide's {name} is not the file's"


def test_the_guides_programs_without_mpfault(tmp_path: Path) -> None:
    """Server, consumer and producer started by hand, as the guide says (no harness)."""
    import subprocess
    import sys

    server = subprocess.Popen(
        [sys.executable, "shared_server.py", "0"],
        cwd=EXAMPLES,
        stdout=subprocess.PIPE,
        text=True,
        # as in a shell whose output is a pipe: no PYTHONUNBUFFERED from this machine's env
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        | {"PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        assert server.stdout is not None
        import select

        # bounded: a server that never prints (its print unflushed into a pipe) fails here
        ready, _, _ = select.select([server.stdout], [], [], 60)
        assert ready, "the server printed no address in 60 s"
        line = server.stdout.readline().split()
        assert line[0] == "export"
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(dict(x.split("=", 1) for x in line[1:]))
        consumer = subprocess.Popen(
            [sys.executable, "shared_consumer.py"],
            cwd=EXAMPLES,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        producer = subprocess.run(
            [sys.executable, "shared_producer.py", "5"], cwd=EXAMPLES, env=env, timeout=60
        )
        assert producer.returncode == 0
        out, _ = consumer.communicate(timeout=60)
        assert consumer.returncode == 0
        assert "Consumer: done; got [0, 1, 2, 3, 4]" in out
    finally:
        server.kill()
        server.wait(10)


# -- key= and show= at the server ------------------------------------------------------------


def shown_as(item: object) -> str:
    return f"item:{item}"


def keyed_by_tens(item: object) -> str:
    return str(int(item) // 10)  # type: ignore[call-overload]


def test_a_served_queue_takes_key_and_show(tmp_path: Path) -> None:
    from mpfault import Harness, HistoryError

    with Harness(start_method="fork", tmpdir=str(tmp_path), deadline=30) as h:
        served = h.serve(show=shown_as, key=keyed_by_tens)
        q = served.client()
        for x in (11, 12, 25):
            q.put(x)
        assert q.get(timeout=10) == 11
        hist = h.history
        assert [e.item for e in hist.ops("put")] == ["item:11", "item:12", "item:25"]
        assert [e.result for e in hist.ops("get")] == ["item:11"]
        # 11 and 12 share a key: one got, one lost, and 25 lost
        with pytest.raises(HistoryError) as err:
            hist.assert_no_loss()
        assert "item:25" in str(err.value)
        assert len(hist.lost()) == 2


def test_the_harness_rules_reach_served_queues(tmp_path: Path) -> None:
    from mpfault import Harness

    with Harness(start_method="fork", tmpdir=str(tmp_path), show={"s*": shown_as}) as h:
        q = h.serve().client()
        q.put(1)
        assert [e.item for e in h.history.ops("put")] == ["item:1"]
        other = h.serve(name="plain").client()
        other.put(1)
        assert [e.item for e in h.history.ops("put", queue="plain")] == ["1"]


def test_formatters_the_server_cannot_load_leave_the_defaults_and_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    from mpfault import Harness

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "gone_formatters.py").write_text("def show(item):\n    return 'never'\n")
    monkeypatch.syspath_prepend(str(mods))
    gone = importlib.import_module("gone_formatters")
    # imported here (and so picklable), but the server, a fresh interpreter, cannot
    (mods / "gone_formatters.py").unlink()
    monkeypatch.setitem(sys.modules, "gone_formatters", gone)
    with Harness(start_method="fork", tmpdir=str(tmp_path), deadline=30) as h:
        q = h.serve(show=gone.show).client()
        q.put(7)
        assert [e.item for e in h.history.ops("put")] == ["7"]
        (note,) = h.history.notes()
        assert "key/show could not be loaded in the server (ModuleNotFoundError" in note
