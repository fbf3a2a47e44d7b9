"""Finding the local server process: by the pid the user gave, or by the TCP port it listens on."""

from __future__ import annotations

import psutil


def listening_pids(port: int) -> tuple[list[int], str | None]:
    """The pids of processes listening on TCP `port`; when there are none, also the reason why.

    Linux lists every socket to any user but leaves `pid` empty for another user's process, so a listener
    without a pid is reported as such; where the system-wide list is refused (macOS), each process is asked.
    """
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return _scan_processes(port)
    pids: list[int] = []
    anonymous = False
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            if c.pid:
                pids.append(c.pid)
            else:
                anonymous = True
    if pids:
        return sorted(set(pids)), None
    if anonymous:
        return [], (f"port {port} is held by a process this user may not inspect "
                    "(pass --server-pid, or run as the server's user)")
    return [], f"no local process listens on port {port}"


def _scan_processes(port: int) -> tuple[list[int], str | None]:
    pids, denied = [], 0
    for proc in psutil.process_iter():
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.AccessDenied:
            denied += 1
            continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            pids.append(proc.pid)
    if pids:
        return sorted(pids), None
    why = f"no process this user can inspect listens on port {port}"
    if denied:
        why += f" ({denied} processes refused access; pass --server-pid)"
    return [], why


def topmost(pids: list[int]) -> list[int]:
    """Drop the pids whose ancestor is also in the list (uvicorn workers under their master, say)."""
    chosen = set(pids)
    keep = []
    for pid in pids:
        try:
            ancestors = {p.pid for p in psutil.Process(pid).parents()}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            ancestors = set()
        if not ancestors & chosen:
            keep.append(pid)
    return keep
