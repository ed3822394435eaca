"""The examples of README.md and docs/guide.md are executed, so they cannot rot.

A fenced ``python`` block preceded by ``<!-- example: NAME -->`` is an example:

- ``NAME`` is ``test_*.py``: a pytest file, run in a pytester subprocess; every test in it
  must pass, unless the marker says otherwise with ``outcome=failed`` (every test fails)
  or ``outcome=passed=2,failed=1`` (these exact counts);
- any other ``NAME.py``: a script, run as ``python NAME.py`` in a temporary directory; it
  must exit with status 0.

``<!-- expect: TEXT -->`` lines right after the block (repeatable) name exact substrings
of the output: pytest's output for a test file, stdout for a script.

The tutorial programs of ``docs/examples/`` are copied next to every example, so the
examples import them by module name (``from blocking import consumer``).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/guide.md")
EXAMPLES_DIR = ROOT / "docs" / "examples"
TUTORIAL = ("blocking", "busy_wait", "timeout")

#: extra pytest options per document (the guide's examples run under two start methods,
#: which keeps this file's run time reasonable; the README's run under every one)
PYTEST_ARGS = {"docs/guide.md": ("--mpfault-start-methods=fork,spawn",)}
TEST_TIMEOUT = 240
SCRIPT_TIMEOUT = 120

MARKER = re.compile(r"^<!--\s*example:\s*(?P<name>\S+)(?:\s+outcome=(?P<outcome>\S+))?\s*-->\s*$")
EXPECT = re.compile(r"^<!--\s*expect:\s?(?P<text>.*?)\s?-->\s*$")
LOOSE_MARKER = re.compile(r"^\s*<!--\s*(example|expect)\b")
OUTCOMES = ("passed", "failed", "skipped", "errors", "xfailed", "xpassed")


@dataclass
class Example:
    doc: str
    name: str
    line: int
    code: str
    outcome: str | None = None
    expect: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{Path(self.doc).name}:{self.name}"

    @property
    def is_test_file(self) -> bool:
        return self.name.startswith("test_") and self.name.endswith(".py")


def extract(doc: str, text: str) -> tuple[list[Example], list[str]]:
    """The examples of one document, and the problems of its markers."""
    lines = text.splitlines()
    examples: list[Example] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m is None:
            if LOOSE_MARKER.search(line) and not EXPECT.match(line):
                problems.append(f"{doc}:{i + 1}: malformed marker {line.strip()!r}")
            elif EXPECT.match(line):
                problems.append(f"{doc}:{i + 1}: an expect marker that follows no example")
            i += 1
            continue
        name, outcome = m["name"], m["outcome"]
        where = f"{doc}:{i + 1}"
        if not name.endswith(".py"):
            problems.append(f"{where}: example name {name!r} does not end in .py")
        if outcome is not None and not (name.startswith("test_") and name.endswith(".py")):
            problems.append(f"{where}: outcome= is only for test files, not {name!r}")
        if outcome is not None:
            try:
                parse_outcome(outcome)
            except ValueError as e:
                problems.append(f"{where}: {e}")
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
            problems.append(f"{where}: the example marker is not followed by a ```python fence")
            i += 1
            continue
        start = i + 2
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end >= len(lines):
            problems.append(f"{where}: the fence of example {name!r} is never closed")
            break
        ex = Example(doc, name, i + 1, "\n".join(lines[start:end]) + "\n", outcome)
        j = end + 1
        while j < len(lines):
            e = EXPECT.match(lines[j])
            if e is not None:
                ex.expect.append(e["text"])
            elif lines[j].strip():
                break
            j += 1
        if ex.id in {x.id for x in examples}:
            problems.append(f"{where}: a second example named {name!r}")
        examples.append(ex)
        i = j
    return examples, problems


def parse_outcome(text: str) -> dict[str, int] | str:
    """``failed`` / ``passed`` (every test), or ``passed=2,failed=1`` (exact counts)."""
    if text in ("passed", "failed"):
        return text
    counts: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in OUTCOMES or not value.isdigit():
            raise ValueError(f"bad outcome {text!r} (e.g. failed, or passed=2,failed=1)")
        counts[key] = int(value)
    return counts


def _collect() -> tuple[list[Example], list[str]]:
    examples: list[Example] = []
    problems: list[str] = []
    for doc in DOCS:
        path = ROOT / doc
        if not path.exists():
            problems.append(f"{doc}: missing")
            continue
        ex, pr = extract(doc, path.read_text(encoding="utf-8"))
        examples += ex
        problems += pr
    return examples, problems


EXAMPLES, PROBLEMS = _collect()


def _copy_tutorial(dest: Path) -> None:
    for src in EXAMPLES_DIR.glob("*.py"):
        shutil.copy(src, dest / src.name)


def _check_expect(ex: Example, output: str) -> None:
    missing = [t for t in ex.expect if t not in output]
    assert not missing, f"{ex.id}: not in the output: {missing!r}\n\n--- output ---\n{output}"


# -- the documents ----------------------------------------------------------------------------


def test_markers_are_well_formed() -> None:
    assert not PROBLEMS, "\n".join(PROBLEMS)


@pytest.mark.parametrize("doc", DOCS)
def test_each_document_has_examples(doc: str) -> None:
    assert [e for e in EXAMPLES if e.doc == doc], f"{doc}: no <!-- example: ... --> block"


def test_extract_conventions() -> None:
    text = "\n".join(
        [
            "<!-- example: test_a.py outcome=passed=1,failed=2 -->",
            "```python",
            "def test(): pass",
            "```",
            "<!-- expect: 1 failed -->",
            "",
            "<!-- expect: it  says -->",
            "<!-- example: s.py -->",
            "```bash",
            "echo",
            "```",
            "<!-- example: t.py -->",
            "",
            "```python",
            "```",
        ]
    )
    examples, problems = extract("x.md", text)
    assert [(e.name, e.outcome, e.expect, e.line) for e in examples] == [
        ("test_a.py", "passed=1,failed=2", ["1 failed", "it  says"], 1)
    ]
    assert examples[0].code == "def test(): pass\n"
    assert len(problems) == 2
    assert all("not followed by a ```python fence" in p for p in problems)
    assert parse_outcome("passed=1,failed=2") == {"passed": 1, "failed": 2}
    with pytest.raises(ValueError):
        parse_outcome("broken=1")


# -- the examples -----------------------------------------------------------------------------


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example(
    ex: Example, pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("MPFAULT"):  # ambient faults or seeds of this run are not the doc's
            monkeypatch.delenv(name)
    if ex.is_test_file:
        _run_test_file(ex, pytester)
    else:
        _run_script(ex, tmp_path)


def _run_test_file(ex: Example, pytester: pytest.Pytester) -> None:
    _copy_tutorial(pytester.path)
    (pytester.path / ex.name).write_text(ex.code, encoding="utf-8")
    args = ("-p", "no:cacheprovider", *PYTEST_ARGS.get(ex.doc, ()), ex.name)
    result = pytester.runpytest_subprocess(*args, timeout=TEST_TIMEOUT)
    output = result.stdout.str() + "\n" + result.stderr.str()
    outcomes = result.parseoutcomes()
    expected = parse_outcome(ex.outcome or "passed")
    if expected == "passed":
        ok = result.ret == 0 and outcomes.get("passed", 0) > 0
    elif expected == "failed":
        others = ("passed", "errors", "xpassed", "xfailed", "skipped")
        ok = outcomes.get("failed", 0) > 0 and not any(outcomes.get(k) for k in others)
    else:
        assert isinstance(expected, dict)
        got = {k: outcomes[k] for k in OUTCOMES if outcomes.get(k)}
        ok = got == {k: v for k, v in expected.items() if v}
    assert ok, (
        f"{ex.id} (line {ex.line}): expected {ex.outcome or 'passed'}, got {outcomes}\n{output}"
    )
    _check_expect(ex, output)


def _run_script(ex: Example, tmp_path: Path) -> None:
    _copy_tutorial(tmp_path)
    (tmp_path / ex.name).write_text(ex.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, ex.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{ex.id} (line {ex.line}) exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    _check_expect(ex, proc.stdout)


# -- the tutorial programs run as they are ---------------------------------------------------


@pytest.mark.parametrize("module", TUTORIAL)
def test_tutorial_program_runs(module: str) -> None:
    """``python -m <module>``: the plain multiprocessing program finishes by itself."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES_DIR), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module],
        cwd=EXAMPLES_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Consumer: done" in proc.stdout, proc.stdout


@pytest.mark.parametrize("module", TUTORIAL)
@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
def test_tutorial_main_with_fork(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``main()`` imported and called with the fork context: both processes exit with 0."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in docs/
    path = EXAMPLES_DIR / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_docs_examples_{module}", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(multiprocessing.get_context("fork"), n=5) == (0, 0)
