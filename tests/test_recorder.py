"""The event recorder: the C module (``_fastrec``) and the pure-Python code write the
same records, byte for byte, and both hand over to a forked child's recorder."""

from __future__ import annotations

import functools
import json
import os
import queue
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mpfault import Harness
from mpfault._runtime import events, layout, reader
from mpfault._runtime import state as st
from mpfault._runtime.events import OP_CODES, Recorder, item_key, item_payload, short_repr
from mpfault._runtime.reader import read_events
from procs import ListQueue

fastrec = events._fastrec
needs_c = pytest.mark.skipif(fastrec is None, reason="the C recorder is not built here")
PURE = os.environ.get(events.PURE_ENV, "") not in ("", "0")


class Boom:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class MyInt(int):
    pass


class MyStr(str):
    pass


class Plain:
    """An object that keeps object's repr (``<test_recorder.Plain object at 0x...>``)."""


class Plainé:
    pass


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    pass


def a_function(x: object) -> object:
    return x


@functools.cache
def composite() -> list[object]:
    """Items formatted from their repr: containers, functions, classes, objects (made
    once: their reprs show their addresses)."""
    from concurrent.futures.process import _CallItem, _ResultItem
    from multiprocessing.pool import mapstar

    def nested() -> None:
        pass

    rec: list[object] = [1]
    rec.append(rec)
    plain = Plain()
    long_str = "y" * 300
    return [
        (0, 5, mapstar, ((a_function, (5,)),), {}),  # a Pool task, chunksize 1
        (0, 5, (True, [5])),  # its result
        _CallItem(3, a_function, (5,), {}),  # the executor's items
        _ResultItem(3, result=5),
        (), (1,), (1, 2), [], [None], [[[]]], {}, {"k": b"v"}, {1: (2, [3.5])},
        {(1, 2): None, "a\n": "b'", b'"': -7},
        a_function, nested, lambda: None, Plain, int, object, type, Meta, WithMeta,
        plain, [plain, plain], (plain,) * 10, object(), WithMeta(), Plainé(), (Plainé(),),
        (1.5, float("inf"), -0.0, 1e300, float("nan")), (True, False, None),
        ("x at 0x1f", "at 0x", " at 0xg", " at 0x", " at 0X1", b" at 0xab"),
        "x at 0x1f", (" at 0x" * 50,), tuple(range(30)), tuple(range(60)), list(range(700)),
        [long_str], (long_str, long_str, long_str, long_str, long_str, long_str, long_str),
        ("é",), (b"\xff\x00'",), (2**64,), (10**5000,), (Boom(),), (MyInt(3),),
        (MyStr("s"),), rec, [(((((((((((((((1,),),),),),),),),),),),),),),)], frozenset([1]),
        {1, 2}, range(3), slice(1, 2), len, print, [].append, 1j, Ellipsis, NotImplemented,
        ((a_function,) * 5, "z" * 250), [a_function] * 40,
    ]  # fmt: skip


def corpus() -> list[object]:
    """Items of every shape the formatting distinguishes."""
    rnd = random.Random(20261128)
    items: list[object] = [
        0, 1, -1, 7, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**19, -(10**19), 10**20,
        10**20 - 1, 10**40, 10**5000, True, False, None, 1.5, float("nan"), MyInt(5),
        MyStr("x"), Boom(), (1, "a"), [None], {"k": b"v"}, bytearray(b"ab"), object,
    ]  # fmt: skip
    for n in (0, 1, 39, 40, 41, 63, 64, 65, 100, 10240):
        items += [b"x" * n, "x" * n, b"'" * n, "'" * n, b"\\" * n, "\u00e9" * n, b"\0" * n]
        items += ["a" * max(n - 1, 0) + "\n", "\u00e9" + "a" * n, "a" * n + "\u00e9"]
        items += [b"a" * max(n - 1, 0) + b"\xff", b'"' * n, '"' * n, "'\"" * n]
    for pos in range(80):  # one character a repr escapes, anywhere in the head or the tail
        for bad in (b"\x1f", b"\x7f", b"'", b"\\", b"\x80", b"\xff", b"\x00"):
            raw = b"a" * pos + bad + b"b" * (79 - pos)
            items += [raw, raw.decode("latin-1")]
        items += [b"~ " * 40, "~ " * 40]  # the bounds of printable ASCII
    for _ in range(300):
        n = rnd.choice([0, 5, 40, 41, 64, 65, 70, 500])
        raw = bytes(rnd.choice(b"ab'\"\\\x00\x7f\x7e\x20\x1f\xe9z09") for _ in range(n))
        items += [raw, raw.decode("latin-1"), rnd.randrange(-(10**25), 10**25)]
    for _ in range(300):  # containers of the above
        pool = items[:60] + composite()[:30]
        items.append(tuple(rnd.choice(pool) for _ in range(rnd.randrange(4))))
        items.append([rnd.choice(pool) for _ in range(rnd.randrange(4))])
        items.append({rnd.randrange(100): rnd.choice(pool) for _ in range(rnd.randrange(3))})
    return items + list(composite())


