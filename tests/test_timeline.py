"""Tests of mpfault._timeline: the text and HTML/SVG timelines of a test's history."""

from __future__ import annotations

import html.parser
import json
import multiprocessing
import os
import re
import shutil
import signal
import struct
import subprocess
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpfault._runtime.events import (
    OP_CODES,
    OUT_OK,
    OUT_RAISED,
    Recorder,
    item_key,
    short_repr,
)
from mpfault._runtime.reader import Event, Mark, read_events
from mpfault._timeline import (
    ProcessInfo,
    TimelineInput,
    render_html,
    render_text,
    sanitise_name,
    write_html,
)

T0 = 1000.0  # an arbitrary monotonic origin, in seconds
SVG = "{http://www.w3.org/2000/svg}"
EVIL = "'<script>alert(\"x&y\")</script>'"


def ms(x: float) -> float:
    """Monotonic seconds ``x`` milliseconds after T0."""
    return T0 + x / 1000.0


def ev(
    process: str,
    pid: int,
    op: str,
    seq: int,
    start: float,
    end: float | None,
    outcome: str = "ok",
    queue: str = "jobs",
    **kw: object,
) -> Event:
    """A synthetic event; times in ms after T0; ``outcome`` pending when ``end`` is None."""
    return Event(
        process,
        pid,
        queue,
        op,
        seq,
        ms(start),
        None if end is None else ms(end),
        "pending" if end is None else outcome,
        **kw,  # type: ignore[arg-type]
    )


def history() -> TimelineInput:
    """A small history: a producer killed mid-put, a consumer blocked in get, a watcher."""
    events = [
        ev("producer-1", 101, "put", 1, 1.0, 1.1, item="0"),
        ev("producer-1", 101, "put", 2, 5.0, 9.5, item="1", fault="delay(0.004)@2", fault_index=0),
        ev("producer-1", 101, "put", 3, 12.0, 12.0, item=EVIL),  # zero duration
        ev("producer-1", 101, "put", 4, 20.0, None, item="'last'"),  # killed in flight
        ev("consumer-1", 102, "get", 1, 2.0, 3.0, result="0"),
        ev("consumer-1", 102, "get", 2, 6.0, 10.0, result="1"),
        ev("consumer-1", 102, "get_nowait", 3, 14.0, 14.1, outcome="raised", exc="Empty"),
        ev("consumer-1", 102, "get", 4, 26.0, None),  # still blocked
        ev("watcher", 103, "qsize", 1, 8.0, 8.0, result="1", queue="results"),
    ]
    marks = [
        Mark("producer-1", 101, "start", ms(0.0), detail="produce"),
        Mark("producer-1", 101, "fault", ms(20.05), "jobs", "kill SIGKILL", 1),
        Mark("producer-1", 101, "kill", ms(20.1), "jobs", "SIGKILL", 1),
        Mark("consumer-1", 102, "start", ms(0.5), detail="consume"),
        Mark("consumer-1", 102, "gate-wait", ms(15.0), detail="g1"),
        Mark("consumer-1", 102, "gate-pass", ms(17.0), detail="g1"),
        Mark("consumer-1", 102, "pause", ms(18.0), detail="0.005"),
        Mark("consumer-1", 102, "resume", ms(23.0)),
        Mark("watcher", 103, "start", ms(4.0), detail="watch"),
        Mark("watcher", 103, "return", ms(9.0)),
    ]
    processes = [
        ProcessInfo("producer-1", 101, "produce", -9, "SIGKILL"),
        ProcessInfo("consumer-1", 102, "consume"),
        ProcessInfo("watcher", 103, "watch", 0),
    ]
    return TimelineInput(
        events=events,
        marks=marks,
        processes=processes,
        title="tests/test_q.py::test_kill[fork-<&>]",
        seed=1234,
        plan=["delay(0.004)@2", "kill@4"],
        hang="consumer-1: jobs.get() did not return within 5.0 s",
        failure="AssertionError: item 'last' lost",
        plans={"jobs": ["delay(0.004)@2", "kill@4"]},
    )


