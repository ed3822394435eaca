"""Settings from ini, env, options and markers: precedence, errors, seeds, xdist."""

from __future__ import annotations

import re

import pytest

SHOW_PLAN = """
import pytest

def test_plan(mpfault):
    print("PLAN:", "; ".join(str(f) for f in mpfault.faults), "METHOD:", mpfault.start_method)
"""


def _plans(result: pytest.RunResult) -> list[str]:
    return re.findall(r"PLAN: (.*) METHOD:", result.stdout.str())


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("ini", "ini mpfault_faults"),
        ("env", "env MPFAULT"),
        ("option", "--mpfault"),
    ],
)
def test_malformed_spec_is_a_one_line_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, expected: str
) -> None:
    pytester.makepyfile(SHOW_PLAN)
    args = ["-p", "no:cacheprovider"]
    if where == "ini":
        pytester.makeini("[pytest]\nmpfault_faults =\n    put:dorp\n")
    elif where == "env":
        monkeypatch.setenv("MPFAULT", "put:dorp")
    else:
        args.append("--mpfault=put:dorp")
    result = pytester.runpytest_subprocess(*args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [ln for ln in result.stderr.lines if "dorp" in ln]
    assert len(lines) == 1
    assert lines[0].startswith("ERROR: mpfault: bad fault spec 'put:dorp' from " + expected)
    assert "unknown action 'dorp'" in lines[0]


def test_malformed_marker_spec_names_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mpfault("get#0:drop")
        def test_bad(mpfault):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*mpfault: bad fault spec 'get#0:drop' from @pytest.mark.mpfault on *test_bad*"]
    )


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "--mpfault-start-methods",
            "fork,sporn",
            "unknown start method 'sporn' from --mpfault-start-methods",
        ),
        ("--mpfault-deadline", "soon", "invalid deadline 'soon' from --mpfault-deadline"),
        ("--mpfault-seed", "x1", "invalid seed 'x1' from --mpfault-seed"),
        (
            "--mpfault-tmpdir",
            "/nonexistent/mpf",
            "run files directory '/nonexistent/mpf' from --mpfault-tmpdir is not a directory",
        ),
    ],
)
def test_bad_options(pytester: pytest.Pytester, setting: str, value: str, message: str) -> None:
    pytester.makepyfile(SHOW_PLAN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"{setting}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: mpfault: {message}" in result.stderr.str()


def test_precedence_ini_env_option_marker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nmpfault_faults =\n    put#1:drop\nmpfault_start_methods = fork\n")
    pytester.makepyfile(
        test_a=SHOW_PLAN,
        test_b="""
        import pytest

        @pytest.mark.mpfault("put#4:drop", start_methods=["spawn"])
        def test_marked(mpfault):
            print("PLAN:", "; ".join(str(f) for f in mpfault.faults), "METHOD:",
                  mpfault.start_method)
        """,
    )
    base = ["-p", "no:cacheprovider", "-s"]
    r = pytester.runpytest_subprocess(*base, timeout=120)
    assert _plans(r) == ["put#1:drop", "put#4:drop"]
    r.stdout.fnmatch_lines(["*METHOD: fork*", "*METHOD: spawn*"])
    monkeypatch.setenv("MPFAULT", "put#2:drop")
    r = pytester.runpytest_subprocess(*base, timeout=120)
    assert _plans(r) == ["put#2:drop", "put#4:drop"]
    r = pytester.runpytest_subprocess(*base, "--mpfault=put#3:drop", "-v", timeout=120)
    assert _plans(r) == ["put#3:drop", "put#4:drop"]
    # test ids show the start method
    r.stdout.fnmatch_lines(
        ["test_a.py::test_plan[[]fork[]]*", "test_b.py::test_marked[[]spawn[]]*"]
    )


RUN_DIR = """
import os

def test_where(mpfault):
    q = mpfault.queue()
    q.put(1)
    assert q.get() == 1
    logs = os.listdir(os.path.join(mpfault.run_dir, "events"))
    print("RUNDIR:", os.path.dirname(mpfault.run_dir), "LOGS:", len(logs))
"""


def test_tmpdir_precedence_ini_env_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run files go where ini < env < option says; the header says where; a bad
    directory is a one-line usage error naming its source; nothing is left there."""
    dirs = {k: pytester.path / k for k in ("ini", "env", "opt")}
    for d in dirs.values():
        d.mkdir()
    # a relative path in the ini file: relative to the file's directory, wherever pytest runs
    pytester.makeini("[pytest]\nmpfault_tmpdir = ini\nmpfault_start_methods = fork\n")
    pytester.makepyfile(RUN_DIR)

    def where(*args: str) -> str:
        r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", *args, timeout=60)
        r.assert_outcomes(passed=1)
        found = re.findall(r"RUNDIR: (\S+) LOGS: 1$", r.stdout.str(), re.M)
        assert len(found) == 1, r.stdout.str()
        r.stdout.fnmatch_lines([f"mpfault: run files in {found[0]}"])
        return found[0]

    assert where() == str(dirs["ini"])
    (pytester.path / "sub").mkdir()
    monkeypatch.chdir(pytester.path / "sub")
    assert where(str(pytester.path)) == str(dirs["ini"])
    monkeypatch.chdir(pytester.path)
    monkeypatch.setenv("MPFAULT_TMPDIR", str(dirs["env"]))
    assert where() == str(dirs["env"])
    assert where(f"--mpfault-tmpdir={dirs['opt']}") == str(dirs["opt"])
    for d in dirs.values():
        assert list(d.iterdir()) == []  # every run directory removed at teardown
    monkeypatch.setenv("MPFAULT_TMPDIR", str(pytester.path / "missing"))
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    lines = [ln for ln in r.stderr.lines if "missing" in ln]
    assert lines == [
        f"ERROR: mpfault: run files directory '{pytester.path / 'missing'}' "
        "from env MPFAULT_TMPDIR is not a directory"
    ]


def test_header_seed_and_replay(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_seed(mpfault):
            print("SEED:", mpfault.seed)
        """
    )
    r1 = pytester.runpytest_subprocess("-s", "--mpfault-start-methods=fork")
    header = re.search(r"mpfault: seed=(\d+), start methods fork, faults: none", r1.stdout.str())
    assert header
    r1.stdout.fnmatch_lines([f"mpfault: replay with --mpfault-seed={header.group(1)}"])
    seed1 = re.findall(r"SEED: (\d+)", r1.stdout.str())
    r2 = pytester.runpytest_subprocess("-s", "--mpfault-start-methods=fork", "--mpfault-seed=last")
    assert re.findall(r"SEED: (\d+)", r2.stdout.str()) == seed1
    r3 = pytester.runpytest_subprocess(
        "-s", "--mpfault-start-methods=fork", f"--mpfault-seed={header.group(1)}", "-n", "2"
    )
    r3.assert_outcomes(passed=1)
    assert r3.stdout.str().count("mpfault: seed=") == 1  # the controller's header only


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mpfault("put#1:drop", start_methods=["fork"], deadline=10)
        def test_marked(mpfault):
            q = mpfault.queue()
            q.put(1)
            assert mpfault.fired() == {"q1: put#1:drop": 1}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=1)
    help_text = pytester.runpytest_subprocess("--markers").stdout.str()
    assert (
        "@pytest.mark.mpfault(*specs, start_methods=None, deadline=None, seed=None, "
        "instrument=False, key=None, show=None)" in help_text
    )
    options = pytester.runpytest_subprocess("--help").stdout.str()
    for name in [
        "--mpfault-start-methods",
        "--mpfault=SPEC",
        "--mpfault-seed",
        "--mpfault-instrument",
        "--mpfault-deadline",
        "--mpfault-report",
        "mpfault_faults",
        "mpfault_deadline",
        "mpfault_grace",
        "mpfault_timeout_tolerance",
        "mpfault_start_methods",
    ]:
        assert name in options, name


