"""The recorder's hot path in C (see _fastrec.c)."""

from collections.abc import Callable
from typing import Any

RECORD_SIZE: int
#: the offsets and constants of the record layout it writes (see layout.py)
LAYOUT: dict[str, int]

def set_pdeathsig(sig: int, /) -> None: ...

class Log:
    """An append-only event log mapped from a file descriptor."""

    seq: int
    def __init__(self, fd: int, size: int, pos: int, path: str | None = None) -> None: ...
    def write(self, record: bytes, /) -> None: ...
    def next_seq(self) -> int: ...
    def close(self) -> None: ...
    def wrap(
        self,
        queue: bytes,
        op: int,
        call: Callable[..., Any],
        has_item: bool,
        current: Callable[[], Callable[..., Any]],
        end_raised: Callable[[int, BaseException], None],
        fields: Callable[[object], tuple[bytes, int, int, int]],
        slow: Callable[..., Any],
    ) -> Callable[..., Any]: ...

class Op:
    """A queue operation that records its BEGIN and END events."""

    __wrapped__: Callable[..., Any]
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

def fast_payload(obj: object, /) -> tuple[bytes, int, int, int] | None: ...

class Trampoline:
    """A queue operation that hands its calls to ``current()``."""

    def __init__(self, current: Callable[[], Callable[..., Any]]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

class Method:
    """An instrumented class's operation (instrument.py): a descriptor whose calls go to
    the instance's shadow while a session is installed, else to ``orig``."""

    __wrapped__: Callable[..., Any]
    def __init__(
        self, orig: Callable[..., Any], op: str, as_op: str | None = None, conn: bool = False
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

def set_session(session: object, on_idle: Callable[[], None], /) -> None: ...
def set_pending(flag: bool, /) -> None: ...
def inflight() -> int: ...
