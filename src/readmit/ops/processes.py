"""Local processes and ports, shared by `readmit.ops.deploy` (the service) and
`deployments/local/services.py` (the stack): loopback only, and a PID is only ever signalled
while it is still the very process that was started (its start time matches), so a recycled PID
is never killed.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

HOST = "127.0.0.1"
"""Every server readmit starts listens on loopback only."""


def port_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on host:port.

    SO_REUSEADDR as servers set it: connections of a stopped server left in TIME_WAIT must not
    make its port look busy (they would move every service on each restart).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_port_range() -> tuple[int, int]:
    """The range the kernel draws client (source) ports from (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(taken: Iterable[int] = (), host: str = HOST) -> int:
    """A port free now, it and the next one below the kernel's ephemeral range (the blue/green
    pair is `port`, `port + 1`), and not one of `taken`.

    Why not `bind(0)`: that port is ephemeral, so a readiness probe sent before the server
    listens can be given the very same port as its source and connect to itself (TCP
    self-connect): it reads its own request back ("BadStatusLine: GET /readyz") and holds the
    port the server is about to bind. A port outside the range can never be a source port.
    """
    avoid = set(taken)
    low, _ = ephemeral_port_range()
    first = max(1024, low - 12_000)
    for _ in range(500):
        port = first + secrets.randbelow(low - 1 - first)
        if port not in avoid and port_free(port, host):
            return port
    raise RuntimeError(f"no free port in {first}-{low - 2} on {host}")


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """Status and body of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        # HTTPException: something answered that is not HTTP (a half-started server)
        return 0, b""


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, process group, start time in clock ticks) of a PID; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return fields[0], int(fields[2]), int(fields[19])


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the PID, its identity."""
    stat = proc_stat(pid)
    return None if stat is None else stat[2]


def alive(pid: int, started: int | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when `started` is given, is the very process that
    started then, not a later one that reuses the PID."""
    _reap(pid)
    stat = proc_stat(pid)
    if stat is None or stat[0] == "Z":
        return False
    return started is None or stat[2] == started


def _reap(pid: int) -> None:
    """Collect a finished child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def stop_group(
    pid: int,
    started: int | None,
    *,
    timeout_s: float = 20.0,
    first_signal: int = signal.SIGTERM,
) -> bool:
    """Stop the process group led by `pid`: `first_signal`, a grace period, then SIGKILL.

    Nothing is signalled while `pid` belongs to another process than the one that started at
    `started` (a recycled PID is left alone). With the leader gone, members left in its group
    are still ours (Linux does not reuse a PID that is a live process group's id) and are stopped.
    Returns False when the PID was recycled, True otherwise.
    """
    if proc_stat(pid) is not None and not alive(pid, started):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, first_signal)
    deadline = time.monotonic() + timeout_s
    while group_members(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if group_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    _reap(pid)
    return True