@needs_c
def test_the_c_payload_is_the_python_payload() -> None:
    assert fastrec is not None
    done = 0
    for obj in corpus():
        fast = fastrec.fast_payload(obj)
        if fast is not None:
            done += 1
            assert fast == item_payload(obj), repr(obj)
    assert done > 300  # ints in range, None, plain str and bytes


@needs_c
def test_the_c_module_formats_the_common_composite_items() -> None:
    """Pool's tasks and results, the executor's items, containers, functions, classes
    and objects with object's repr are formatted in C (the same bytes as Python); what
    it does not know goes to Python whole."""
    assert fastrec is not None
    from concurrent.futures.process import _CallItem

    done = [
        (0, 5, (True, [5])),
        _CallItem(3, a_function, (5,), {}),
        ({"k": [1.5, None, b"x", "y'"]},),
        a_function,
        Plain,
        Plain(),
        ("x at 0x1f",),
        list(range(300)),
        True,
        2.5,
    ]
    for obj in done:
        assert fastrec.fast_payload(obj) == item_payload(obj), repr(obj)
    python = [
        ("\u00e9",), (MyInt(3),), (Boom(),), WithMeta(), Plainé(), [[]] * 2000, {1, 2}, 2**64,
        (10**5000,), "\u00e9",
    ]  # fmt: skip
    for obj in python:
        assert fastrec.fast_payload(obj) is None, repr(obj)


def test_the_c_module_is_built_here() -> None:
    """An install without it still works (in pure Python, slower): say so loudly
    where a compiler is known to be there, as on the CI machines."""
    if PURE:
        pytest.skip(f"{events.PURE_ENV} is set")
    assert fastrec is not None, "mpfault._runtime._fastrec did not build (see setup.py)"
    assert fastrec.RECORD_SIZE == layout.SIZE


def test_the_c_module_writes_the_layout_of_layout_py() -> None:
    """_fastrec.c's offsets and constants are those of the one definition, layout.py."""
    if fastrec is None:
        pytest.skip("the C module is not built")
    want = {name: layout.OFFSETS[name] for name, _ in layout.FIELDS}
    want["SIZE"] = layout.SIZE
    for name in ("KIND_BEGIN", "KIND_END", "OUT_PENDING", "OUT_OK", "KEY_INT", "KEY_TAIL"):
        want[name] = getattr(layout, name)
    want["HEAD"] = events._MAX
    got = dict(fastrec.LAYOUT)
    got.pop("TAIL")
    assert got == want


