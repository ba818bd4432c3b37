"""Probes the launcher polls with: free ports, who listens, who is in a process group, HTTP.

All synchronous (sockets, ``/proc``, urllib): the launcher runs outside the reactor.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Never through a proxy: every URL here is on 127.0.0.1 (or a namespace a test made).
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Call ``check`` until it returns something truthy or ``timeout`` passes (then None)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)  # the poll's interval, not a guess at how long something takes


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """``poll``, but TimeoutError (naming ``what``) if ``check`` never returned something truthy."""
    last: list[T | None] = []

    def checked() -> T | None:
        last[:] = [check()]
        return last[0]

    result = poll(checked, timeout, interval)
    if not result:
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last[0]!r})")
    return result


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (bound to port 0 together)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (bound with SO_REUSEADDR, as Twisted would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url`` synchronously: (status, decoded JSON body)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get_text(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with _opener.open(request, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


# -- process groups, through /proc ------------------------------------------------------------


def listening_inodes(port: int, tables: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6")) -> set[str]:
    """The socket inodes listening on TCP ``port``, from the kernel's tables."""
    inodes = set()
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def listening_pid(port: int, candidates: Iterable[int] | None = None) -> int | None:
    """The pid (of ``candidates``, or of every process we may look into) listening on TCP
    ``port``, found through /proc; None if none is."""
    sockets = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    if not sockets:
        return None
    if candidates is None:
        candidates = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    for pid in candidates:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in sockets:
                    return pid
            except OSError:
                continue
    return None


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group ``pgid``."""
    return bool(process_group(pgid))