def strip_ns(root: ET.Element) -> ET.Element:
    """Drop XML namespaces from tags, in place, for simpler queries."""
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def parse(doc: str) -> ET.Element:
    """Parse the whole HTML document as XML (it is polyglot XHTML)."""
    return strip_ns(ET.fromstring(doc))


def classes(el: ET.Element) -> set[str]:
    return set((el.get("class") or "").split())


def find_class(root: ET.Element, *wanted: str) -> list[ET.Element]:
    """Every element whose class list contains all of ``wanted``."""
    return [el for el in root.iter() if set(wanted) <= classes(el)]


# ------------------------------------------------------------------------- text


def test_text_shows_every_process_pending_fault_and_kill() -> None:
    text = render_text(history())
    assert "tests/test_q.py::test_kill[fork-<&>]" in text
    assert "seed 1234" in text
    assert "delay(0.004)@2, kill@4" in text
    assert "HANG: consumer-1: jobs.get() did not return within 5.0 s" in text
    assert "FAILURE: AssertionError: item 'last' lost" in text
    for name in ("producer-1", "consumer-1", "watcher"):
        assert re.search(rf"^── {name} · pid \d+", text, re.M), name
    lines = text.splitlines()
    (killed,) = [ln for ln in lines if "'last'" in ln and "put" in ln]
    assert "PENDING (in flight when killed)" in killed
    assert "kill@4" in killed  # the kill's spec, resolved from the queue's plan
    (blocked,) = [ln for ln in lines if " get " in ln and "PENDING" in ln]
    assert "in flight" not in blocked  # consumer-1 is still running
    (delayed,) = [ln for ln in lines if "fault delay(0.004)@2" in ln]
    assert "ok after 4.5 ms" in delayed
    assert any("raised Empty" in ln for ln in lines)
    assert any("⚡ kill SIGKILL" in ln for ln in lines)
    for glyph in ("⏸ pause", "▶ resume", "⛔ gate-wait g1", "✓ gate-pass g1"):
        assert glyph in text
    # Blocks come in start order, then the summary with each exit status.
    assert text.index("── producer-1") < text.index("── consumer-1") < text.index("── watcher")
    summary = text[text.index("── summary") :]
    assert re.search(r"producer-1\s+pid 101\s+killed by SIGKILL\s+4 ops, 1 pending", summary)
    assert re.search(r"consumer-1\s+pid 102\s+still running", summary)
    assert re.search(r"watcher\s+pid 103\s+exited 0\s+1 op\b", summary)


def test_text_times_are_relative_and_aligned() -> None:
    lines = render_text(history()).splitlines()
    timed = [ln for ln in lines if re.match(r"^\s+\d+\.\d{3} ms  ", ln)]
    assert timed
    assert any(re.match(r"^\s+0\.000 ms  ▸ start produce", ln) for ln in timed)
    assert any(re.match(r"^\s+20\.000 ms  jobs", ln) for ln in timed)
    # Right-aligned: every " ms" ends in the same column.
    assert len({ln.index(" ms ") for ln in timed}) == 1


def test_text_keeps_the_last_events_per_process() -> None:
    events = [ev("p", 1, "put", i, float(i), i + 0.5, item=str(i)) for i in range(1, 51)]
    marks = [Mark("p", 1, "start", ms(0.0), detail="f")]
    text = render_text(TimelineInput(events, marks, [ProcessInfo("p", 1, "f", 0)]), last=5)
    shown = [ln for ln in text.splitlines() if re.search(r"\bput\b", ln)]
    assert [ln.split()[-2] for ln in shown] == ["46", "47", "48", "49", "50"]
    assert "45 earlier operations and 1 mark not shown" in text
    assert "50 ops" in text  # the summary counts everything


@pytest.mark.parametrize("width", [40, 60, 80, 100, 140])
def test_text_lines_fit_the_width(width: int) -> None:
    inp = history()
    long = "'" + "x" * 300 + "'"
    inp = TimelineInput(
        events=[*inp.events, ev("watcher", 103, "put", 2, 30.0, 30.5, item=long)],
        marks=inp.marks,
        processes=inp.processes,
        title="t" * 200,
        plan=[f"delay({i})@*" for i in range(40)],
        failure="E" * 500,
    )
    text = render_text(inp, width=width)
    assert max(len(ln) for ln in text.splitlines()) <= width
    assert "xxx…" in text


