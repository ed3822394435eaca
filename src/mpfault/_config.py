"""Settings of the pytest plugin, and their precedence: ini < env < CLI option < marker.

Every setting is read in :func:`resolve`, the one place that knows the order, and
every bad value is a :class:`pytest.UsageError` that names where it came from.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from ._rundir import TMPDIR_ENV, check_tmpdir

if TYPE_CHECKING:
    from ._harness import Harness
    from ._runtime.model import Fault

# Light on purpose: the plugin imports this module in every session.  multiprocessing,
# the fault grammar and the harness load where a setting needs them.

__all__ = [
    "HARNESS_KEY",
    "HELP",
    "MARKER_HELP",
    "SEED_KEY",
    "SETTINGS_KEY",
    "SHOWN_KEY",
    "TIMEOUT_KEY",
    "TIMEOUT_START_KEY",
    "Settings",
    "configure",
    "for_definition",
    "for_item",
    "header",
    "resolve",
    "session_settings",
]

#: the run's seed (the controller's, under xdist)
SEED_KEY = pytest.StashKey[int]()
#: the session's settings (no marker)
SETTINGS_KEY: pytest.StashKey[Settings] = pytest.StashKey()
#: a test's harness
HARNESS_KEY: pytest.StashKey[Harness] = pytest.StashKey()
#: how much of each child's output a test's report sections have shown
SHOWN_KEY = pytest.StashKey[dict[str, tuple[int, int]]]()
#: pytest-timeout's (timeout, method) of a test
TIMEOUT_KEY = pytest.StashKey[tuple[float, str]]()
#: when pytest-timeout's timer of a test started (``time.monotonic()``)
TIMEOUT_START_KEY = pytest.StashKey[float]()
#: the settings of each test function (by definition node id), resolved once
_TESTS_KEY: pytest.StashKey[dict[str, tuple[Any, Settings]]] = pytest.StashKey()

#: One help text per setting, shared by the CLI option and the ini key.
HELP = {
    "start_methods": (
        "Start methods the mpfault fixture is parametrized over, comma-separated "
        "(default: every method this platform has)"
    ),
    "faults": (
        "Fault spec applied to every queue the harness makes, e.g. 'put#3:drop' or "
        "'get:20%delay(1ms..20ms)'; repeatable"
    ),
    "seed": "Seed of probabilistic faults; an integer, or 'last' to reuse the previous run's",
    "deadline": "Seconds no mpfault wait may last in one test; 0 disables (default: 60)",
    "grace": "Seconds a child gets after SIGTERM at teardown before SIGKILL (default: 1)",
    "timeout_tolerance": (
        "Seconds a queue timeout may overshoot in expect_timeout() (default: 1.0)"
    ),
    "tmpdir": (
        "Directory the harness makes its run directories in (history logs, gates, "
        "children's output; removed after each test) (default: the system's temporary "
        "directory)"
    ),
    "instrument": (
        "Instrument every test (also those that do not use the mpfault fixture): every "
        "multiprocessing queue, pipe and process the code under test makes is recorded, "
        "takes the faults (--mpfault) and is stopped at teardown"
    ),
    "report": "Write an HTML timeline of every failing test that used mpfault into DIR",
    "key": (
        "Identity of the items of every queue the tests make or instrument, for the loss "
        "and duplicate checks: 'module:function' (item -> str), or 'GLOB=module:function' "
        "entries by queue name, comma-separated, the first match wins; a marker's key= "
        "replaces it"
    ),
    "show": (
        "How the items of every queue the tests make or instrument are shown (history, "
        "reports, fault messages): 'module:function' (item -> str), or "
        "'GLOB=module:function' entries by queue name, comma-separated, the first match "
        "wins; a marker's show= replaces it"
    ),
}

MARKER_HELP = (
    "mpfault(*specs, start_methods=None, deadline=None, seed=None, instrument=False, "
    "key=None, show=None): fault specs applied to every queue of the test's harness; start "
    "methods the test runs under; its deadline in seconds; a fixed seed for its "
    "probabilistic faults; instrument the queues, pipes and processes the code under test "
    "makes; the identity (key) and the text shown (show) of the items of the test's queues "
    "(a module-level function item -> str, or a dict {queue name glob: function})"
)

ENV = {
    "start_methods": "MPFAULT_START_METHODS",
    "faults": "MPFAULT",
    "seed": "MPFAULT_SEED",
    "deadline": "MPFAULT_DEADLINE",
    "tmpdir": TMPDIR_ENV,
    "instrument": "MPFAULT_INSTRUMENT",
    "key": "MPFAULT_KEY",
    "show": "MPFAULT_SHOW",
}

DEFAULT_DEADLINE = 60.0
DEFAULT_GRACE = 1.0
DEFAULT_TOLERANCE = 1.0


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one test (or of the session, without a marker)."""

    start_methods: tuple[str, ...]
    faults: tuple[Fault, ...] = ()
    faults_source: str = ""
    deadline: float | None = DEFAULT_DEADLINE
    seed: int | None = None
    grace: float = DEFAULT_GRACE
    timeout_tolerance: float = DEFAULT_TOLERANCE
    tmpdir: str | None = None
    instrument: bool = False
    #: the marker's ``key=`` and ``show=`` (a callable or a dict {glob: callable}), or None
    key: Any = None
    show: Any = None
    sources: dict[str, str] = field(default_factory=dict)


