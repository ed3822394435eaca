"""Rows 56-64: Manager queues (proxies) and remote managers."""

from __future__ import annotations

import os
import pickle
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _children
from .context import CheckContext, exc_text, signal_process, wait_blocked
from .model import Outcome, failed, passed
from .registry import check, unobservable

QUEUE_METHODS = (
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
)


@check(
    row=56,
    slug="manager-queue-is-queue-queue",
    title="Manager().Queue() is a proxy of a queue.Queue in the manager process (so it has "
    "task_done() and join())",
    kind="documented",
    source=(
        'Doc SyncManager.Queue: "Create a shared queue.Queue object and return a proxy for '
        "it.\" Code managers.py l.1220-1221: register('Queue', queue.Queue)"
    ),
    kinds=("MQ",),
    expect="the proxy has empty, full, get, get_nowait, join, put, put_nowait, qsize, task_done",
)
def manager_queue_api(cx: CheckContext) -> Outcome:
    """Row 56."""
    q = cx.make()
    missing = [m for m in QUEUE_METHODS if not callable(getattr(q, m, None))]
    exposed = sorted(getattr(q, "_exposed_", ()) or ())
    cx.figure(exposed=" ".join(exposed))
    if missing:
        return failed(f"the proxy lacks {missing}")
    return passed(f"exposes {' '.join(exposed)}")


@check(
    row=57,
    slug="manager-exceptions-keep-type",
    title="exceptions raised by the queue in the manager are re-raised with their type",
    kind="documented",
    source=(
        'Doc BaseProxy._callmethod: "If an exception is raised by the call, then is re-raised '
        'by _callmethod()."'
    ),
    kinds=("MQ",),
    expect="queue.Empty from get_nowait(), queue.Full from put_nowait(), ValueError from an "
    "extra task_done()",
)
def manager_exceptions(cx: CheckContext) -> Outcome:
    """Row 57."""
    q = cx.make(1)
    seen = []
    for label, want, fn in (
        ("get_nowait()", queue.Empty, q.get_nowait),
        ("task_done()", ValueError, q.task_done),
        ("put_nowait(y) on a full queue", queue.Full, lambda: (q.put("x"), q.put_nowait("y"))),
    ):
        try:
            fn()
        except Exception as exc:
            if type(exc) is not want:
                return failed(f"{label} raised {exc_text(exc)}")
            seen.append(type(exc).__name__)
        else:
            return failed(f"{label} did not raise")
    return passed(f"re-raised {', '.join(seen)} with their own types")


@check(
    row=58,
    slug="manager-queue-no-feeder-issues",
    title="MQ put() is synchronous: accurate empty()/qsize(), no join-at-exit deadlock, no "
    "loss on os._exit()",
    kind="documented",
    source=(
        'Doc Programming guidelines: "Note that a queue created using a manager does not '
        'have this issue." Feeder note: "... you can instead use a queue created with a '
        'manager."'
    ),
    kinds=("MQ",),
    expect="empty() False and qsize()==1 right after put(); child put 1 MB + os._exit(0) "
    "joins before any get(); both items arrive",
)
def manager_no_feeder(cx: CheckContext) -> Outcome:
    """Row 58."""
    q = cx.make()
    q.put("x")
    if q.empty() or q.qsize() != 1:
        return failed(f"right after put(): empty()={q.empty()}, qsize()={q.qsize()}")
    q.get(timeout=cx.deadline)
    big = b"x" * 1_000_000
    p = cx.start(_children.put_and_exit, q, [big, "after"], "os_exit")
    p.join(cx.deadline)
    if p.exitcode is None:
        return failed(f"the child was still alive {cx.deadline:g} s later, nothing got yet")
    if p.exitcode != 0:
        return failed(f"exit code {p.exitcode}")
    got = [q.get(timeout=cx.deadline), q.get(timeout=cx.deadline)]
    if got != [big, "after"]:
        return failed("the items put before os._exit() did not both arrive")
    return passed("synchronous put(): the child exited unread and lost nothing")