def test_text_ascii_mode_is_pure_ascii() -> None:
    inp = history()
    inp = TimelineInput(
        events=[*inp.events, ev("watcher", 103, "put", 2, 30.0, 30.5, item="'é→😀'")],
        marks=inp.marks,
        processes=inp.processes,
        title="tést",
    )
    text = render_text(inp, ascii=True)
    text.encode("ascii")
    assert "!! kill SIGKILL" in text
    assert "|| pause" in text
    assert "# gate-wait" in text
    assert "-- producer-1 | pid 101" in text
    assert "\\xe9" in text  # non-ASCII escaped, not dropped


def test_text_of_an_empty_history() -> None:
    text = render_text(TimelineInput(title="t"))
    assert "no processes, no operations recorded" in text
    text = render_text(TimelineInput(processes=[ProcessInfo("solo", 7, "f")], title="t"))
    assert "── solo · pid 7 · f · still running" in text
    assert "(no operations recorded)" in text


def test_events_of_a_process_without_info_get_their_own_block_and_lane() -> None:
    inp = history()
    inp = TimelineInput(
        events=[*inp.events, ev("main", 100, "qsize", 1, 3.0, 3.0, result="2")],
        marks=inp.marks,
        processes=inp.processes,
    )
    text = render_text(inp)
    assert "── main · pid 100 · no process info" in text
    root = parse(render_html(inp))
    (lane,) = [g for g in find_class(root, "lane") if g.get("data-process") == "main"]
    assert lane.get("data-info") == "none"
    assert len(find_class(lane, "op")) == 1


def test_process_status_descriptions() -> None:
    assert ProcessInfo("a", 1, exitcode=-15).status == "killed by SIGTERM"
    assert ProcessInfo("a", 1, exitcode=3).status == "exited 3"
    assert ProcessInfo("a", 1, stopped=True).status == "stopped"
    assert ProcessInfo("a", 1).status == "still running"
    assert ProcessInfo("a", 1, exitcode=-9, signal="SIGKILL").fate == "killed"


# ------------------------------------------------------------------------- html


def test_html_is_well_formed_and_self_contained() -> None:
    doc = render_html(history())
    root = parse(doc)
    assert root.tag == "html"
    (svg,) = find_class(root, "timeline")
    assert svg.tag == "svg"
    assert svg.get("data-lanes") == "3"
    assert svg.get("data-ops") == "9"
    # No scripts, no external resources: only fragment references (url(#id)).
    assert "<script" not in doc.replace("&lt;script", "")
    assert not re.search(r"""(?:src|href)\s*=""", doc)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", doc))
    assert urls <= {"http://www.w3.org/1999/xhtml", "http://www.w3.org/2000/svg"}
    assert set(re.findall(r"url\(([^)]*)\)", doc)) <= {
        "#hatch",
        "#pausefill",
        "#fade-put",
        "#fade-get",
        "#fade-other",
        "#lg-hatch",
        "#lg-fade",
    }


