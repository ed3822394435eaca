"""Who is at the other end of a TCP connection: the peer's pid, from ``/proc``.

A served queue records every operation at the server, named by the program that
made the connection, and the programs are plain ``multiprocessing.managers``
clients that send no name.  The server finds the client's process instead:

1. the accepted socket's peer address ``(ip, port)`` is the client's local address;
2. a TCP table (``/proc/net/tcp`` of the server's network namespace, and
   ``/proc/<pid>/net/tcp`` of every registered program, which covers programs in
   other network namespaces of the same host) has the line whose local address is
   that and whose remote address is the server's: its socket inode;
3. the process holding ``socket:[inode]`` among its ``/proc/<pid>/fd`` is the client
   (registered programs and their descendants are searched first);
4. its name: the nearest ancestor (itself included) registered in the run's
   ``clients/`` directory (one file per pid, holding the name).

A client on another host is not in any table of this one: it is named
``client@<ip>``.  IPv4 only (and IPv4 over IPv6 sockets).

This module imports nothing outside ``mpfault._runtime`` and never pytest.
"""

from __future__ import annotations

import os
import socket
import struct

__all__ = ["CLIENTS_DIR", "find_peer_pid", "name_of", "register", "registered"]

CLIENTS_DIR = "clients"


def register(run_dir: str, pid: int, name: str, descendants: bool = True) -> None:
    """Say that process ``pid`` (and, with ``descendants``, every process it starts)
    is the client named ``name``."""
    if not descendants:
        name = "=" + name
    d = os.path.join(run_dir, CLIENTS_DIR)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{pid}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(name)
    os.replace(tmp, os.path.join(d, str(pid)))


def registered(run_dir: str) -> dict[int, str]:
    """Every registered client process: ``{pid: name}``."""
    d = os.path.join(run_dir, CLIENTS_DIR)
    out: dict[int, str] = {}
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        if n.isdigit():
            try:
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    out[int(n)] = f.read()
            except OSError:
                continue
    return out


def _hex4(ip: str, port: int) -> str:
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    (n,) = struct.unpack("=I", socket.inet_aton(ip))
    return f"{n:08X}:{port:04X}"


def _hex6(ip: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp6 shows it when mapped into IPv6."""
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    raw = b"\0" * 10 + b"\xff\xff" + socket.inet_aton(ip)
    words = struct.unpack("=4I", raw)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _inode_in(path: str, local: str, remote: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > 9 and parts[1] == local and parts[2] == remote:
                    return int(parts[9])
    except OSError:
        return None
    return None


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for e in entries:
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            out[int(e)] = int(data[data.rfind(b")") + 2 :].split(b" ", 2)[1])
    return out


def _holds(pid: int, target: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def find_peer_pid(
    peer: tuple[str, int], local: tuple[str, int], candidates: dict[int, str]
) -> int | None:
    """The pid of the process holding the client end of the connection ``peer`` -> ``local``.

    ``candidates`` (the registered clients) are searched first, with their
    descendants; then every process.  None if none is found (another host).
    """
    pip, pport = peer[0], peer[1]
    lip, lport = local[0], local[1]
    try:
        keys4 = (_hex4(pip, pport), _hex4(lip, lport))
        keys6 = (_hex6(pip, pport), _hex6(lip, lport))
    except OSError:
        return None
    tables = ["/proc/net/tcp", "/proc/net/tcp6"]
    for pid in candidates:
        tables += [f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"]
    inode = None
    for t in tables:
        inode = _inode_in(t, *(keys6 if t.endswith("6") else keys4))
        if inode:
            break
    if not inode:
        return None
    target = f"socket:[{inode}]"
    ppids = _ppids()
    children: dict[int, list[int]] = {}
    for p, pp in ppids.items():
        children.setdefault(pp, []).append(p)
    order: list[int] = []
    todo = list(candidates)
    seen: set[int] = set()
    while todo:
        p = todo.pop(0)
        if p in seen:
            continue
        seen.add(p)
        order.append(p)
        todo.extend(children.get(p, ()))
    order += [p for p in ppids if p not in seen]
    me = os.getpid()
    for p in order:
        if p != me and _holds(p, target):
            return p
    return None


def name_of(pid: int, candidates: dict[int, str]) -> tuple[str, int] | None:
    """The name of the registered client ``pid`` is or descends from, and that pid."""
    p = pid
    for _ in range(64):
        if p in candidates:
            name = candidates[p]
            if name.startswith("="):  # this process only, not its descendants
                return (name[1:], p) if p == pid else None
            return name, p
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return None
        p = int(data[data.rfind(b")") + 2 :].split(b" ", 2)[1])
        if p <= 1:
            return None
    return None