def _usage(msg: str) -> pytest.UsageError:
    return pytest.UsageError(f"mpfault: {msg}")


def _methods(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.replace("\n", ",").split(",")]
    elif isinstance(value, Sequence):
        items = [str(v).strip() for v in value]
    else:
        raise _usage(f"start methods from {where} must be a list or a comma-separated string")
    items = [v for v in items if v]
    have = _all_start_methods()
    if not items:
        raise _usage(f"no start method given in {where}")
    for m in items:
        if m not in have:
            raise _usage(
                f"unknown start method {m!r} from {where} (this platform has: {', '.join(have)})"
            )
    return tuple(dict.fromkeys(items))


def _seconds(value: Any, where: str, what: str, allow_zero_none: bool) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _usage(f"invalid {what} {value!r} from {where} (expected a number of seconds)")
    if x < 0 or x != x:
        raise _usage(f"invalid {what} {value!r} from {where} (expected seconds >= 0)")
    if x == 0 and allow_zero_none:
        return None
    return x


def _seed(value: Any, where: str, config: pytest.Config | None) -> int:
    if isinstance(value, str) and value.strip() == "last":
        cache = getattr(config, "cache", None)
        if cache is None and config is not None:
            raise _usage(
                f"--mpfault-seed=last from {where}: the cache is off (-p no:cacheprovider), "
                "so no seed of a previous run is known; give the seed itself "
                "(the header of that run says it: 'mpfault: seed=N')"
            )
        last = cache.get("mpfault/seed", None) if cache is not None else None
        if last is None:
            raise _usage(f"--mpfault-seed=last from {where}: no previous run recorded a seed")
        return int(last)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _usage(f"invalid seed {value!r} from {where} (expected an integer or 'last')")


def _all_start_methods() -> list[str]:
    """``multiprocessing.get_all_start_methods()``.  Where multiprocessing is not loaded
    yet (a session with no mpfault test), on Linux before 3.14, the same list without
    loading it (~2 ms of every session); tests/test_config.py checks they agree."""
    if (
        "multiprocessing.context" not in sys.modules
        and sys.platform == "linux"
        and sys.version_info < (3, 14)
    ):
        import socket

        methods = ["fork", "spawn"]
        if all(hasattr(x, n) for x, n in ((socket, "CMSG_LEN"), (socket, "SCM_RIGHTS"))) and (
            hasattr(socket.socket, "sendmsg")
        ):  # multiprocessing.reduction.HAVE_SEND_HANDLE
            methods.append("forkserver")
        return methods
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _faults(specs: Sequence[str], where: str) -> tuple[Fault, ...]:
    from ._runtime.errors import FaultSpecError
    from ._runtime.grammar import parse as parse_faults

    out: list[Fault] = []
    for s in specs:
        try:
            out.extend(parse_faults(s, source=where))
        except FaultSpecError as e:
            raise _usage(str(e)) from None
    return tuple(out)


