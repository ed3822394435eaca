"""A queue provider for faster-fifo (``pip install faster-fifo``).

Run the contract against it with::

    python -m mpfault check --queue faster_fifo_provider:FasterFifo

from this directory.  A provider is needed because faster-fifo's ``Queue`` differs from
CPython's in its constructor: its first argument is a buffer size in *bytes*
(``max_size_bytes``, default 1 MB), and ``maxsize`` (messages, default 10**9) of 0 means
a queue that holds nothing, not "no limit" (see ``faster_fifo_maxsize_zero.py``).  The
provider says what CPython's maxsize means in faster-fifo's terms: capacity in messages,
0 or less for the library's default (no practical limit), and a 64 MiB buffer so that
the contract's large items fit.
"""

from __future__ import annotations

from typing import Any

from mpfault._contract.provider import QueueProvider

BUFFER = 64 * 1024 * 1024


class FasterFifo(QueueProvider):
    """faster_fifo.Queue, made to CPython's maxsize semantics."""

    name = "faster_fifo.Queue"
    kind = "Q"
    unbounded = (0, -1)
    kind_reason = "declared by the provider"

    def create(self, ctx: Any, maxsize: int) -> Any:
        """``Queue(max_size_bytes=64 MiB[, maxsize=maxsize])``; maxsize <= 0: default."""
        import faster_fifo

        if maxsize <= 0:
            return faster_fifo.Queue(max_size_bytes=BUFFER)
        return faster_fifo.Queue(max_size_bytes=BUFFER, maxsize=maxsize)

    def describe(self) -> dict[str, Any]:
        """As QueueProvider.describe, with faster-fifo's own package and version."""
        from importlib import metadata

        return {
            **super().describe(),
            "package": "faster-fifo",
            "version": metadata.version("faster-fifo"),
        }
