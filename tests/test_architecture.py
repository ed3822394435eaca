"""The package's structure: what the plugin loads, one error root, public modules,
the action table."""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import pkgutil
import subprocess
import sys

import pytest

import mpfault
from mpfault import faults
from mpfault._runtime import actions
from procs import drop_coverage_env, without_coverage

#: what a session of a project with the plugin installed, and no test using it, loads
PLUGIN_MODULES = {
    "mpfault",
    "mpfault.plugin",
    "mpfault._config",
    "mpfault._hookspecs",
    "mpfault._rundir",
}
#: and what it must not: the harness, timeline, report, contract, fault grammar...
HEAVY = {
    "mpfault._harness",
    "mpfault._child",
    "mpfault._spawn",
    "mpfault._coordinator",
    "mpfault._history",
    "mpfault._timeline",
    "mpfault._report",
    "mpfault._pytest_report",
    "mpfault._timing",
    "mpfault._contract",
    "mpfault._contract.pytest_plugin",
    "mpfault._runtime.faults",
    "mpfault._runtime.grammar",
    "mpfault._runtime.model",
    "mpfault._runtime.actions",
    "mpfault._runtime.fqueue",
}


def _loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        env=without_coverage(),
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_importing_the_plugin_loads_only_what_registering_needs() -> None:
    loaded = _loaded_by("import pytest, mpfault.plugin")
    ours = {m for m in loaded if m == "mpfault" or m.startswith("mpfault.")}
    assert ours == PLUGIN_MODULES
    assert not (HEAVY | {"multiprocessing"}) & loaded, sorted(HEAVY & loaded)


SESSION_CONFTEST = """
import json, sys

def pytest_sessionfinish(session):
    with open("loaded.json", "w") as f:
        json.dump(sorted(m for m in sys.modules if m.startswith(("mpfault", "multiprocessing"))), f)
"""


def test_a_session_without_mpfault_tests_loads_nothing_more(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collecting, running and reporting a test that does not use mpfault, with the
    header shown: the plugin's modules only (no harness, contract, grammar)."""
    drop_coverage_env(monkeypatch)  # (coverage's own multiprocessing support)
    pytester.makeconftest(SESSION_CONFTEST)
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mpfault: seed=*"])
    loaded = set(json.loads((pytester.path / "loaded.json").read_text()))
    # and the served queues' report hooks (registered by the plugin), which import nothing more
    assert {m for m in loaded if m.startswith("mpfault")} == PLUGIN_MODULES | {
        "mpfault._serve_plugin"
    }
    # not even multiprocessing, for the header's start methods (where _config knows them)
    heavy = HEAVY | ({"multiprocessing"} if sys.version_info < (3, 14) else set())
    assert not heavy & loaded, sorted(heavy & loaded)


def test_no_mpfault_disables_every_part_of_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_coverage_env(monkeypatch)
    pytester.makeconftest(SESSION_CONFTEST)
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:mpfault")
    result.assert_outcomes(passed=1)
    loaded = set(json.loads((pytester.path / "loaded.json").read_text()))
    assert {m for m in loaded if m.startswith("mpfault")} == set()


def test_the_contract_plugin_is_registered_when_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--mpfault-contract*", "*--mpfault-queue=MODULE:QUEUE*"])
    result = pytester.runpytest_subprocess("--mpfault-queue=x:y")
    result.stderr.fnmatch_lines(["*--mpfault-queue needs --mpfault-contract*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def _package_modules() -> list[str]:
    names = ["mpfault"]
    for info in pkgutil.walk_packages(mpfault.__path__, "mpfault."):
        names.append(info.name)
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _package_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and (obj.__module__ == "mpfault" or obj.__module__.startswith("mpfault."))
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_class_of_the_package_derives_from_mpfault_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 13, sorted(classes)  # the walk found them
    # SIGTERM's interrupt is a KeyboardInterrupt on purpose: `except Exception` (and so
    # MpfaultError) must not catch it, exactly like SIGINT's
    interrupts = {"mpfault._signals.SigtermInterrupt"}
    bad = [
        name
        for name, cls in classes.items()
        if not issubclass(cls, mpfault.MpfaultError) and name not in interrupts
    ]
    assert not bad
    for name in interrupts:
        assert issubclass(classes[name], KeyboardInterrupt)
        assert not issubclass(classes[name], Exception)


def test_errors_are_also_the_builtin_users_catch() -> None:
    assert issubclass(mpfault.FaultSpecError, ValueError)
    assert issubclass(mpfault.HistoryError, AssertionError)
    assert issubclass(mpfault.TimingError, AssertionError)
    with pytest.raises(mpfault.MpfaultError):
        faults.parse("put:dorp")
    with pytest.raises(ValueError, match="unknown action 'dorp'"):
        faults.parse("put:dorp")


def test_public_classes_show_their_public_module() -> None:
    for name in mpfault.__all__:
        obj = getattr(mpfault, name)
        if isinstance(obj, type):
            assert obj.__module__ == "mpfault", name
            assert pickle.loads(pickle.dumps(obj)) is obj, name
    fault = faults.drop(nth=2)
    assert pickle.loads(pickle.dumps(fault)) == fault


def test_the_action_table_is_what_faults_expose() -> None:
    """Every action has an entry, a constructor, a spec that reads back, and the
    table's flags decide where it fires."""
    assert tuple(actions.REGISTRY) == faults.ACTIONS
    for name, entry in actions.REGISTRY.items():
        assert entry.name == name
        assert entry.default_ops <= entry.applies
        builder = getattr(faults, name if name not in ("raise", "return") else name + "_")
        assert inspect.getdoc(builder)
        if entry.when is not None:
            # its when argument is in its normalised args, where the entry says
            assert "when" in inspect.signature(builder).parameters
    whole = {n for n, e in actions.REGISTRY.items() if e.whole_process}
    assert whole == {"kill", "exit", "pause", "gate"}
    assert {n for n, e in actions.REGISTRY.items() if e.ends_process} == {"kill", "exit"}
    assert faults.kill(when="after").args[actions.REGISTRY["kill"].when] == "after"
    assert faults.exit(3, when="after").args[actions.REGISTRY["exit"].when] == "after"
    assert faults.gate("g", when="after").args[actions.REGISTRY["gate"].when] == "after"


def test_an_unknown_action_names_the_table() -> None:
    with pytest.raises(mpfault.FaultSpecError, match=r"expected one of: delay, full, .*, gate"):
        faults.Fault("explode")


def test_control_messages_are_named_and_pickle_by_name() -> None:
    from mpfault._runtime import control

    msgs = [
        control.Result(b"x"),
        control.Error("ValueError", "boom", "Traceback ...", None),
        control.Stack("Thread 'MainThread' ..."),
    ]
    for msg in msgs:
        assert pickle.loads(pickle.dumps(msg)) == msg
    err = msgs[1]
    assert isinstance(err, control.Error)
    assert (err.exc_type, err.message, err.traceback, err.exception) == (
        "ValueError",
        "boom",
        "Traceback ...",
        None,
    )