@check(
    row=59,
    slug="manager-killed-consumer-loses-item",
    title="a consumer killed while blocked in a proxy get() silently consumes the next item",
    kind="detail",
    source="managers.py Server.serve_client: the call completes, the send to the dead client "
    "fails and is only logged (undocumented)",
    kinds=("MQ",),
    not_platforms=("win32",),
    expect="kill the blocked consumer, put('x'): the item leaves the queue (qsize() 0 within "
    "2 s) and never arrives; the queue still works",
)
def manager_killed_consumer(cx: CheckContext) -> Outcome:
    """Row 59."""
    q = cx.make()
    r, w = cx.pipe()
    p = cx.start(_children.blocking_get, q, w, True)
    cx.recv(r, what="ready signal")
    if not wait_blocked(p.pid):
        p.join(cx.hold)  # no /proc: give the request time to reach the manager
    signal_process(p)
    p.join(cx.deadline)
    q.put("x")
    # The manager may read the dead consumer's request only now (it is still in the
    # socket): wait until the item is gone from the queue, or give up.
    t0 = time.perf_counter()
    end = time.monotonic() + 2.0
    size = q.qsize()
    while size and time.monotonic() < end:
        size = q.qsize()
    cx.figure(**{"lost after s": time.perf_counter() - t0})
    stayed = q.get(timeout=cx.timeout) if size else None
    q.put("y")
    after = q.get(timeout=cx.deadline)
    if after != "y":
        return failed(f"the queue is not usable afterwards: got {after!r}")
    if stayed is not None:
        return failed(f"the item was not lost: it stayed in the queue ({stayed!r})")
    return passed("the item went to the dead consumer's request; the queue still works")


@check(
    row=60,
    slug="manager-death-eoferror",
    title="if the manager process dies, a client blocked in get() gets EOFError; later "
    "calls raise connection errors",
    kind="detail",
    source="managers.py _callmethod (undocumented)",
    kinds=("MQ",),
    not_platforms=("win32",),
    expect="EOFError in the blocked get() (ConnectionResetError if the manager died before "
    "reading the request); then an OSError/EOFError from put()",
)
def manager_death(cx: CheckContext) -> Outcome:
    """Row 60 (its own manager: this one is killed)."""
    manager = cx.mp.Manager()
    cx.on_cleanup(manager.shutdown)
    q = manager.Queue()
    tid: list[int] = []

    def get() -> Any:
        q.qsize()  # connect this thread to the manager first
        tid.append(threading.get_native_id())
        return q.get()

    getter = cx.thread(get)
    end = time.monotonic() + cx.deadline
    while not tid and time.monotonic() < end:
        getter.join(0.001)
    if not tid or not wait_blocked(os.getpid(), tid[0]):
        getter.join(cx.hold)
    proc = manager._process  # type: ignore[attr-defined]
    signal_process(proc)
    proc.join(cx.deadline)
    if not getter.join(cx.deadline):
        return failed(f"get() still blocked {cx.deadline:g} s after the manager was killed")
    first = getter.describe()
    try:
        q.put("x")
    except (OSError, EOFError) as exc:
        later = type(exc).__name__
    else:
        return failed("put() succeeded after the manager was killed")
    cx.figure(**{"blocked get": first, "later put": later})
    error = getter.exception
    if isinstance(error, ConnectionResetError):
        # The manager died before it had read the get() request: the kernel resets.
        return passed(f"blocked get() raised ConnectionResetError; a later put() raised {later}")
    if not isinstance(error, EOFError):
        return failed(f"the blocked get() {first} instead of raising EOFError")
    return passed(f"blocked get() raised EOFError; a later put() raised {later}")


