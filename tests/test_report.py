"""What a failing test leaves behind: the HTML timeline, in a directory and in pytest-html."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

FAILING = """
import pytest
from mpfault import faults

def put_all(q, items):
    for x in items:
        q.put(x)
    return len(items)

@pytest.mark.mpfault("put==None:drop", start_methods=["fork"])
def test_lost_sentinel(mpfault):
    q = mpfault.queue()
    mpfault.spawn(put_all, q, [1, 2, None], name="producer").result(timeout=60)
    assert [q.get(timeout=60) for _ in range(2)] == [1, 2]
    mpfault.history.assert_no_loss()

@pytest.mark.mpfault(start_methods=["fork"])
def test_passes(mpfault):
    q = mpfault.queue()
    q.put(1)
    assert q.get(timeout=60) == 1
"""


def test_report_dir_gets_one_timeline_per_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tl=FAILING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mpfault-report=tl")
    result.assert_outcomes(passed=1, failed=1)
    files = sorted((pytester.path / "tl").iterdir())
    assert len(files) == 1
    assert "test_lost_sentinel" in files[0].name
    root = ET.fromstring(files[0].read_text())
    lanes = [e for e in root.iter() if "lane" in (e.get("class") or "").split()]
    assert {e.get("data-process") for e in lanes} == {"producer", "MainProcess"}
    text = files[0].read_text()
    assert "put==None:drop" in text
    # the terminal report names the file and shows the lost item with its fault
    out = result.stdout.str()
    assert str(files[0].name) in out
    assert "None on 'q1', put by producer" in out
    assert "fault put==None:drop fired on this put" in out


def test_pytest_html_gets_the_timeline(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    pytester.makepyfile(test_tl=FAILING)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--html=report.html", "--self-contained-html"
    )
    result.assert_outcomes(passed=1, failed=1)
    page = (pytester.path / "report.html").read_text()
    assert page.count("mpfault-timeline") == 1
    assert "data-process" in page


def test_replay_keeps_instrumentation_and_formatters_from_options_and_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from mpfault._report import replay_command

    settings = SimpleNamespace(faults_source="", faults=(), instrument=True)
    monkeypatch.delenv("MPFAULT_INSTRUMENT", raising=False)
    monkeypatch.delenv("MPFAULT_SHOW", raising=False)
    monkeypatch.setenv("MPFAULT_KEY", "helpers:key_of")
    line = replay_command(
        "t.py::test_a",
        7,
        settings=settings,
        args=["--mpfault-instrument", "--mpfault-show", "*=helpers:shown", "-q", "-x"],
    )
    assert "--mpfault-instrument" in line.split()
    assert "--mpfault-show '*=helpers:shown'" in line
    assert "--mpfault-key=helpers:key_of" in line
    assert " -q" not in line
    assert " -x" not in line
    # given by the environment: replayed as the option
    monkeypatch.setenv("MPFAULT_INSTRUMENT", "1")
    monkeypatch.setenv("MPFAULT_SHOW", "helpers:shown")
    line = replay_command("t.py::test_a", 7, settings=settings, args=[])
    assert line.split().count("--mpfault-instrument") == 1
    assert "--mpfault-show=helpers:shown" in line
