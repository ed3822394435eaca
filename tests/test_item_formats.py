"""Item identity and display: ``key=`` and ``show=`` on queues, the harness, instrumentation
and the marker; the fallback (and its note) when one fails; the error for one that
cannot reach a child.

Real processes under every start method (the ``mpfault`` fixture is parametrized over
them); the plugin-level tests run pytest in a subprocess.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
from typing import Any

import pytest

from mpfault import ChildError, Hang, Harness, HistoryError, MpfaultError
from mpfault._report import timeline_text
from mpfault._runtime import events

# -- items and formatters (module level: they are pickled by reference) --------------------


class Tagged:
    """Distinct items with one repr."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def __repr__(self) -> str:
        return "<Tagged>"


def tag_key(item: Tagged) -> str:
    return f"tag:{item.tag}"


def tag_show(item: Tagged) -> str:
    return f"Tagged({item.tag})"


class Stamped:
    """An item whose repr says which process holds it: equal items, different reprs."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.pid = os.getpid()

    def __getstate__(self) -> int:
        return self.value

    def __setstate__(self, value: int) -> None:
        self.value = value
        self.pid = os.getpid()

    def __repr__(self) -> str:
        return f"<Stamped {self.value} held by pid {self.pid}>"


def stamped_key(item: Stamped) -> str:
    return f"stamped:{item.value}"


def show_raises(item: Any) -> str:
    raise ValueError("cannot show this")


def key_as_int(item: Any) -> Any:
    return 42


def record_message(record: logging.LogRecord) -> str:
    return record.getMessage()


class Unpicklable:
    """A callable that does not pickle."""

    def __call__(self, item: Any) -> str:
        return "x"

    def __reduce__(self) -> Any:
        raise TypeError("no pickling here")

    def __repr__(self) -> str:
        return "<Unpicklable>"


# -- children ----------------------------------------------------------------------------


def put_all(q: Any, items: list[Any]) -> None:
    for x in items:
        q.put(x)


def get_one(q: Any) -> Any:
    return q.get()


def put_stamped(q: Any, n: int) -> None:
    for i in range(1, n + 1):
        q.put(Stamped(i))  # made here: its repr holds this process's pid


def log_records(q: Any, n: int) -> None:
    log = logging.getLogger("mpfault-test-worker")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(logging.handlers.QueueHandler(q))
    for i in range(1, n + 1):
        log.info("record %d", i)


# -- key ---------------------------------------------------------------------------------


def test_key_tells_apart_distinct_items_with_equal_reprs(mpfault: Harness) -> None:
    faults = ["put#1:duplicate", "put#2:drop"]  # one item twice, the other never
    plain = mpfault.queue(faults=faults)
    keyed = mpfault.queue(faults=faults, key=tag_key, show=tag_show)
    for q in (plain, keyed):
        mpfault.spawn(put_all, q, [Tagged(1), Tagged(2)]).result(timeout=30)
        assert [q.get(timeout=30).tag for _ in range(2)] == [1, 1]
    h = mpfault.history
    # by repr, one value put twice and got twice: the loss and the duplicate cancel out
    assert h.lost("q1") == []
    assert h.duplicated("q1") == []
    assert [(i.key, i.value) for i in h.lost("q2")] == [("tag:2", "Tagged(2)")]
    assert [(i.key, i.value, i.count) for i in h.duplicated("q2")] == [("tag:1", "Tagged(1)", 1)]


def test_key_matches_equal_items_whose_reprs_differ(mpfault: Harness) -> None:
    plain = mpfault.queue()
    keyed = mpfault.queue(key=stamped_key, faults=["get#1:delay(1ms)"])  # a faulted get too
    for q in (plain, keyed):
        mpfault.spawn(put_stamped, q, 2).result(timeout=30)
        assert [q.get(timeout=30).value for _ in range(2)] == [1, 2]
    h = mpfault.history
    assert len(h.lost("q1")) == 2  # by repr no item got is an item put
    h.assert_no_loss("q2")
    h.assert_no_duplicates("q2")
    h.assert_fifo_per_producer("q2")
    assert [e.key for e in h.ops("put", queue="q2")] == ["stamped:1", "stamped:2"]
    assert [e.result_key for e in h.ops("get", queue="q2")] == ["stamped:1", "stamped:2"]
    # no show: the default repr is shown
    assert h.ops("put", queue="q2")[0].item.startswith("<Stamped 1 held by pid ")


# -- show --------------------------------------------------------------------------------


def test_show_is_what_the_checkers_the_timeline_and_fault_messages_print(
    mpfault: Harness,
) -> None:
    q = mpfault.queue(key=tag_key, show=tag_show)
    mpfault.spawn(put_all, q, [Tagged(1), Tagged(2), Tagged(3)]).result(timeout=30)
    assert q.get(timeout=30).tag == 1
    h = mpfault.history
    assert [i.value for i in h.lost()] == ["Tagged(2)", "Tagged(3)"]
    with pytest.raises(HistoryError) as info:
        h.assert_no_loss()
    assert "- Tagged(2) on 'q1', put by put_all-1 (pid " in str(info.value)
    assert "Tagged(3)" in timeline_text(mpfault)
    assert h.got_items() == ["Tagged(1)"]

    dying = mpfault.queue(show=tag_show, faults=["put#2:kill(after)"])
    with pytest.raises(ChildError, match=r"last queue operation: put\(Tagged\(2\)\) on 'q2'"):
        mpfault.spawn(put_all, dying, [Tagged(1), Tagged(2), Tagged(3)]).result(timeout=30)


def test_wrap_takes_key_and_show(mpfault: Harness) -> None:
    q = mpfault.wrap(mpfault.ctx.Queue(), name="raw", key=tag_key, show=tag_show)
    mpfault.spawn(put_all, q, [Tagged(7)]).result(timeout=30)
    assert q.get(timeout=30).tag == 7
    [put] = mpfault.history.ops("put", queue="raw")
    [got] = mpfault.history.ops("get", queue="raw")
    assert (put.item, put.key, got.result, got.result_key) == (
        "Tagged(7)",
        "tag:7",
        "Tagged(7)",
        "tag:7",
    )


def test_show_keeps_200_characters(mpfault: Harness) -> None:
    q = mpfault.queue(show=str)  # a builtin: pickles by reference
    q.put("x" * 500)
    assert q.get(timeout=30) == "x" * 500
    [put] = mpfault.history.ops("put")
    assert put.item == "x" * 197 + "..."
    assert put.key == events.item_key("x" * 500)  # the key is the default one


def test_harness_rules_by_name_glob_and_the_queues_own_first(tmp_path: Any) -> None:
    with Harness(
        start_method="fork", tmpdir=str(tmp_path), show={"logs*": tag_show, "*": str}
    ) as h:
        logs = h.queue(name="logs-1")
        other = h.queue(name="other")
        own = h.queue(name="logs-2", show=tag_key)
        for q in (logs, other, own):
            q.put(Tagged(1))
            q.get(timeout=30)
        shown = {e.queue: e.item for e in h.history.ops("put")}
        assert shown == {"logs-1": "Tagged(1)", "other": "<Tagged>", "logs-2": "tag:1"}


# -- a formatter that fails ---------------------------------------------------------------


def test_a_failing_formatter_falls_back_with_one_note(mpfault: Harness) -> None:
    q = mpfault.queue(key=key_as_int, show=show_raises, faults=["put#2:delay(1ms)"])
    child = mpfault.spawn(put_all, q, [Tagged(1), Tagged(2), Tagged(3)])
    child.result(timeout=30)
    assert [q.get(timeout=30).tag for _ in range(3)] == [1, 2, 3]  # the code runs on
    h = mpfault.history
    assert h.put_items() == ["<Tagged>"] * 3  # the default repr, on every path
    assert {e.key for e in h.ops("put")} == {"Tagged:<Tagged>"}  # and the default key
    h.assert_no_loss()
    assert h.notes() == [
        "q1: show() raised ValueError for an item of type Tagged; default repr used",
        "q1: key() returned int, not str, for an item of type Tagged; default key used",
    ]
    in_child = [m for m in h.marks if m.kind == "note" and m.pid == child.pid]
    assert len(in_child) == 2  # once per formatter, not once per item
    with pytest.raises(Hang) as info:  # and a Hang says so too
        mpfault.spawn(get_one, mpfault.queue()).result(timeout=0.5)
    assert "Notes:\n  q1: show() raised ValueError for an item of type Tagged" in str(info.value)


# -- a formatter that cannot reach a child --------------------------------------------------


def _local() -> Any:
    def shown(item: Any) -> str:
        return "x"

    return shown


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda h: h.queue(show=lambda item: "x"),
            "queue(show=...) of queue 'q1': a lambda cannot reach the child processes "
            "(a key/show function is pickled by reference); define it as a function at "
            "module level",
        ),
        (
            lambda h: h.wrap(h.ctx.Queue(), key=_local()),
            "wrap(key=...) of queue 'q1': '_local.<locals>.shown' is defined inside a "
            "function, so it cannot reach the child processes",
        ),
        (
            lambda h: h.queue(key=Unpicklable()),
            "queue(key=...) of queue 'q1': <Unpicklable> cannot be pickled, so it cannot "
            "reach the child processes: no pickling here",
        ),
        (
            lambda h: h.queue(name="logs", show="message"),
            "queue(show=...) of queue 'logs': 'message' is not callable",
        ),
        (
            lambda h: h.instrument(key={"Queue@*": lambda r: "x"}).__enter__(),
            "instrument(key=...) for 'Queue@*': a lambda cannot reach the child processes",
        ),
    ],
    ids=["lambda", "local", "unpicklable", "not-callable", "instrument"],
)
def test_a_formatter_that_cannot_reach_a_child_is_an_error_at_once(
    tmp_path: Any, make: Any, message: str
) -> None:
    with Harness(start_method="spawn", tmpdir=str(tmp_path)) as h:
        with pytest.raises(MpfaultError) as info:
            make(h)
        text = str(info.value)
        assert text.startswith(message)
        assert "\n" not in text
        assert h.queues == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"show": lambda item: "x"}, "Harness(show=...): a lambda cannot reach"),
        ({"key": {"q*": Unpicklable()}}, "Harness(key=...) for 'q*': <Unpicklable> cannot be"),
        ({"key": 3}, "Harness(key=...): 3 is neither a callable nor a dict"),
    ],
    ids=["lambda", "dict", "neither"],
)
def test_harness_formatters_are_checked_before_anything_is_made(
    tmp_path: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(MpfaultError) as info:
        Harness(start_method="fork", tmpdir=str(tmp_path), **kwargs)
    assert str(info.value).startswith(message)
    assert os.listdir(tmp_path) == []  # no run directory left


# -- the C fast path ------------------------------------------------------------------------


@pytest.mark.skipif(events._fastrec is None, reason="the C recorder is not built")
def test_only_queues_with_formatters_leave_the_c_path(tmp_path: Any) -> None:
    with Harness(start_method="fork", tmpdir=str(tmp_path)) as h:
        plain = h.queue()
        shown = h.queue(show=tag_show)
        for q in (plain, shown):
            q.put(1)
            q.get(timeout=30)
        assert type(plain.put) is events._fastrec.Op
        assert type(plain.get) is events._fastrec.Op
        assert type(shown.put).__name__ == "function"
        assert type(shown.qsize) is events._fastrec.Trampoline  # no item: untouched


# -- instrumented queues ----------------------------------------------------------------------


def test_instrumented_log_records_are_shown_by_their_message(mpfault: Harness) -> None:
    with mpfault.instrument(
        {"Queue@*": "put@worker#3:kill(after)"},
        show={"Queue@*test_item_formats.py:*": record_message},
    ):
        q = mpfault.ctx.Queue()  # made by "the code": instrumented, not wrapped
        p = mpfault.ctx.Process(target=log_records, args=(q, 5), name="worker")
        p.start()
        p.join(60)
    assert p.exitcode == -signal.SIGKILL
    lost = mpfault.history.lost()
    assert [i.value for i in lost] == ["record 1", "record 2", "record 3"]
    assert all(i.queue.startswith("Queue@") for i in lost)


def test_instrumented_formatters_reach_every_process(mpfault: Harness) -> None:
    with mpfault.instrument(key=tag_key, show=tag_show):
        q = mpfault.ctx.Queue()
        p = mpfault.ctx.Process(target=put_all, args=(q, [Tagged(1), Tagged(2)]), name="w")
        p.start()
        assert [q.get(timeout=30).tag for _ in range(2)] == [1, 2]
        p.join(60)
    h = mpfault.history
    assert [(e.process, e.item, e.key) for e in h.ops("put")] == [
        ("w", "Tagged(1)", "tag:1"),
        ("w", "Tagged(2)", "tag:2"),
    ]
    assert [e.result_key for e in h.ops("get")] == ["tag:1", "tag:2"]
    h.assert_no_loss()


def _ephemeral_formatter() -> Any:
    """A function of a module that exists only in this process (pickles here, cannot be
    loaded in a spawn or forkserver child)."""
    import sys
    import types

    mod = sys.modules.get("mpfault_ephemeral_formats")
    if mod is None:
        mod = types.ModuleType("mpfault_ephemeral_formats")
        exec("def shown(item):\n    return 'shown'\n", mod.__dict__)
        sys.modules[mod.__name__] = mod
    return mod.shown


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_formatters_a_child_cannot_load_leave_the_defaults_and_a_note(
    tmp_path: Any, method: str
) -> None:
    with Harness(start_method=method, tmpdir=str(tmp_path)) as h:
        with h.instrument(show=_ephemeral_formatter()):
            q = h.ctx.Queue()
            p = h.ctx.Process(target=put_all, args=(q, [1, 2]), name="w")
            p.start()
            assert [q.get(timeout=30) for _ in range(2)] == [1, 2]  # the code runs on
            p.join(60)
        assert p.exitcode == 0
        hist = h.history
        assert [e.item for e in hist.ops("put")] == ["1", "2"]  # the defaults, in the child
        assert hist.got_items() == ["shown", "shown"]  # the test process loaded it
        [note] = hist.notes()
        assert note.startswith("Queue@")
        assert ": key/show could not be loaded in this process (ModuleNotFoundError: " in note


# -- the marker ---------------------------------------------------------------------------------

MARKED = """
import logging
import logging.handlers

