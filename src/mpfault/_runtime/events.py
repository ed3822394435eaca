"""The event history: an append-only log per process, and its reader.

Every operation on a harness queue, in every process of a test, is recorded by the
process that performs it, in a file of its own under the run directory
(``<run_dir>/events/<pid>.ev``).  The file is memory-mapped, so a record costs one
``mmap.write`` (a copy into the mapping, ~0.25 µs) and survives the process being
SIGKILLed right after: the kernel owns the pages.

An operation writes two records: ``BEGIN`` when it is invoked (with the item put,
if any) and ``END`` when it returns or raises (with the item got, the exception,
the fault that fired).  An operation with no ``END`` was in flight when its process
died or when the history was read (Jepsen's ``:info``).  ``MARK`` records note
process-level events: a fault that killed, paused or gated the process, a
queue's plan.

The layout of the files and records is :mod:`.layout`.
"""

from __future__ import annotations

import errno
import functools
import itertools
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .layout import (
    HEADER,
    HEADER_SIZE,
    KEY_INT,
    KEY_TAIL,
    KIND_BEGIN,
    KIND_END,
    KIND_MARK,
    MAGIC,
    OUT_OK,
    OUT_PENDING,
    OUT_RAISED,
    OUTCOMES,
)
from .layout import SIZE as _REC_SIZE
from .layout import pack as _pack_rec

__all__ = [
    "HEADER_SIZE",
    "INT_DIGITS",
    "INT_LIMIT",
    "KEY_INT",
    "KEY_TAIL",
    "KIND_BEGIN",
    "KIND_END",
    "KIND_MARK",
    "MAGIC",
    "OPS",
    "OUTCOMES",
    "OUT_OK",
    "OUT_PENDING",
    "OUT_RAISED",
    "Recorder",
    "full_key",
    "item_key",
    "item_payload",
    "short_repr",
    "utf8",
]

_INITIAL_SIZE = 1 << 20

#: Queue operations, by code.  Index 0 is unused.
OPS: tuple[str, ...] = (
    "",
    "put",
    "put_nowait",
    "get",
    "get_nowait",
    "qsize",
    "empty",
    "full",
    "close",
    "join_thread",
    "cancel_join_thread",
    "task_done",
    "join",
    # multiprocessing.connection.Connection operations (instrumentation)
    "send",
    "recv",
    "send_bytes",
    "recv_bytes",
    "poll",
)
OP_CODES: dict[str, int] = {name: i for i, name in enumerate(OPS) if name}

#: Mark kinds, by code.
MARKS: tuple[str, ...] = (
    "",
    "plan",  # a queue's fault plan (detail: JSON list of fault specs)
    "fault",  # a fault fired (detail: what it did)
    "kill",  # the process is about to kill itself (detail: signal name)
    "exit",  # the process is about to os._exit (detail: code)
    "pause",  # the process stops itself (detail: seconds)
    "resume",  # the process resumed after a pause
    "gate-wait",  # the process reached a gate and waits (detail: gate name)
    "gate-pass",  # the gate was released
    "start",  # a child process started its target (detail: target name)
    "return",  # the child's target returned
    "raise",  # the child's target raised (detail: exception type)
    "release",  # the test process released a gate (detail: gate, and who if one process)
    "connect",  # a served queue's client connected (detail: its address)
    "refused",  # a served queue refused a client (detail: why, and its address)
    "net",  # a network fault started or ended on a client's connection (detail: what)
    "note",  # a queue's key()/show() failed on an item: default formatting used (detail: how)
)
MARK_CODES: dict[str, int] = {name: i for i, name in enumerate(MARKS) if name}


_SIMPLE = (int, float, bool, type(None))
_MAX = 40
_MAXB = 65535  # the longest string field of a record, in bytes