@check(
    row=61,
    slug="remote-manager-queue",
    title="a BaseManager server on a TCP address serves a queue to independent clients; a "
    "wrong authkey is rejected",
    kind="documented",
    source=(
        "Doc \"Using a remote manager\": QueueManager(address=('', 50000), "
        "authkey=b'abracadabra'), register('get_queue', callable=lambda: queue); clients "
        "register('get_queue') and connect(). CPython _TestRemoteManager.test_remote"
    ),
    kinds=("MQ",),
    expect="client 1 puts, client 2 gets the item; wrong authkey -> AuthenticationError",
)
def remote_manager(cx: CheckContext) -> Outcome:
    """Row 61."""
    import multiprocessing

    key = os.urandom(16)
    server = _children.RemoteQueueServer(address=("127.0.0.1", 0), authkey=key, ctx=cx.mp)
    server.start()
    cx.on_cleanup(server.shutdown)
    address: Any = server.address
    one = _children.RemoteQueueClient(address=address, authkey=key)
    one.connect()
    two = _children.RemoteQueueClient(address=address, authkey=key)
    two.connect()
    one.get_queue().put(("hello", 1))  # type: ignore[attr-defined]
    got = two.get_queue().get(timeout=cx.deadline)  # type: ignore[attr-defined]
    if got != ("hello", 1):
        return failed(f"client 2 got {got!r}")
    bad = _children.RemoteQueueClient(address=address, authkey=b"wrong key")
    try:
        bad.connect()
    except multiprocessing.AuthenticationError as exc:
        rejected = str(exc)
    else:
        return failed("a client with a wrong authkey connected")
    return passed(f"item passed between clients on {address[0]}; wrong key: {rejected!r}")


unobservable(
    row=62,
    slug="proxy-per-thread",
    title="do not share a proxy between threads without a lock (the implementation keeps a "
    "connection per thread)",
    kind="documented",
    source='Doc Programming guidelines: "Do not use a proxy object from more than one thread '
    'unless you protect it with a lock."',
    kinds=("MQ",),
    expect="-",
    reason="a usage rule, not a behaviour with an observable outcome",
)


@check(
    row=63,
    slug="proxies-are-picklable",
    title="proxies are picklable: an MQ can travel through another queue and still work",
    kind="documented",
    source=(
        'Doc Proxy Objects: "An important feature of proxy objects is that they are picklable '
        'so they can be passed between processes."'
    ),
    kinds=("MQ",),
    expect="an MQ sent through a SimpleQueue comes back as a working proxy of the same queue",
)
def proxies_picklable(cx: CheckContext) -> Outcome:
    """Row 63."""
    q = cx.make()
    carrier = cx.track(cx.mp.SimpleQueue())
    carrier.put(q)
    copy = carrier.get()
    copy.put("via-copy")
    got = q.get(timeout=cx.deadline)
    if got != "via-copy":
        return failed(f"got {got!r}")
    size = len(pickle.dumps(q))
    return passed(f"the proxy pickled to {size} bytes and the copy reached the same queue")


@check(
    row=64,
    slug="manager-queue-shutdown",
    title="3.13+: Manager().Queue().shutdown(): get() drains, then raises ShutDown; put() "
    "raises ShutDown",
    kind="documented",
    source="queue docs 3.13 Queue.shutdown; proxied via AutoProxy. gh-147965",
    kinds=("MQ",),
    since=(3, 13),
    expect="get() -> 1, then queue.ShutDown; put() -> queue.ShutDown",
)
def manager_shutdown(cx: CheckContext) -> Outcome:
    """Row 64 (MQ)."""
    shutdown_error: type[Exception] = queue.ShutDown  # type: ignore[attr-defined,unused-ignore]
    q = cx.make()
    q.put(1)
    q.shutdown()
    first = q.get(timeout=cx.deadline)
    if first != 1:
        return failed(f"get() after shutdown() returned {first!r} instead of 1")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("get()", lambda: q.get(timeout=cx.deadline)),
        ("put(2)", lambda: q.put(2)),
    ]
    for label, fn in calls:
        try:
            fn()
        except shutdown_error:
            continue
        except Exception as exc:
            return failed(f"{label} raised {exc_text(exc)} instead of ShutDown")
        return failed(f"{label} did not raise ShutDown")
    return passed("drained 1, then ShutDown from get() and put()")


@check(
    row=64,
    slug="queue-has-no-shutdown",
    title="multiprocessing.Queue has no shutdown() (up to and including 3.14)",
    kind="detail",
    source="gh-147965 / PR #147970 (doc note); gh-96471 PR #138828 still open",
    kinds=("Q", "JQ"),
    expect="hasattr(q, 'shutdown') is False",
)
def queue_no_shutdown(cx: CheckContext) -> Outcome:
    """Row 64 (Q/JQ)."""
    q = cx.make()
    if hasattr(q, "shutdown"):
        return failed("the queue has shutdown()")
    return passed("no shutdown()")