import pytest


def work(q):
    log = logging.getLogger("worker")
    log.setLevel(logging.INFO)
    log.addHandler(logging.handlers.QueueHandler(q))
    for i in range(1, 6):
        log.info("record %d", i)


def message(record):
    return record.getMessage()


def broken(item):
    raise KeyError("nope")


@pytest.mark.mpfault(
    "put@worker#3:kill(after)",
    instrument=True,
    show={"Queue@*test_logs.py:*": message, "*": broken},
)
def test_logs(mpfault):
    q = mpfault.ctx.Queue()
    other = mpfault.queue()  # 'q1': matched by "*"
    other.put(1)
    assert other.get(timeout=10) == 1
    p = mpfault.ctx.Process(target=work, args=(q,), name="worker")
    p.start()
    p.join(30)
    mpfault.history.assert_no_loss()
"""


def test_marker_show_reaches_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_logs=MARKED)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--mpfault-start-methods=spawn", timeout=120
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "3 items lost (put but never got)" in out
    for n in (1, 2, 3):
        assert f"- record {n} on 'Queue@test_logs.py:" in out
    assert "record 4" not in out
    result.stdout.fnmatch_lines(
        ["notes:", "  q1: show() raised KeyError for an item of type int; default repr used"]
    )


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "instrument=True, show=lambda r: r.getMessage()",
            "show=... of @pytest.mark.mpfault on test_bad.py::test_bad: a lambda cannot "
            "reach the child processes",
        ),
        (
            'key={"Queue@*": "message"}',
            "key=... of @pytest.mark.mpfault on test_bad.py::test_bad for 'Queue@*': "
            "'message' is not callable",
        ),
    ],
    ids=["lambda", "not-callable"],
)
def test_marker_formatters_are_checked(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.mpfault({marker})
        def test_bad(mpfault):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*", f"mpfault: {message}*"])


# -- options, ini, env: key and show for every test (a chaos run's reports) -------------------

HELPERS = """
def message(record):
    return "msg:" + record.getMessage()


