"""The package's errors: defined in :mod:`mpfault._runtime.errors` (stdlib only, so that
the child runtime raises them too); this module is their old import path."""

from __future__ import annotations

from ._runtime.errors import *  # noqa: F403
from ._runtime.errors import __all__ as __all__