def _repr_simple(obj: Any) -> str:
    """repr() of an int/float/bool/None; ints too long for ``repr`` (the int-to-str
    digit limit) are described by their size and a hash of their bytes."""
    try:
        return repr(obj)
    except ValueError:
        n = obj.bit_length()
        import zlib

        digest = zlib.crc32(obj.to_bytes((n + 8) // 8, "little", signed=True))
        return f"<int of {n} bits, crc32 {digest:08x}>"


def _short_str(s: Any) -> str:
    """``short_repr`` of a str or bytes object."""
    if len(s) <= _MAX:
        return repr(s)
    return f"{s[:_MAX]!r}…({len(s)})"


def _key_str(s: Any, t: type) -> str:
    """``item_key`` of a str or bytes object."""
    if len(s) <= 64:
        return f"{t.__name__}:{s!r}"
    return f"{t.__name__}:{len(s)}:{s[:32]!r}:{s[-32:]!r}"


def short_repr(obj: object) -> str:
    """Return a short, cheap repr of ``obj`` for the history (at most ~60 chars)."""
    t = type(obj)
    if t in _SIMPLE:
        return _repr_simple(obj)
    if t is str or t is bytes:
        return _short_str(obj)
    try:
        r = repr(obj)
    except Exception as e:  # a broken __repr__ must not break the queue
        return f"<{t.__name__} repr failed: {type(e).__name__}>"
    if len(r) > 60:
        r = r[:57] + "..."
    return r


_ADDR = " at 0x"


def _no_addresses(r: str) -> str:
    """``r`` without the memory addresses reprs show (``<function f at 0x7f...>``:
    ``<function f>``), which differ between processes for the same item."""
    import re

    return re.sub(r" at 0x[0-9a-fA-F]+", "", r)


def item_key(obj: object) -> str:
    """Return the identity key used to match an item put with the item got.

    Equal items have equal keys in every process (no per-process hash
    randomisation, no memory addresses: ``<function f at 0x7f...>`` is keyed as
    ``<function f>``).  Long strings and bytes are keyed by length, head and tail.
    """
    t = type(obj)
    if t in _SIMPLE:
        return f"{t.__name__}:{_repr_simple(obj)}"
    if t is str or t is bytes:
        return _key_str(obj, t)
    try:
        r = repr(obj)
    except Exception:
        return f"{t.__name__}:id"
    if _ADDR in r:
        r = _no_addresses(r)
    if len(r) > 200:
        r = f"{len(r)}:{r[:96]}:{r[-96:]}"
    return f"{t.__name__}:{r}"


def utf8(s: str) -> bytes:
    b = s.encode("utf-8", "replace")
    return b if len(b) <= _MAXB else b[:_MAXB]


#: maps the bytes that ``repr(bytes)`` shows as they are (printable ASCII but ``'``
#: and ``\``) to ``a``, the others to ``0``: ``b.translate(_PLAIN).isalpha()``
_PLAIN = bytes(0x61 if 0x20 <= c < 0x7F and c not in (0x27, 0x5C) else 0x30 for c in range(256))


def _plain(s: str) -> bool:
    """Whether ``repr(s) == "'" + s + "'"``."""
    return s.isprintable() and "'" not in s and "\\" not in s


def _item_fields(obj: object) -> tuple[bytes, bytes]:
    """``short_repr(obj)`` and ``item_key(obj)``, encoded as in a record.

    The same bytes as encoding the two strings, computed with one ``repr`` at
    most (the hot path of every put and get): the head and tail of a long str or
    bytes whose repr is the text itself between quotes are copied, not repr'd.
    """
    t = type(obj)
    if t is int:
        r = _repr_simple(obj).encode()  # ASCII
        if len(r) <= 60000:
            return r, b"int:" + r
        return r[:_MAXB], (b"int:" + r)[:_MAXB]
    if t is bytes:
        b: bytes = obj  # type: ignore[assignment]
        n = len(b)
        if n <= _MAX:
            r = repr(b).encode()
            return r, b"bytes:" + r
        head = b[:_MAX]
        tail = b[-32:]
        if (head.isalnum() or head.translate(_PLAIN).isalpha()) and (
            tail.isalnum() or tail.translate(_PLAIN).isalpha()
        ):
            btext = b"b'%s'\xe2\x80\xa6(%d)" % (head, n)
            if n <= 64:
                return btext, b"bytes:b'%s'" % b
            return btext, b"bytes:%d:b'%s':b'%s'" % (n, head[:32], tail)
        return utf8(_short_str(b)), utf8(_key_str(b, t))
    if t is str:
        s: str = obj  # type: ignore[assignment]
        n = len(s)
        if n <= _MAX:
            r = repr(s).encode("utf-8", "replace")  # at most a few hundred bytes
            return r, b"str:" + r
        shead = s[:_MAX]
        stail = s[-32:]
        if _plain(shead) and _plain(stail):
            text = f"'{shead}'…({n})".encode()
            if n <= 64:
                return text, f"str:'{s}'".encode()
            return text, f"str:{n}:'{shead[:32]}':'{stail}'".encode()
        return utf8(_short_str(s)), utf8(_key_str(s, t))
    if t in _SIMPLE:
        r = _repr_simple(obj).encode()
        return r, t.__name__.encode() + b":" + r
    try:
        r_ = repr(obj)
    except Exception as e:  # a broken __repr__ must not break the queue
        return (
            utf8(f"<{t.__name__} repr failed: {type(e).__name__}>"),
            utf8(f"{t.__name__}:id"),
        )
    short = r_ if len(r_) <= 60 else r_[:57] + "..."
    if _ADDR in r_:
        r_ = _no_addresses(r_)
    key = r_ if len(r_) <= 200 else f"{len(r_)}:{r_[:96]}:{r_[-96:]}"
    return utf8(short), utf8(f"{t.__name__}:{key}")


def item_payload(obj: object) -> tuple[bytes, int, int, int]:
    """``_item_fields(obj)`` joined, the length of each field as stored, and the
    record flags: the key is stored short where the reader can rebuild it.

    An int's key is ``int:`` and its repr (``KEY_INT``: only the repr is stored).  A
    long str or bytes whose head and tail show as they are in a repr (printable
    ASCII), the common case of a big item, has its short repr formatted in one go
    and, for a key, only its tail stored (``KEY_TAIL``).
    """
    t = type(obj)
    if t is int:
        r = _repr_simple(obj).encode()  # ASCII
        if len(r) <= 60000:
            return r, len(r), 0, KEY_INT
    elif t is bytes:
        b: bytes = obj  # type: ignore[assignment]
        n = len(b)
        if n > 64:
            head = b[:_MAX]
            tail = b[-32:]
            if (head.isalnum() or head.translate(_PLAIN).isalpha()) and (
                tail.isalnum() or tail.translate(_PLAIN).isalpha()
            ):
                p = b"b'%s'\xe2\x80\xa6(%d)%s" % (head, n, tail)
                return p, len(p) - 32, 32, KEY_TAIL
    elif t is str:
        s: str = obj  # type: ignore[assignment]
        n = len(s)
        if n > 64:
            shead = s[:_MAX]
            stail = s[-32:]
            if shead.isascii() and stail.isascii() and _plain(shead) and _plain(stail):
                p = f"'{shead}'\u2026({n}){stail}".encode()
                return p, len(p) - 32, 32, KEY_TAIL
    ab, bb = _item_fields(obj)
    return ab + bb, len(ab), len(bb), 0


def full_key(flags: int, a: str, b: str) -> str:
    """The key of a record whose ``flags`` say it is stored short (the reader's side
    of ``item_payload``)."""
    if flags & KEY_INT:
        return "int:" + a
    if flags & KEY_TAIL:  # a = "b'<head>'…(<n>)" or "'<head>'…(<n>)"; b = the tail
        prefix = "b" if a.startswith("b") else ""
        head = a[len(prefix) + 1 : len(prefix) + 1 + _MAX]
        n = a[a.rindex("(") + 1 : -1]
        tname = "bytes" if prefix else "str"
        return f"{tname}:{n}:{prefix}'{head[:32]}':{prefix}'{b}'"
    return b


_now = time.monotonic_ns
#: ints with fewer digits (and sign) than this have a packer of their own
INT_DIGITS = 21
#: ints within these bounds are formatted inline (and never hit the digit limit)
INT_LIMIT = 10 ** (INT_DIGITS - 1)
#: Without a GIL (free-threaded builds), ``next()`` on a counter and ``mmap.write``
#: are not atomic: the recorder then takes its lock for them.
_GIL = bool(getattr(sys, "_is_gil_enabled", lambda: True)())
#: Where a mapping grows in place (``mmap.resize``: mremap(2), Linux), records are
#: appended without the lock; elsewhere growing means a new mapping, and every
#: append takes the lock.
_RESIZABLE = sys.platform.startswith("linux")


#: Set (to anything but "" or "0") to record in Python even where the C module is built.
PURE_ENV = "MPFAULT_PURE_PYTHON"


def _load_fastrec() -> Any:
    """The C recorder (``_fastrec``), or None: not built (no compiler when the package
    was installed), a free-threaded build, or ``MPFAULT_PURE_PYTHON`` set."""
    if os.environ.get(PURE_ENV, "") not in ("", "0") or not (_GIL and _RESIZABLE):
        return None
    try:
        from . import _fastrec as mod
    except ImportError:
        return None
    return mod


_fastrec = _load_fastrec()


def _json_str(s: str) -> str:
    """``json.dumps(s)`` (without importing json: a recording process needs only this)."""
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch < " " or ch > "\x7e":
            out.extend(f"\\u{u:04x}" for u in _utf16(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16(ch: str) -> tuple[int, ...]:
    """The UTF-16 code units of one character (a surrogate pair above U+FFFF)."""
    c = ord(ch)
    if c < 0x10000:
        return (c,)
    c -= 0x10000
    return (0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF))


def _header(pid: int, process: str) -> bytes:
    """A log file's JSON header."""
    return f'{{"pid": {pid}, "process": {_json_str(process)}}}'.encode()


def _reserve(fd: int, offset: int, length: int, path: str) -> None:
    """Extend the log file ``path`` to ``offset + length`` bytes, with the disk space
    allocated: a full disk is then an ``OSError`` naming the file here, not a SIGBUS
    at a write into the mapping later (the C module does the same when it grows a
    log)."""
    try:
        try:
            os.posix_fallocate(fd, offset, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, offset + length)  # a file system without fallocate
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


class Recorder:
    """Append-only, memory-mapped event log of one process.

    Created lazily, once per process and run directory, by the runtime.

    Thread-safe.  A record is built in full, then appended with one
    ``mmap.write`` call: one copy at the mapping's position, which the call then
    advances; under the GIL nothing else runs in between, so the call is the
    reservation, the copy and the publication at once (without a GIL, or where
    a mapping cannot grow in place, the recorder's lock is taken around it).
    The record is in the kernel's page cache when the call returns, so it
    survives the process being killed.
    """

    def __init__(
        self, directory: str, process: str, pid: int | None = None, filename: str | None = None
    ) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.process = process
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, filename or f"{self.pid}.ev")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _reserve(self._fd, 0, _INITIAL_SIZE, self.path)
        except OSError:
            os.close(self._fd)
            raise
        header = _header(self.pid, process)
        if len(header) > HEADER_SIZE - HEADER.size:
            header = _header(self.pid, process[:200])
        os.pwrite(self._fd, HEADER.pack(MAGIC, len(header)) + header, 0)
        self._lock = threading.Lock()
        #: the log in C (``_fastrec``), or None: the mapping below, in Python
        self._log: Any = None
        self._mm: mmap.mmap | None = None
        self._seqs = itertools.count(1)
        self._next_seq: Callable[[], int]
        #: appends a record; raises ValueError when the mapping is full (or closed)
        self._fast_write: Callable[[bytes], object]
        #: where sequence numbers come from: ``next(self._seq_iter)``
        self._seq_iter: Iterator[int]
        if _fastrec is not None:
            self._log = log = _fastrec.Log(self._fd, _INITIAL_SIZE, HEADER_SIZE, self.path)
            self._next_seq = log.next_seq
            self._seq_iter = iter(log.next_seq, None)
            self._fast_write = log.write
            return
        self._mm = mm = mmap.mmap(self._fd, _INITIAL_SIZE)
        mm.seek(HEADER_SIZE)
        if _GIL:
            self._next_seq = self._seqs.__next__
            self._seq_iter = self._seqs
        else:  # pragma: no cover - free-threaded builds only
            self._next_seq = self._next_seq_locked
            self._seq_iter = iter(self._next_seq_locked, None)
        if _GIL and _RESIZABLE:
            self._fast_write = mm.write
        else:  # pragma: no cover - free-threaded builds, or no mremap()
            self._fast_write = self._slow_write

    @property
    def accelerated(self) -> bool:
        """Whether the records are written by the C module (``_fastrec``)."""
        return self._log is not None

    @property
    def seq(self) -> int:
        """The sequence number of the last operation begun (0: none yet)."""
        if self._log is not None:
            return int(self._log.seq)
        return int(repr(self._seqs)[6:-1]) - 1  # "count(N)": N is the next one

    # -- appending ----------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        """Append one record (built in full)."""
        try:
            self._fast_write(data)
        except ValueError:
            self._slow_write(data)

    def _slow_write(self, data: bytes) -> None:
        """Append under the lock, growing the mapping first if needed."""
        if self._log is not None:
            self._log.write(data)  # grows as needed; closed: ValueError
            return
        with self._lock:
            self._grow(len(data))
            assert self._mm is not None
            self._mm.write(data)  # closed: ValueError

    def _next_seq_locked(self) -> int:  # pragma: no cover - free-threaded
        with self._lock:
            return next(self._seqs)

    def _grow(self, need: int) -> None:
        """Make room for ``need`` more bytes (the caller holds the lock)."""
        mm = self._mm
        assert mm is not None
        size = mm.size()
        new = size
        while new - mm.tell() < need + 4:
            new *= 2
        if new == size:
            return
        _reserve(self._fd, size, new - size, self.path)
        if _RESIZABLE:
            mm.resize(new)  # extends the file too; keeps the position
        else:  # pragma: no cover - every append holds the lock (see __init__)
            pos = mm.tell()
            os.ftruncate(self._fd, new)
            mm.close()
            self._mm = mm = mmap.mmap(self._fd, new)
            mm.seek(pos)

    def _append(
        self, kind: int, op: int, outcome: int, fault: int, queue: str, a: str, b: str, seq: int
    ) -> None:
        qb = utf8(queue)
        ab = utf8(a)
        bb = utf8(b)
        length = _REC_SIZE + len(qb) + len(ab) + len(bb)
        self._write(
            _pack_rec(
                length=length,
                kind=kind,
                op=op,
                outcome=outcome,
                fault=fault,
                qlen=len(qb),
                alen=len(ab),
                blen=len(bb),
                time_ns=_now(),
                seq=seq,
            )
            + qb
            + ab
            + bb
        )

    def begin(self, queue: str, op: int, item: str = "", key: str = "") -> int:
        """Record that ``op`` was invoked; return its sequence number."""
        seq = self._next_seq()
        self._append(KIND_BEGIN, op, OUT_PENDING, -1, queue, item, key, seq)
        return seq

    def end(
        self,
        seq: int,
        queue: str,
        op: int,
        outcome: int,
        fault: int = -1,
        item: str = "",
        detail: str = "",
    ) -> None:
        """Record that operation ``seq`` returned (``item``) or raised (``detail``)."""
        self._append(KIND_END, op, outcome, fault, queue, item, detail, seq)

    def mark(self, kind: str, queue: str = "", detail: str = "", fault: int = -1) -> None:
        """Record a process-level event (see ``MARKS``)."""
        self._append(KIND_MARK, MARK_CODES[kind], OUT_OK, fault, queue, detail, "", 0)

    def wrap(
        self,
        queue: str,
        op: int,
        call: Callable[..., Any],
        has_item: bool,
        generation_of: Any,
        generation: int,
        current: Callable[[], Callable[..., Any]],
    ) -> Callable[..., Any]:
        """``call`` (queue operation ``op`` on ``queue``), recording its BEGIN and END.

        The records are those of ``begin``/``end`` (see ``pyrec.wrap``), written by
        the C module when it is there (``accelerated``), else by Python.
        """
        from .pyrec import wrap as wrap_py  # the recorder in Python: made when needed

        make_py = functools.partial(
            wrap_py,
            queue,
            op,
            call,
            has_item,
            generation_of,
            generation,
            current,
            write=self._fast_write,
            slow_write=self._slow_write,
            seqs=self._seq_iter,
            end=self.end,
        )
        if self._log is None:
            return make_py()
        end = self.end
        made: list[Callable[..., Any]] = []

        def slow(*args: Any, **kwargs: Any) -> Any:
            """The Python operation, for the calls the C one hands on (``put(obj=x)``);
            made on the first (its int packers cost ~0.1 ms)."""
            if not made:
                made.append(make_py())
            return made[0](*args, **kwargs)

        def end_raised(seq: int, e: BaseException) -> None:
            end(seq, queue, op, OUT_RAISED, -1, "", type(e).__name__)

        # The C operation notices a fork by itself (pthread_atfork) and then asks
        # current() for the child's.
        fn: Callable[..., Any] = self._log.wrap(
            utf8(queue), op, call, has_item, current, end_raised, item_payload, slow
        )
        return fn

    def close(self) -> None:
        """Release the mapping (the file and its records stay)."""
        try:
            if self._log is not None:
                self._log.close()
            elif self._mm is not None:
                self._mm.close()
        finally:
            os.close(self._fd)
