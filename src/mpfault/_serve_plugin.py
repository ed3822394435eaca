"""pytest integration of served queues and programs (registered by :mod:`mpfault.plugin`
as ``mpfault-serve``).

Each program's stdout and stderr become report sections of their own
(``Captured stdout (mpfault program producer) call``), and a failing test's report
gets an ``mpfault served`` section (:func:`mpfault._serve.describe`).  Costs nothing
for a test that serves no queue and starts no program.
"""

from __future__ import annotations

from typing import Any

import pytest

from ._config import HARNESS_KEY

_SHOWN = pytest.StashKey[dict[str, tuple[int, int]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Add what each program wrote since the last phase as report sections."""
    harness = item.stash.get(HARNESS_KEY, None)
    # (the attribute _serve keeps on a harness that served or started something: a test
    # that did neither loads nothing of it)
    st = None if harness is None else vars(harness).get("_serve_state")
    if st is not None:
        shown = item.stash.setdefault(_SHOWN, {})
        live = not harness.closed  # type: ignore[union-attr]
        outputs = {p.name: p.output() for p in st.programs} if live else st.outputs
        for name, (out, err) in outputs.items():
            o, e = shown.get(name, (0, 0))
            if len(out) > o:
                item.add_report_section(call.when, f"stdout (mpfault program {name})", out[o:])
            if len(err) > e:
                item.add_report_section(call.when, f"stderr (mpfault program {name})", err[e:])
            shown[name] = (max(o, len(out)), max(e, len(err)))
    return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_mpfault_report_sections(
    harness: Any, item: pytest.Item, report: pytest.TestReport
) -> list[tuple[str, str]] | None:
    """The ``mpfault served`` section of a failing test that served queues or programs."""
    if vars(harness).get("_serve_state") is None:
        return None
    from ._serve import describe

    try:
        text = describe(harness)
    except Exception as e:  # the report must never hide the real failure
        text = f"(unavailable: {type(e).__name__}: {e})"
    return [("mpfault served", text)] if text else None