def _formatter_rules(value: Any, where: str) -> None:
    """Check a marker's ``key=``/``show=``: a picklable callable or a dict of them."""
    from ._runtime.errors import MpfaultError
    from ._runtime.itemfmt import check_rules

    try:
        check_rules(value, where)
    except MpfaultError as e:
        raise _usage(str(e)) from None


def _imported_rules(value: Any, where: str) -> Any:
    """A ``key``/``show`` setting given as text (option, ini, env): ``module:function``,
    or ``GLOB=module:function`` entries (comma- or line-separated), imported and checked.
    One entry without a glob is the callable itself; several are ``{glob: callable}``."""
    import importlib

    text = value if isinstance(value, str) else ",".join(value)
    entries = [e.strip() for e in text.replace("\n", ",").split(",") if e.strip()]
    if not entries:
        return None
    rules: dict[str, Any] = {}
    for entry in entries:
        glob, sep, target = entry.rpartition("=")
        glob = glob.strip() if sep else "*"
        target = target.strip()
        mod_name, colon, attr = target.partition(":")
        if not colon or not mod_name or not attr:
            raise _usage(f"{where}: {entry!r} is not 'module:function' or 'GLOB=module:function'")
        try:
            obj: Any = importlib.import_module(mod_name)
        except Exception as e:  # ImportError, or the module's own error
            raise _usage(f"{where}: cannot import {mod_name!r} ({type(e).__name__}: {e})") from None
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise _usage(f"{where}: module {mod_name!r} has no {attr!r}") from None
        if glob in rules:
            raise _usage(f"{where}: the queue name glob {glob!r} is given twice")
        rules[glob] = obj
    out: Any = rules["*"] if list(rules) == ["*"] else rules
    _formatter_rules(out, where)
    return out


