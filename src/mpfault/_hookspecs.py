"""pytest-mpfault's own hooks.

Implement them in a conftest.py or a plugin.  They are only called when
pytest-mpfault is installed and active, so a plugin that implements them should
register its implementation only when ``config.pluginmanager.hasplugin("mpfault")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from ._harness import Harness


def pytest_mpfault_harness_created(harness: Harness, item: pytest.Item) -> None:
    """Called when the ``mpfault`` fixture has made the harness of ``item``.

    .. versionadded:: 0.1
    """


def pytest_mpfault_report_sections(
    harness: Harness, item: pytest.Item, report: pytest.TestReport
) -> list[tuple[str, str]] | None:
    """Return extra ``(title, text)`` sections for the report of a failing test.

    .. versionadded:: 0.1
    """