def test_faults_stay_with_their_test_under_xdist(pytester: pytest.Pytester) -> None:
    body = """
import pytest

def put_all(q, items):
    for x in items:
        q.put(x)

@pytest.mark.mpfault("put#{n}:drop", start_methods=["fork", "spawn"])
def test_{name}(mpfault):
    q = mpfault.queue()
    c = mpfault.spawn(put_all, q, list(range(6)))
    c.result(timeout=60)
    got = [q.get(timeout=60) for _ in range(5)]
    assert got == [i for i in range(6) if i != {n} - 1]
    assert mpfault.fired() == {{"q1: put#{n}:drop": 1}}
    assert [i.value for i in mpfault.history.lost()] == ["{lost}"]
"""
    files = {f"test_iso{n}": body.format(n=n, name=f"drop{n}", lost=n - 1) for n in range(1, 5)}
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", timeout=180)
    result.assert_outcomes(passed=8)


def test_targets_in_the_test_module_with_importlib_mode(pytester: pytest.Pytester) -> None:
    pkg = pytester.mkpydir("pkg")
    (pkg / "test_imp.py").write_text(
        """
class Payload:
    def __init__(self, n):
        self.n = n

def double(p):
    return Payload(p.n * 2)

def test_importlib(mpfault):
    assert mpfault.spawn(double, Payload(21)).result(timeout=60).n == 42
"""
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--import-mode=importlib", timeout=120
    )
    result.assert_outcomes(passed=3)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_no_fixture(request):
            assert "mpfault" not in request.fixturenames
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:mpfault", "--strict-markers")
    result.assert_outcomes(passed=1)
    assert "mpfault:" not in result.stdout.str()


def test_the_start_methods_read_without_multiprocessing_are_its_own() -> None:
    """_config knows the platform's start methods without loading multiprocessing (a
    session with no mpfault test never loads it); they are what it says."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; from mpfault import _config\n"
        "mine = _config._all_start_methods()\n"
        "loaded = 'multiprocessing' in sys.modules\n"
        "import multiprocessing\n"
        "print(json.dumps([mine, multiprocessing.get_all_start_methods(), loaded]))\n"
    )
    from procs import without_coverage

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=without_coverage(),
    )
    mine, theirs, loaded = json.loads(out.stdout)
    assert mine == theirs
    assert not loaded or sys.version_info >= (3, 14)


COUNTING_CONFTEST = """
import mpfault._config as config

calls = []
original = config.resolve


def counting(cfg, marker, nodeid):
    calls.append(nodeid)
    return original(cfg, marker, nodeid)


config.resolve = counting


def pytest_sessionfinish(session):
    print("RESOLVED", calls)
"""


def test_settings_are_resolved_once_per_test(pytester: pytest.Pytester) -> None:
    """Once for the session, once for a test function, whatever number of start
    methods it runs under (its parametrization and its fixture share them)."""
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mpfault(deadline=30)
        def test_one(mpfault):
            assert mpfault.deadline == 30
        """
    )
    result = pytester.runpytest_subprocess(
        "-s", "-p", "no:xdist", "--mpfault-start-methods=fork,spawn"
    )
    result.assert_outcomes(passed=2)
    resolved = "RESOLVED ['', 'test_settings_are_resolved_once_per_test.py::test_one']\n"
    assert resolved in result.stdout.str()