def _bool(value: Any, where: str) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (empty: off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise _usage(f"{where} must be 1/true/yes/on or 0/false/no/off, got {value!r}")


def _tmpdir(config: pytest.Config, env: Any) -> str | None:
    """The run files directory: ini < env < option (a relative path in the ini file is
    relative to that file's directory); None: the harness's default."""
    value, where = config.getini("mpfault_tmpdir"), "ini mpfault_tmpdir"
    if value and config.inipath is not None:
        value = os.path.join(config.inipath.parent, os.path.expanduser(str(value)))
    if env.get(ENV["tmpdir"]):
        value, where = env[ENV["tmpdir"]], f"env {ENV['tmpdir']}"
    opt = config.getoption("mpfault_tmpdir", None)
    if opt:
        value, where = opt, "--mpfault-tmpdir"
    if not value:
        return None
    from ._runtime.errors import MpfaultError

    try:
        return check_tmpdir(os.path.expanduser(str(value)), where)
    except MpfaultError as e:
        raise _usage(str(e))


def session_settings(config: pytest.Config) -> Settings:
    """The settings from ini, environment and command line (validated; no marker)."""
    return resolve(config, None, "")


def resolve(config: pytest.Config, marker: pytest.Mark | None, nodeid: str) -> Settings:
    """Resolve every setting with the precedence ini < env < CLI option < marker."""
    sources: dict[str, str] = {}
    env = os.environ
    # start methods
    methods: tuple[str, ...] = tuple(_all_start_methods())
    sources["start_methods"] = "default"
    ini = config.getini("mpfault_start_methods")
    if ini:
        methods = _methods(ini, "ini mpfault_start_methods")
        sources["start_methods"] = "ini"
    if env.get(ENV["start_methods"]):
        methods = _methods(env[ENV["start_methods"]], f"env {ENV['start_methods']}")
        sources["start_methods"] = "env"
    opt = config.getoption("mpfault_start_methods", None)
    if opt:
        methods = _methods(opt, "--mpfault-start-methods")
        sources["start_methods"] = "option"
    # faults: the highest source that is set wins (lists are not merged)
    faults: tuple[Fault, ...] = ()
    fsource = ""
    ini_f = [s for s in config.getini("mpfault_faults") if s.strip()]
    if ini_f:
        faults, fsource = _faults(ini_f, "ini mpfault_faults"), "ini mpfault_faults"
    if env.get(ENV["faults"]):
        faults, fsource = _faults([env[ENV["faults"]]], f"env {ENV['faults']}"), "env MPFAULT"
    opt_f = config.getoption("mpfault_faults", None)
    if opt_f:
        faults, fsource = _faults(opt_f, "--mpfault"), "--mpfault"
    # deadline
    deadline: float | None = DEFAULT_DEADLINE
    ini_d = config.getini("mpfault_deadline")
    if ini_d not in (None, ""):
        deadline = _seconds(ini_d, "ini mpfault_deadline", "deadline", True)
    if env.get(ENV["deadline"]):
        deadline = _seconds(env[ENV["deadline"]], f"env {ENV['deadline']}", "deadline", True)
    opt_d = config.getoption("mpfault_deadline", None)
    if opt_d is not None:
        deadline = _seconds(opt_d, "--mpfault-deadline", "deadline", True)
    # seed (per session; a marker may fix one per test)
    seed: int | None = None
    if env.get(ENV["seed"]):
        seed = _seed(env[ENV["seed"]], f"env {ENV['seed']}", config)
    opt_s = config.getoption("mpfault_seed", None)
    if opt_s is not None:
        seed = _seed(opt_s, "--mpfault-seed", config)
    grace = _seconds(
        config.getini("mpfault_grace") or DEFAULT_GRACE, "ini mpfault_grace", "grace", False
    )
    tol = _seconds(
        config.getini("mpfault_timeout_tolerance") or DEFAULT_TOLERANCE,
        "ini mpfault_timeout_tolerance",
        "timeout tolerance",
        False,
    )
    tmpdir = _tmpdir(config, env)
    # instrumentation
    instrument = _bool(config.getini("mpfault_instrument"), "ini mpfault_instrument")
    if env.get(ENV["instrument"]):
        instrument = _bool(env[ENV["instrument"]], f"env {ENV['instrument']}")
    if config.getoption("mpfault_instrument", None):
        instrument = True
    # key= and show= (the highest source that is set wins; a marker's replaces it)
    formats: dict[str, Any] = {}
    for arg in ("key", "show"):
        ini_v = config.getini(f"mpfault_{arg}")
        if ini_v:
            formats[arg] = _imported_rules(ini_v, f"ini mpfault_{arg}")
        if env.get(ENV[arg]):
            formats[arg] = _imported_rules(env[ENV[arg]], f"env {ENV[arg]}")
        opt_v = config.getoption(f"mpfault_{arg}", None)
        if opt_v:
            formats[arg] = _imported_rules(opt_v, f"--mpfault-{arg}")
    if marker is not None:
        where = f"@pytest.mark.mpfault on {nodeid}" if nodeid else "@pytest.mark.mpfault"
        kw = dict(marker.kwargs)
        unknown = set(kw) - {"start_methods", "deadline", "seed", "instrument", "key", "show"}
        if unknown:
            raise _usage(
                f"unknown argument(s) {', '.join(sorted(unknown))} in {where} "
                "(expected: start_methods, deadline, seed, instrument, key, show)"
            )
        for arg in ("key", "show"):
            if kw.get(arg) is not None:
                _formatter_rules(kw[arg], f"{arg}=... of {where}")
                formats[arg] = kw[arg]
        if "instrument" in kw:
            if not isinstance(kw["instrument"], bool):
                raise _usage(f"{where}: instrument must be True or False, got {kw['instrument']!r}")
            instrument = kw["instrument"]
        if marker.args:
            from ._runtime.model import Fault

            bad = [a for a in marker.args if not isinstance(a, (str, Fault))]
            if bad:
                raise _usage(f"{where}: {bad[0]!r} is not a fault spec string or Fault")
            specs = [a for a in marker.args if isinstance(a, str)]
            objs = [a for a in marker.args if isinstance(a, Fault)]
            faults, fsource = _faults(specs, where) + tuple(objs), where
        if kw.get("start_methods") is not None:
            methods = _methods(kw["start_methods"], where)
            sources["start_methods"] = "marker"
        if "deadline" in kw:
            deadline = (
                None
                if kw["deadline"] is None
                else _seconds(kw["deadline"], where, "deadline", True)
            )
        if kw.get("seed") is not None:
            seed = _seed(kw["seed"], where, None)
    return Settings(
        start_methods=methods,
        faults=faults,
        faults_source=fsource,
        deadline=deadline,
        seed=seed,
        grace=grace if grace is not None else DEFAULT_GRACE,
        timeout_tolerance=tol if tol is not None else DEFAULT_TOLERANCE,
        tmpdir=tmpdir,
        instrument=instrument,
        key=formats.get("key"),
        show=formats.get("show"),
        sources=sources,
    )


def configure(config: pytest.Config) -> tuple[Settings, int]:
    """Resolve the session's settings and seed (stashed on ``config``); a usage error
    naming its source for a bad one."""
    settings = session_settings(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "mpfault_seed" in workerinput:
        seed = int(workerinput["mpfault_seed"])
    elif settings.seed is not None:
        seed = settings.seed
    else:
        import random

        seed = random.randrange(10**9)
    config.stash[SEED_KEY] = seed
    config.stash[SETTINGS_KEY] = settings
    config.stash[_TESTS_KEY] = {}
    cache = getattr(config, "cache", None)
    if cache is not None and workerinput is None:
        cache.set("mpfault/seed", seed)
    if settings.timeout_tolerance != DEFAULT_TOLERANCE or "mpfault._timing" in sys.modules:
        from ._timing import set_default_tolerance

        set_default_tolerance(settings.timeout_tolerance)
    return settings, seed


def header(settings: Settings, seed: int) -> list[str]:
    """The lines of the session's report header."""
    import tempfile

    faults = "; ".join(str(f) for f in settings.faults) or "none"
    return [
        f"mpfault: seed={seed}, start methods {', '.join(settings.start_methods)}, "
        f"faults: {faults}",
        f"mpfault: replay with --mpfault-seed={seed}",
        f"mpfault: run files in {settings.tmpdir or tempfile.gettempdir()}",
        *(
            ["mpfault: instrumenting every test (queues, pipes, processes)"]
            if settings.instrument
            else []
        ),
    ]


def _for(config: pytest.Config, key: str, marker: pytest.Mark | None, nodeid: str) -> Settings:
    tests = config.stash.setdefault(_TESTS_KEY, {})
    known = tests.get(key)
    if known is not None and known[0] == marker:
        return known[1]
    settings = resolve(config, marker, nodeid)
    tests[key] = (marker, settings)
    return settings


def for_definition(definition: pytest.Item) -> Settings:
    """The settings of a test function (its marker applied), resolved once."""
    marker = definition.get_closest_marker("mpfault")
    return _for(definition.config, definition.nodeid, marker, definition.nodeid)


def for_item(item: pytest.Item) -> tuple[Settings, int, float | None]:
    """The settings of a test, its seed (the run's, or the marker's fixed one, derived
    with the node id) and its pytest-timeout timeout, if any."""
    from ._runtime.state import derive_seed

    marker = item.get_closest_marker("mpfault")
    parent = item.parent.nodeid if item.parent is not None else ""
    name = getattr(item, "originalname", item.name)
    settings = _for(item.config, f"{parent}::{name}", marker, item.nodeid)
    fixed = marker is not None and marker.kwargs.get("seed") is not None
    base = settings.seed if fixed and settings.seed is not None else item.config.stash[SEED_KEY]
    timeout = item.stash.get(TIMEOUT_KEY, None)
    return settings, derive_seed(base, item.nodeid), None if timeout is None else timeout[0]
