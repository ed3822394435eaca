"""The recorder's fast path in Python: what ``_fastrec``'s ``Op`` does in C, for
installs without the C module (and for the calls the C operation hands on).

Loaded by :meth:`events.Recorder.wrap` when it first needs it: a child that records
through the C module never compiles it.  Standard library only.
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from .events import INT_DIGITS, INT_LIMIT, item_payload, utf8
from .layout import (
    KEY_INT,
    KEY_TAIL,
    KIND_BEGIN,
    KIND_END,
    OFFSETS,
    OUT_OK,
    OUT_PENDING,
    OUT_RAISED,
    SIZE,
    codes,
)
from .layout import pack as _pack_rec

__all__ = ["wrap"]

_now = time.monotonic_ns
#: (time, seq) end a record's fixed part: where they start, their codes and size
_STAMP = codes("time_ns", "seq")
_TS_AT = OFFSETS["time_ns"]
_TS_END = _TS_AT + struct.calcsize("<" + _STAMP)
#: the fields from kind to qlen, constant for an operation (bar flags): where they are
_CONST_AT, _CONST_END = OFFSETS["kind"], OFFSETS["alen"]


def wrap(
    queue: str,
    op: int,
    call: Callable[..., Any],
    has_item: bool,
    generation_of: Any,
    generation: int,
    current: Callable[[], Callable[..., Any]],
    *,
    write: Callable[[bytes], object],
    slow_write: Callable[[bytes], None],
    seqs: Iterator[int],
    end: Callable[..., None],
) -> Callable[..., Any]:
    """``Recorder.wrap`` in Python: ``write`` appends a record (ValueError when the
    mapping is full: then ``slow_write``), ``seqs`` numbers the operations, ``end``
    records an END the slow way.

    The records are those of ``begin``/``end`` (BEGIN with the item given,
    for an operation that takes one (``has_item``: its first argument);
    END with the item returned, for one that does not; an exception's type
    name).  This is FaultQueue's fast path, with the queue's name and the
    constant fields encoded once, here, and the records built inline.

    The wrapper belongs to this process's recorder: once
    ``generation_of.fork_generation`` differs from ``generation`` (a forked
    child), it hands every call to ``current()``.
    """
    qb = utf8(queue)
    lq = len(qb)
    base = SIZE + lq
    fast_write = write  # raises ValueError when full: slow_write
    now = _now
    fields = item_payload
    raised = OUT_RAISED
    # A record with no item: all known now but (time, seq); one struct packs
    # it whole, with the bytes around (time, seq) as constants.
    pack_bare = struct.Struct(f"<{_TS_AT}s{_STAMP}{lq}s").pack

    def bare(kind: int, outcome: int) -> tuple[bytes, bytes]:
        rec = _pack_rec(length=base, kind=kind, op=op, outcome=outcome, fault=-1, qlen=lq)
        rec += qb
        return rec[:_TS_AT], rec[_TS_END:]

    # A record with an item: its fixed part and the queue's name, then the
    # item's fields.
    pack_item = struct.Struct(
        f"<{codes('length', 'length')}{_CONST_END - _CONST_AT}s{codes('alen', 'seq')}{lq}s"
    ).pack

    # An int's field is "<digits>" (its key "int:<digits>" is rebuilt by the
    # reader): for each number of digits, all but (time, seq) and the digits is
    # known now.
    def int_packers(kind: int, outcome: int) -> list[Callable[..., bytes]]:
        out: list[Callable[..., bytes]] = []
        for la in range(INT_DIGITS):
            head = _pack_rec(
                length=base + la,
                kind=kind,
                op=op,
                outcome=outcome,
                flags=KEY_INT,
                fault=-1,
                qlen=lq,
                alen=la,
            )
            pack = struct.Struct(f"<{_TS_AT}s{_STAMP}{lq}s{la}s").pack
            out.append(functools.partial(pack, head[:_TS_AT]))
        return out

    def consts(kind: int, outcome: int) -> tuple[bytes, ...]:
        """The record's bytes from kind to qlen, for each value of flags."""
        return tuple(
            _pack_rec(kind=kind, op=op, outcome=outcome, flags=f, fault=-1, qlen=lq)[
                _CONST_AT:_CONST_END
            ]
            for f in range(KEY_TAIL + 1)
        )

    if has_item:
        begin_const = consts(KIND_BEGIN, OUT_PENDING)
        begin_int = int_packers(KIND_BEGIN, OUT_PENDING)
        end_pre, end_post = bare(KIND_END, OUT_OK)

        def put(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if generation_of.fork_generation != generation:
                return current()(obj, *args, **kwargs)
            if (
                type(obj) is int
                and -INT_LIMIT < obj < INT_LIMIT
                and (la := len(ab := b"%d" % obj)) < INT_DIGITS
            ):
                seq = next(seqs)
                data = begin_int[la](now(), seq, qb, ab)
            else:
                payload, la, lb, flags = fields(obj)
                seq = next(seqs)
                data = (
                    pack_item(base + la + lb, begin_const[flags], la, lb, now(), seq, qb) + payload
                )
            try:
                fast_write(data)
            except ValueError:
                slow_write(data)
            try:
                res = call(obj, *args, **kwargs) if args or kwargs else call(obj)
            except BaseException as e:
                end(seq, queue, op, raised, -1, "", type(e).__name__)
                raise
            data = pack_bare(end_pre, now(), seq, end_post)
            try:
                fast_write(data)
            except ValueError:
                slow_write(data)
            return res

        return put

    begin_pre, begin_post = bare(KIND_BEGIN, OUT_PENDING)
    end_const = consts(KIND_END, OUT_OK)
    end_int = int_packers(KIND_END, OUT_OK)

    def get(*args: Any, **kwargs: Any) -> Any:
        if generation_of.fork_generation != generation:
            return current()(*args, **kwargs)
        seq = next(seqs)
        data = pack_bare(begin_pre, now(), seq, begin_post)
        try:
            fast_write(data)
        except ValueError:
            slow_write(data)
        try:
            res = call(*args, **kwargs) if args or kwargs else call()
        except BaseException as e:
            end(seq, queue, op, raised, -1, "", type(e).__name__)
            raise
        if (
            type(res) is int
            and -INT_LIMIT < res < INT_LIMIT
            and (la := len(ab := b"%d" % res)) < INT_DIGITS
        ):
            data = end_int[la](now(), seq, qb, ab)
        else:
            payload, la, lb, flags = fields(res)
            data = pack_item(base + la + lb, end_const[flags], la, lb, now(), seq, qb) + payload
        try:
            fast_write(data)
        except ValueError:
            slow_write(data)
        return res

    return get