def test_the_writer_and_the_reader_follow_the_layout(tmp_path: Path) -> None:
    """The struct of the fixed part is FIELDS, at their offsets; a record written by
    the recorder reads back field by field with layout.Record."""
    assert layout.RECORD.size == layout.SIZE == layout.OFFSETS["seq"] + 4
    assert list(layout.OFFSETS) == [name for name, _ in layout.FIELDS]
    assert reader.Record._fields == tuple(n for n, c in layout.FIELDS if n != "pad")
    rec = Recorder(str(tmp_path), "p", 4321)
    seq = rec.begin("jobs", OP_CODES["put"], "'abc'", "str:'abc'")
    rec.close()
    data = (tmp_path / "4321.ev").read_bytes()
    magic, hlen = layout.HEADER.unpack_from(data, 0)
    assert magic == layout.MAGIC
    assert json.loads(data[layout.HEADER.size : layout.HEADER.size + hlen])["pid"] == 4321
    r = reader.Record._make(layout.RECORD.unpack_from(data, layout.HEADER_SIZE))
    assert (r.kind, r.op, r.outcome, r.fault, r.seq) == (
        layout.KIND_BEGIN,
        OP_CODES["put"],
        layout.OUT_PENDING,
        -1,
        seq,
    )
    body = data[layout.HEADER_SIZE + layout.SIZE : layout.HEADER_SIZE + r.length]
    assert (r.qlen, r.alen, r.blen) == (4, 5, 9)
    assert body == b"jobs'abc'str:'abc'"


def _records(path: str) -> Iterator[tuple[bytes, bytes]]:
    """Each record of a log file, as (fixed part with the time zeroed, the rest)."""
    with open(path, "rb") as f:
        data = f.read()
    off = layout.HEADER_SIZE
    size = layout.SIZE
    while off + size <= len(data):
        (length,) = struct.unpack_from("<I", data, off)
        if length == 0:
            return
        rec = data[off : off + length]
        yield (
            rec[: layout.OFFSETS["time_ns"]] + bytes(8) + rec[layout.OFFSETS["time_ns"] + 8 : size],
            rec[size:],
        )
        off += length


def _wrapped(rec: Recorder, lq: ListQueue, op: str) -> Callable[..., Any]:
    def current() -> Callable[..., Any]:
        raise AssertionError("no fork here")

    return rec.wrap(
        "jobs", OP_CODES[op], getattr(lq, op), op == "put", st, st.fork_generation, current
    )


def _exercise(rec: Recorder) -> list[object]:
    """Put and get the corpus, one keyword put, one get that raises; return what
    the gets returned."""
    lq = ListQueue()
    put = _wrapped(rec, lq, "put")
    get = _wrapped(rec, lq, "get")
    items = corpus()
    for obj in items:
        put(obj)
    put(obj="by keyword")
    put(b"with args", True, None)
    got = [get() for _ in range(len(items) + 2)]
    assert got[-1] == b"with args"
    with pytest.raises(queue.Empty):
        get(timeout=0.1)
    rec.mark("return", "", "done")
    return got