def test_html_lanes_ops_and_marks() -> None:
    root = parse(render_html(history()))
    lanes = find_class(root, "lane")
    assert [g.get("data-process") for g in lanes] == ["producer-1", "consumer-1", "watcher"]
    assert [g.get("data-status") for g in lanes] == ["killed", "running", "exited"]
    assert [g.get("data-pid") for g in lanes] == ["101", "102", "103"]
    producer, consumer, watcher = lanes
    label = " ".join("".join(t.itertext()) for t in producer.iter("text"))
    assert "producer-1" in label
    assert "pid 101 · produce" in label
    assert "killed by SIGKILL" in label

    assert len(find_class(root, "op")) == 9
    assert len(find_class(producer, "op", "put")) == 4
    assert len(find_class(consumer, "op", "get")) == 4
    assert len(find_class(watcher, "op", "other")) == 1
    (raised,) = find_class(root, "op", "raised")
    assert raised.get("data-exc") == "Empty"
    assert raised.get("data-op") == "get_nowait"
    pending = find_class(root, "op", "pending")
    assert sorted(p.get("data-process") or "" for p in pending) == ["consumer-1", "producer-1"]
    for p in pending:
        assert p.get("data-end-ms") is None
        (rect,) = p.iter("rect")
        assert rect.get("fill", "").startswith("url(#fade-")
        # A pending bar runs to the right end of the chart.
        assert float(rect.get("x", "0")) + float(rect.get("width", "0")) == pytest.approx(1116)
        assert "pending" in "".join(p.itertext())
    killed_put = next(p for p in pending if p.get("data-process") == "producer-1")
    assert "killed in flight" in "".join(killed_put.itertext())

    faults = find_class(root, "fault")
    assert sorted(f.get("data-fault") or "" for f in faults) == [
        "delay(0.004)@2",
        "kill@4 (kill SIGKILL)",
    ]
    for f in faults:
        (title,) = f.iter("title")
        assert (f.get("data-fault") or "") in (title.text or "")

    def kinds(lane: ET.Element) -> list[str]:
        return [m.get("data-kind") or "" for m in find_class(lane, "mark")]

    assert sorted(kinds(producer)) == ["kill", "start"]
    assert sorted(kinds(consumer)) == ["gate-pass", "gate-wait", "pause", "start"]
    assert sorted(kinds(watcher)) == ["return", "start"]
    (pause,) = find_class(consumer, "mark", "pause")
    assert pause.get("data-time-ms") == "18.000"
    assert pause.get("data-end-ms") == "23.000"  # shaded up to the resume
    (kill,) = find_class(producer, "mark", "kill")
    assert kill.get("data-detail") == "SIGKILL"
    assert any(p.get("stroke") == "#cf222e" for p in kill.iter("path"))  # the red X

    # Header and legend.
    assert "".join(next(iter(find_class(root, "title"))).itertext()).endswith(
        "tests/test_q.py::test_kill[fork-<&>]"
    )
    (seed,) = find_class(root, "seed")
    assert seed.get("data-seed") == "1234"
    assert [c.text for c in find_class(root, "fault-spec")] == ["delay(0.004)@2", "kill@4"]
    assert "did not return within 5.0 s" in "".join(find_class(root, "hang")[0].itertext())
    assert "item 'last' lost" in "".join(find_class(root, "failure")[0].itertext())
    legend = {el.get("data-legend") for el in find_class(root, "legend-item")}
    assert {"put", "get", "other", "raised", "pending", "fault", "kill", "pause"} <= legend
    ticks = [float(t.get("data-ms") or "nan") for t in find_class(root, "tick")]
    assert ticks[0] == 0
    assert 5 <= len(ticks) <= 12
    assert ticks == sorted(ticks)


def test_html_escapes_user_text() -> None:
    inp = history()
    nasty = "tests/x.py::t[<b>&\"'\x00\x1b]"
    inp = TimelineInput(
        events=inp.events,
        marks=inp.marks,
        processes=[*inp.processes, ProcessInfo("<evil & co>", 104, '"role"')],
        title=nasty,
        plan=["<plan>&"],
        failure="E   assert '<' == \"&amp;\"",
    )
    doc = render_html(inp)
    assert "<script>" not in doc
    assert "<evil" not in doc
    assert "\x00" not in doc
    assert "\x1b" not in doc
    root = parse(doc)
    (op,) = [
        o
        for o in find_class(root, "op")
        if o.get("data-seq") == "3" and o.get("data-process") == "producer-1"
    ]
    assert op.get("data-item") == EVIL
    lane = next(g for g in find_class(root, "lane") if g.get("data-pid") == "104")
    assert lane.get("data-process") == "<evil & co>"
    assert lane.get("data-role") == '"role"'
    assert root.find(".//body") is not None
    assert (root.find(".//body").get("data-title") or "").startswith(  # type: ignore[union-attr]
        "tests/x.py::t[<b>&\"'\\x00\\x1b]"
    )
    assert "E   assert '<' == \"&amp;\"" in "".join(find_class(root, "failure")[0].itertext())
    # html.parser (what a browser-ish tokenizer sees) agrees.
    collector = TagCollector()
    collector.feed(doc)
    assert collector.count("g", "lane") == 4
    assert "<evil & co>" in collector.data