def other(item):
    return "other:" + repr(item)


shout = lambda item: repr(item).upper()  # noqa: E731
"""

UNMARKED = MARKED.replace('show={"Queue@*test_logs.py:*": message, "*": broken},', "").replace(
    "def message(record):", "def _message(record):"
)


@pytest.mark.parametrize("source", ["ini", "env", "option"])
def test_show_from_ini_env_or_option_reaches_every_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile(test_logs=UNMARKED, helpers=HELPERS)
    spec = "Queue@*test_logs.py:*=helpers:message, *=helpers:other"
    args = ["-p", "no:cacheprovider", "--mpfault-start-methods=spawn"]
    if source == "ini":
        pytester.makeini(f"[pytest]\nmpfault_show =\n    {spec.replace(', ', chr(10) + '    ')}\n")
    elif source == "env":
        monkeypatch.setenv("MPFAULT_SHOW", spec)
    else:
        args.append(f"--mpfault-show={spec}")
    result = pytester.runpytest_subprocess(*args, timeout=120)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "3 items lost (put but never got)" in out
    for n in (1, 2, 3):
        assert f"- msg:record {n} on 'Queue@test_logs.py:" in out
    assert "msg:record 4" not in out


def test_a_markers_show_replaces_the_sessions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_logs=MARKED, helpers=HELPERS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--mpfault-start-methods=spawn",
        "--mpfault-show=helpers:other", timeout=120,
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "- record 1 on 'Queue@test_logs.py:" in out  # the marker's message()
    assert "other:" not in out


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("option", "nomodule:f", "--mpfault-show: cannot import 'nomodule' (ModuleNotFoundError"),
        ("option", "helpers", "--mpfault-show: 'helpers' is not 'module:function' or"),
        ("env", "helpers:nothing", "env MPFAULT_KEY: module 'helpers' has no 'nothing'"),
        ("ini", "helpers:shout", "ini mpfault_key: a lambda cannot reach the child processes"),
        (
            "ini",
            "q*=helpers:other\n    q*=helpers:message",
            "the queue name glob 'q*' is given twice",
        ),
    ],
    ids=["no-module", "no-colon", "no-attr", "lambda", "twice"],
)
def test_session_formatters_are_checked_at_startup(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    value: str,
    message: str,
) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n", helpers=HELPERS)
    args = ["-p", "no:cacheprovider"]
    if where == "option":
        args.append(f"--mpfault-show={value}")
    elif where == "env":
        monkeypatch.setenv("MPFAULT_KEY", value)
    else:
        pytester.makeini(f"[pytest]\nmpfault_key =\n    {value}\n")
    result = pytester.runpytest_subprocess(*args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert message in err, err
    assert "Traceback" not in err + result.stdout.str()