def _recorder(path: str, accelerated: bool, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    if not accelerated:
        monkeypatch.setattr(events, "_fastrec", None)
    rec = Recorder(path, "p", 4242)
    monkeypatch.undo()
    assert rec.accelerated is accelerated
    return rec


@pytest.fixture(params=["c", "python"])
def accelerated(request: pytest.FixtureRequest) -> bool:
    """Each recorder: the C module (skipped where it is not built) and pure Python."""
    if request.param == "c" and fastrec is None:
        pytest.skip("the C recorder is not built here")
    return bool(request.param == "c")


@needs_c
def test_c_and_python_write_the_same_records(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = {}
    for accelerated in (True, False):
        rec = _recorder(str(tmp_path / str(accelerated)), accelerated, monkeypatch)
        _exercise(rec)
        assert rec.seq == len(corpus()) * 2 + 5
        rec.close()
        logs[accelerated] = list(_records(rec.path))
    assert len(logs[True]) == len(logs[False]) == 4 * (len(corpus()) + 2) + 3
    for i, (c, py) in enumerate(zip(logs[True], logs[False], strict=True)):
        assert c == py, f"record {i} differs"


def test_the_history_reads_what_was_written(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, accelerated: bool
) -> None:
    rec = _recorder(str(tmp_path), accelerated, monkeypatch)
    got = _exercise(rec)
    evs, marks, _ = read_events(str(tmp_path))
    n = len(corpus()) + 2
    puts = [e for e in evs if e.op == "put"]
    gets = [e for e in evs if e.op == "get"]
    assert len(puts) == n
    assert len(gets) == n + 1
    assert [e.key for e in puts] == [e.result_key for e in gets[:n]]
    items = corpus()  # what the reader rebuilds is what short_repr and item_key give
    assert [(e.item, e.key) for e in puts[: len(items)]] == [
        (short_repr(x), item_key(x)) for x in items
    ]
    assert [e.seq for e in evs] == sorted(e.seq for e in evs)
    assert puts[0].item == "0"
    assert puts[0].key == "int:0"
    assert puts[0].outcome == "ok"
    assert gets[-1].outcome == "raised"
    assert gets[-1].exc == "Empty"
    assert gets[0].result == "0"
    assert got[0] == 0
    assert puts[-2].item == "'by keyword'"
    assert [m.kind for m in marks] == ["return"]
    assert all(e.end is not None and e.start <= e.end for e in evs)


def test_the_log_grows(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, accelerated: bool) -> None:
    rec = _recorder(str(tmp_path), accelerated, monkeypatch)
    put = _wrapped(rec, ListQueue(), "put")
    item = "y" * 100
    for i in range(20_000):  # ~190 bytes a put: 4 MB, from a 1 MB mapping
        put(f"{i:05d}{item}")
    rec.close()
    assert os.path.getsize(rec.path) >= 4 << 20
    evs, _, _ = read_events(str(tmp_path))
    assert len(evs) == 20_000
    assert evs[-1].item is not None
    assert evs[-1].item.startswith("'19999yyy")


def test_a_closed_recorder_refuses_to_record(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, accelerated: bool
) -> None:
    rec = _recorder(str(tmp_path), accelerated, monkeypatch)
    lq = ListQueue()
    put = _wrapped(rec, lq, "put")
    put(1)
    rec2 = _recorder(str(tmp_path / "2"), accelerated, monkeypatch)

    def close_then_fail() -> None:
        rec2.close()
        raise KeyError("queue's own error")

    get = rec2.wrap("jobs", OP_CODES["get"], close_then_fail, False, st, st.fork_generation, list)
    with pytest.raises(ValueError) as info:  # the END could not be written ...
        get()
    chain = []
    e: BaseException | None = info.value
    while e is not None:
        chain.append(e)
        e = e.__context__
    assert isinstance(chain[-1], KeyError)  # ... of the call that raised
    rec.close()
    with pytest.raises(ValueError):
        put(2)
    assert lq.items == [1]  # nothing happens unrecorded


def _put_with(name: str, x: int) -> int:
    HELD[name](x)
    return os.getpid()


HELD: dict[str, Callable[..., Any]] = {}


@pytest.mark.mpfault(start_methods=["fork"])
def test_a_forked_child_records_in_its_own_log(mpfault: Harness) -> None:
    """The operation objects of the parent (kept in a variable before or after the
    first call) hand over to the child's recorder."""
    q = mpfault.queue()
    HELD["before"] = q.put  # before any call: the trampoline
    q.put(1)
    HELD["after"] = q.put  # after: this process's recording operation
    q.put(2)
    pids = [mpfault.spawn(_put_with, name, x, name=f"child-{name}").result(timeout=60)
            for name, x in (("before", 3), ("after", 4))]  # fmt: skip
    assert [q.get(timeout=60) for _ in range(4)] == [1, 2, 3, 4]
    by_item = {e.item: e for e in mpfault.history.events if e.op == "put"}
    assert by_item["1"].pid == by_item["2"].pid == os.getpid()
    assert (by_item["3"].pid, by_item["3"].process) == (pids[0], "child-before")
    assert (by_item["4"].pid, by_item["4"].process) == (pids[1], "child-after")
    mpfault.history.assert_no_loss()


PURE_RUN = """
from mpfault import ChildError, faults
from mpfault._runtime import events
import pytest

def put_with_acks(q, acks, n):
    for i in range(n):
        q.put(i)
        assert acks.get(timeout=60) == i

def test_pure(mpfault):
    assert events._fastrec is None
    q = mpfault.queue(faults=[faults.kill(when="after", op="put", nth=3, who="producer")])
    acks = mpfault.queue()
    p = mpfault.spawn(put_with_acks, q, acks, 5, name="producer")
    for i in range(2):
        assert q.get(timeout=60) == i
        acks.put(i)
    with pytest.raises(ChildError, match="killed by SIGKILL"):
        p.result(timeout=60)
    assert [i.value for i in mpfault.history.lost()] == ["2"]
    assert [e.item for e in mpfault.history.events if e.op == "put" and e.queue == "q1"] == [
        "0", "1", "2"
    ]
"""


def test_pure_python_recording_end_to_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MPFAULT_PURE_PYTHON set, parent and children record in Python."""
    monkeypatch.setenv(events.PURE_ENV, "1")
    pytester.makepyfile(test_pure=PURE_RUN)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=3)


LIGHT_CHILD = r"""
import sys, tempfile, multiprocessing
before = set(sys.modules)
from mpfault._runtime.fqueue import FaultQueue
from mpfault._runtime.state import RunInfo

class ListQueue:
    def __init__(self): self.items = []
    def put(self, x, block=True, timeout=None): self.items.append(x)
    def get(self, block=True, timeout=None): return self.items.pop()

q = FaultQueue(ListQueue(), (), "q", RunInfo(tempfile.mkdtemp(), 1, -1))
q.put(1)
assert q.get() == 1
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_a_process_that_only_records_imports_little() -> None:
    """What a spawn child that puts and gets loads beyond multiprocessing: no fault
    grammar, no reader, none of the modules that only faults, gates or reading need
    (each is milliseconds of start-up in every spawn child)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", LIGHT_CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "mpfault._runtime.events" in out
    heavy = {"dataclasses", "json", "hashlib", "socket", "random", "decimal", "ast", "pytest"}
    heavy |= {"mpfault._runtime.faults", "mpfault._runtime.reader", "mpfault._harness"}
    assert not heavy & set(out), sorted(heavy & set(out))


def test_the_header_is_json() -> None:
    import json

    for name in ["producer-1", 'q"uote\\', "tab\tnew\nline\x7f", "é€😀", "\ud800"]:
        assert json.loads(events._header(7, name)) == {"pid": 7, "process": name}


def test_put_ops_agree() -> None:
    from mpfault._runtime import faults, fqueue

    assert fqueue.PUT_OPS == faults.PUT_OPS


FULL_DISK = r"""
import os, resource, signal, sys, tempfile
from mpfault._runtime import events, state as st

if sys.argv[1] == "python":
    events._fastrec = None
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG, no signal
resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))
rec = events.Recorder(tempfile.mkdtemp(), "p")
assert rec.accelerated is (sys.argv[1] == "c")
sink = []
put = rec.wrap("q", events.OP_CODES["put"], sink.append, True, st, st.fork_generation, list)
item = "z" * 200
try:
    for i in range(100_000):  # ~300 bytes a put: the log outgrows 3 MiB
        put(item)
except OSError as e:
    print("OSError", e.errno, len(sink), e.filename == rec.path)
else:
    print("no error")
"""


def test_a_log_that_cannot_grow_raises(accelerated: bool) -> None:
    """A full disk (here: a file size limit) is an OSError from the queue operation
    that names the history file, never a crash (SIGBUS, SIGXFSZ); what was recorded
    before stays."""
    import errno
    import subprocess
    import sys

    impl = "c" if accelerated else "python"
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, impl], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["OSError", str(errno.EFBIG)], out
    assert 1000 < int(out[2]) < 100_000  # the puts before the limit went through
    assert out[3] == "True"  # the error names the file


def test_operations_show_the_queue_s_signature(mpfault: Harness) -> None:
    import inspect

    q = mpfault.queue(faults=["get#9:drop"])
    want = inspect.signature(q.wrapped.put)
    assert inspect.signature(q.get) == inspect.signature(q.wrapped.get)  # the fault path
    assert inspect.signature(q.put) == want  # before the first call
    q.put(1)
    assert inspect.signature(q.put) == want  # the recording operation
    assert q.put.__name__ == "put"
    assert q.get(timeout=60) == 1