class TagCollector(html.parser.HTMLParser):
    """Collects start tags with their attributes, and all character data."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.data = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.data += data

    def count(self, tag: str, *cls: str) -> int:
        return sum(
            1 for t, a in self.tags if t == tag and set(cls) <= set((a.get("class") or "").split())
        )


def test_html_of_an_empty_history() -> None:
    root = parse(render_html(TimelineInput()))
    assert find_class(root, "lane") == []
    assert find_class(root, "op") == []
    assert find_class(root, "tick") == []  # no time axis without times
    assert len(find_class(root, "empty")) == 1
    root = parse(render_html(TimelineInput(processes=[ProcessInfo("solo", 5, "f")])))
    (lane,) = find_class(root, "lane")
    assert lane.get("data-process") == "solo"
    assert len(find_class(root, "empty")) == 1


def test_html_of_one_process_with_zero_duration_ops() -> None:
    events = [ev("p", 1, "put", i, 2.0, 2.0, item=str(i)) for i in range(1, 4)]
    root = parse(render_html(TimelineInput(events, [], [ProcessInfo("p", 1, "f", 0)])))
    (lane,) = find_class(root, "lane")
    ops = find_class(lane, "op", "instant")
    assert len(ops) == 3
    for op in ops:
        (rect,) = op.iter("rect")
        assert float(rect.get("width", "0")) >= 2  # visible
    ticks = find_class(root, "tick")
    assert ticks  # a degenerate (zero) time span still gets an axis


def test_html_caps_the_number_of_ops_drawn() -> None:
    events = [ev("p", 1, "put", i, i * 0.01, i * 0.01 + 0.005, item=str(i)) for i in range(1, 2501)]
    events += [
        ev("c", 2, "get", i, i * 0.01, i * 0.01 + 0.005, result=str(i)) for i in range(1, 501)
    ]
    events[10] = ev("p", 1, "put", 11, 0.11, 0.2, outcome="raised", item="10", exc="Full")
    events.append(ev("c", 2, "get", 501, 30.0, None))
    procs = [ProcessInfo("p", 1, "f", 0), ProcessInfo("c", 2, "g", 0)]
    doc = render_html(TimelineInput(events, [], procs))
    root = parse(doc)
    ops = find_class(root, "op")
    assert len(ops) == 2000
    (note,) = find_class(root, "elided")
    assert note.get("data-elided") == "1001"
    assert "1001 of 3001 operations elided" in (note.text or "")
    # The interesting ones are always drawn; the latest ones fill the rest.
    assert len(find_class(root, "op", "raised")) == 1
    assert len(find_class(root, "op", "pending")) == 1
    seqs = {o.get("data-seq") for o in ops if o.get("data-process") == "p"}
    assert "2500" in seqs
    assert "12" not in seqs
    lanes = {g.get("data-process"): g for g in find_class(root, "lane")}
    assert int(lanes["p"].get("data-elided") or 0) + int(lanes["c"].get("data-elided") or 0) == 1001
    assert len(find_class(root, "elided-span")) >= 1
    assert len(doc) < 1_500_000


def test_write_html_sanitises_the_name(tmp_path: Path) -> None:
    inp = history()
    a = write_html(inp, str(tmp_path / "out"), "tests/test_q.py::test_x[a/b]")
    b = write_html(inp, str(tmp_path / "out"), "tests/test_q.py::test_x[a:b]")
    c = write_html(inp, str(tmp_path / "out"), "plain_name")
    assert a != b
    for path in (a, b, c):
        assert os.path.dirname(path) == str(tmp_path / "out")
        assert path.endswith(".html")
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.html", os.path.basename(path))
        assert Path(path).read_text(encoding="utf-8") == render_html(inp)
    assert os.path.basename(c) == "plain_name.html"
    assert os.stat(c).st_mode & 0o044  # readable by others (umask permitting), unlike mkstemp
    assert os.path.basename(a).startswith("tests_test_q.py_test_x_a_b-")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in (a, b, c))
    assert sanitise_name("").startswith("timeline")
    assert sanitise_name("///").startswith("timeline-")
    assert "/" not in sanitise_name("../../etc/passwd")
    assert not sanitise_name("../../etc/passwd").startswith(".")


# ------------------------------------------------------------- a real history


def _producer(directory: str) -> None:
    """Child: records a plan, three puts (one delayed by a fault), then dies in a put."""
    rec = Recorder(directory, "producer")
    rec.mark("plan", "jobs", json.dumps(["delay(0.001)@2", "kill@4"]))
    rec.mark("start", detail="_producer")
    put = OP_CODES["put"]
    for i in range(3):
        seq = rec.begin("jobs", put, short_repr(i), item_key(i))
        rec.end(seq, "jobs", put, OUT_OK, fault=0 if i == 1 else -1)
    rec.begin("jobs", put, short_repr("<last & 'x'>"), item_key("<last & 'x'>"))
    rec.mark("fault", "jobs", "kill SIGKILL", fault=1)
    rec.mark("kill", "jobs", "SIGKILL", fault=1)
    os.kill(os.getpid(), signal.SIGKILL)


def _consumer(directory: str) -> None:
    """Child: a failed get_nowait, a gate, two gets, and a normal return."""
    rec = Recorder(directory, "consumer")
    rec.mark("start", detail="_consumer")
    seq = rec.begin("jobs", OP_CODES["get_nowait"])
    rec.end(seq, "jobs", OP_CODES["get_nowait"], OUT_RAISED, detail="Empty")
    rec.mark("gate-wait", detail="g")
    rec.mark("gate-pass", detail="g")
    for i in range(2):
        seq = rec.begin("jobs", OP_CODES["get"])
        rec.end(seq, "jobs", OP_CODES["get"], OUT_OK, item=short_repr(i), detail=item_key(i))
    rec.mark("return")
    rec.close()


@pytest.fixture(scope="module")
def real_history(tmp_path_factory: pytest.TempPathFactory) -> TimelineInput:
    """A history written by two real child processes (spawn and fork), read back."""
    directory = str(tmp_path_factory.mktemp("run") / "events")
    os.makedirs(directory)
    procs = [
        multiprocessing.get_context("spawn").Process(
            target=_producer, args=(directory,), name="producer"
        ),
        multiprocessing.get_context("fork").Process(
            target=_consumer, args=(directory,), name="consumer"
        ),
    ]
    roles = {"producer": "_producer", "consumer": "_consumer"}
    infos = []
    for proc in procs:
        with warnings.catch_warnings():
            # Python >= 3.12 warns when forking a multi-threaded process (e.g. under a
            # threaded timeout); the child here takes no lock, so forking is safe.
            warnings.filterwarnings("ignore", ".*fork", DeprecationWarning)
            proc.start()
        proc.join(timeout=120)
        assert proc.exitcode is not None, f"{proc.name} did not finish"
        assert proc.pid is not None
        sig = signal.Signals(-proc.exitcode).name if proc.exitcode < 0 else None
        infos.append(ProcessInfo(proc.name, proc.pid, roles[proc.name], proc.exitcode, sig))
    events, marks, plans = read_events(directory)
    return TimelineInput(
        events=events,
        marks=marks,
        processes=infos,
        title="tests/test_timeline.py::real[spawn+fork]",
        seed=7,
        plan=plans["jobs"],
        plans=plans,
        failure="item '<last & 'x'>' was never got",
    )


def test_real_history_text(real_history: TimelineInput) -> None:
    assert len(real_history.events) == 7
    text = render_text(real_history)
    assert "── producer · pid" in text
    assert "── consumer · pid" in text
    assert "killed by SIGKILL" in text
    (last,) = [ln for ln in text.splitlines() if "<last & 'x'>" in ln and " put " in ln]
    assert "PENDING (in flight when killed)" in last
    assert "fault kill@4" in last
    assert "fault delay(0.001)@2" in text
    assert "⚡ kill SIGKILL" in text
    assert "raised Empty" in text
    assert re.search(r"consumer\s+pid \d+\s+exited 0\s+3 ops, 1 raised", text)


def test_real_history_html(real_history: TimelineInput) -> None:
    root = parse(render_html(real_history))
    lanes = {g.get("data-process"): g for g in find_class(root, "lane")}
    assert set(lanes) == {"producer", "consumer"}
    assert lanes["producer"].get("data-status") == "killed"
    assert lanes["consumer"].get("data-status") == "exited"
    assert len(find_class(lanes["producer"], "op", "put")) == 4
    assert len(find_class(lanes["producer"], "op", "pending")) == 1
    assert len(find_class(lanes["consumer"], "op", "get")) == 3
    assert len(find_class(lanes["consumer"], "op", "raised")) == 1
    assert len(find_class(lanes["producer"], "mark", "kill")) == 1
    assert len(find_class(lanes["consumer"], "mark", "gate-wait")) == 1
    assert len(find_class(root, "fault")) == 2


# ----------------------------------------------------------- a real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.path.exists("/usr/bin/chromium"):
        path = "/usr/bin/chromium"
    if path is None:
        pytest.skip(
            "chromium is not installed; install it to run the browser tests "
            "(Debian/Ubuntu: apt-get update && apt-get install -y chromium)"
        )
    return path


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    off = 8
    while off < len(data):
        (length,) = struct.unpack(">I", data[off : off + 4])
        kind = data[off + 4 : off + 8]
        body = data[off + 8 : off + 8 + length]
        (crc,) = struct.unpack(">I", data[off + 8 + length : off + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        yield kind, body
        off += 12 + length


def _png_rows(data: bytes, max_rows: int) -> tuple[int, int, list[bytes], int]:
    """(width, height, the first ``max_rows`` unfiltered rows, bytes per pixel)."""
    ihdr = b""
    idat = bytearray()
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8, depth
    assert interlace == 0
    bpp = {2: 3, 6: 4, 0: 1, 4: 2}[colour]
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(height, max_rows)):
        base = y * (stride + 1)
        ftype = raw[base]
        row = bytearray(raw[base + 1 : base + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif ftype == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 0xFF
        else:
            assert ftype == 0, ftype
        rows.append(bytes(row))
        prev = row
    return width, height, rows, bpp


def _has_colour(
    rows: list[bytes], bpp: int, rgb: tuple[int, int, int], tolerance: int = 24
) -> bool:
    for row in rows:
        for i in range(0, len(row), bpp):
            if all(abs(row[i + k] - rgb[k]) <= tolerance for k in range(3)):
                return True
    return False


@pytest.mark.slow
def test_chromium_renders_the_timeline(tmp_path: Path) -> None:
    chromium = _chromium()
    path = write_html(history(), str(tmp_path), "tests/test_q.py::test_kill[fork-<&>]")
    url = Path(path).as_uri()
    shot = tmp_path / "shot.png"
    cmd = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,800",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert len(data) > 10_000
    width, height, rows, bpp = _png_rows(data, max_rows=420)
    assert (width, height) == (1200, 800)
    colours = {row[i : i + 3] for row in rows[::7] for i in range(0, len(row), bpp * 5)}
    assert len(colours) > 20, "the screenshot is (nearly) one colour"
    # The lanes were drawn: put bars (blue), get bars (green), the kill X (red).
    assert _has_colour(rows, bpp, (0x2F, 0x6F, 0xD1))
    assert _has_colour(rows, bpp, (0x1F, 0x9A, 0x57))
    assert _has_colour(rows, bpp, (0xCF, 0x22, 0x2E))

    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    collector = TagCollector()
    collector.feed(dom.stdout)
    lanes = [a.get("data-process") for t, a in collector.tags if a.get("class") == "lane"]
    assert lanes == ["producer-1", "consumer-1", "watcher"]
    assert collector.count("g", "op") == 9
    assert collector.count("g", "mark", "kill") == 1
    assert "<script>alert" not in dom.stdout
