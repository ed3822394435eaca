"""The layout of the event logs: the one definition the writer (:mod:`.events`), the
reader (:mod:`.reader`) and, checked by the tests, the C recorder (``_fastrec.c``)
follow.

A log file starts with a header area of :data:`HEADER_SIZE` bytes: :data:`MAGIC`, a
u32 length, then that many bytes of JSON (``{"pid": ..., "process": ...}``).  The
records follow, each a fixed part (:data:`FIELDS`, little endian) and then three
UTF-8 strings: the queue's name (``qlen`` bytes), ``a`` (``alen``) and ``b``
(``blen``).  A record is published by its ``length`` (the whole record), written
last: a reader stops at a zero length.

For BEGIN, ``a`` is the item's short repr and ``b`` its identity key; for END, ``a``
is the returned item's short repr, ``b`` its key or the exception's type name.  For
MARK, ``op`` is a mark kind, ``a`` its detail.  ``flags`` say that ``b`` is stored
short, to be rebuilt by the reader: :data:`KEY_INT`, ``b`` is empty and the key is
``"int:" + a``; :data:`KEY_TAIL`, ``a`` is the short repr of a long str or bytes and
``b`` holds only its last 32 characters.

Standard library only (every recording process imports it).
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "FIELDS",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "NAMES",
    "OFFSETS",
    "RECORD",
    "SIZE",
    "codes",
    "pack",
]

MAGIC: Final = b"MPFEV001"
#: the header's start: MAGIC, then the length of the JSON that follows
HEADER: Final = struct.Struct(f"<{len(MAGIC)}sI")
#: bytes reserved for the header; the first record starts here
HEADER_SIZE: Final = 512

#: The fixed part of a record: (field, struct code), in order.
FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("length", "I"),  # the whole record's bytes; written last (0: no record yet)
    ("kind", "B"),  # KIND_BEGIN, KIND_END, KIND_MARK
    ("op", "B"),  # the operation's code (events.OPS), or the mark's (events.MARKS)
    ("outcome", "B"),  # OUT_PENDING, OUT_OK, OUT_RAISED
    ("flags", "B"),  # KEY_INT, KEY_TAIL: how the reader rebuilds b
    ("fault", "h"),  # the plan index of the fault that fired, or -1
    ("qlen", "H"),  # bytes of the queue's name
    ("alen", "H"),  # bytes of a
    ("blen", "H"),  # bytes of b
    ("pad", "2x"),
    ("time_ns", "q"),  # time.monotonic_ns()
    ("seq", "I"),  # the operation's number in its process (BEGIN and END share it)
)
#: every field but the padding, in order: what RECORD packs and unpacks
NAMES: Final = tuple(name for name, code in FIELDS if not code.endswith("x"))
RECORD: Final = struct.Struct("<" + "".join(code for _, code in FIELDS))
#: bytes of the fixed part
SIZE: Final = RECORD.size
#: where each field starts in a record
OFFSETS: Final[dict[str, int]] = {
    name: struct.calcsize("<" + "".join(code for _, code in FIELDS[:i]))
    for i, (name, _) in enumerate(FIELDS)
}


KIND_BEGIN: Final = 1
KIND_END: Final = 2
KIND_MARK: Final = 3

OUTCOMES: Final[tuple[str, ...]] = ("pending", "ok", "raised")
OUT_PENDING: Final = 0
OUT_OK: Final = 1
OUT_RAISED: Final = 2

KEY_INT: Final = 1
KEY_TAIL: Final = 2


def pack(**fields: int) -> bytes:
    """A record's fixed part from its fields by name (those not given: 0)."""
    unknown = fields.keys() - set(NAMES)
    if unknown:
        raise TypeError(f"not fields of a record: {sorted(unknown)}")
    return RECORD.pack(*[fields.get(name, 0) for name in NAMES])


def codes(first: str, last: str) -> str:
    """The struct codes of the fields from ``first`` to ``last`` (inclusive)."""
    names = [name for name, _ in FIELDS]
    return "".join(code for _, code in FIELDS[names.index(first) : names.index(last) + 1])
