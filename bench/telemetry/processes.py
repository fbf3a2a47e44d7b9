"""Host and process readings through psutil: the host's RAM, swap and CPU; a process tree's VIRT, RES and CPU.

CPU percentages are computed here from two readings of cumulative CPU seconds, not with psutil.cpu_percent()
(whose module-wide state any other caller would reset):
- a process tree: cpu_pct = 100 * delta(user + system seconds, summed over the tree) / delta(wall seconds);
  100 means one core fully busy, so a tree can exceed 100;
- the host: host_cpu_pct = 100 * delta(busy seconds) / delta(all seconds), over all cores, 0..100.
The first reading has no interval before it, so its CPU percentages are None.
"""

from __future__ import annotations

import time
from typing import Callable

import psutil


class HostReader:
    """host_ram_used_bytes, host_ram_available_bytes, host_ram_total_bytes, host_swap_used_bytes, host_cpu_pct."""

    COLUMNS = ("host_ram_used_bytes", "host_ram_available_bytes", "host_ram_total_bytes", "host_swap_used_bytes",
               "host_cpu_pct")

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def read(self) -> dict[str, float | int | None]:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        return {
            "host_ram_used_bytes": int(vm.used),
            "host_ram_available_bytes": int(vm.available),
            "host_ram_total_bytes": int(vm.total),
            "host_swap_used_bytes": int(swap.used),
            "host_cpu_pct": self._cpu_pct(),
        }

    def _cpu_pct(self) -> float | None:
        t = psutil.cpu_times()
        # guest time is already counted inside user/nice on Linux; idle and iowait are the not-busy parts.
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        busy = total - t.idle - getattr(t, "iowait", 0.0)
        last, self._last = self._last, (total, busy)
        if last is None or total <= last[0]:
            return None
        return max(0.0, min(100.0, 100.0 * (busy - last[1]) / (total - last[0])))


class ProcessTreeReader:
    """Sums a set of processes (the roots and, optionally, all their descendants) each tick.

    read() -> {"virt_bytes", "res_bytes", "cpu_pct", "num_procs", "pids"}, all None once every root has exited.
    VIRT and RES are the kernel's vms and rss per process, summed as `top` would show them, so pages shared
    between the processes (libraries, shared memory) count once per process.
    """

    def __init__(self, roots: list[int], note: Callable[[str], None], *, label: str = "server process",
                 children: bool = True, wall: Callable[[], float] = time.monotonic, refresh_s: float = 5.0):
        self._roots = {pid: psutil.Process(pid) for pid in roots}  # raises NoSuchProcess for a bad pid
        self._note = note
        self._label = label
        self._children = children
        self._wall = wall
        # Listing descendants reads /proc/<pid>/stat of every process on the host (milliseconds on a busy one),
        # so the list is refreshed every refresh_s seconds, or at once when one of its processes has gone.
        self._refresh_s = refresh_s
        self._members: list[psutil.Process] = []
        self._members_at: float | None = None
        self._cpu_s: dict[tuple[int, float], float] = {}  # (pid, create_time) -> user+system seconds
        self._last_wall: float | None = None
        self._last_epoch = time.time()
        self._gone_noted = False
        self._denied_noted = False

    @property
    def roots(self) -> list[int]:
        return list(self._roots)

    def members(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        for pid, root in self._roots.items():
            if not root.is_running():
                continue
            procs.setdefault(pid, root)
            if self._children:
                try:
                    for child in root.children(recursive=True):
                        procs.setdefault(child.pid, child)
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    pass
                except psutil.AccessDenied:
                    self._denied("its children")
        return list(procs.values())

    def read(self) -> dict[str, float | int | list[int] | None]:
        now, epoch = self._wall(), time.time()
        if self._members_at is None or now - self._members_at >= self._refresh_s:
            self._members, self._members_at = self.members(), now
        virt = res = 0
        cpu_now: dict[tuple[int, float], float] = {}
        pids: list[int] = []
        for p in self._members:
            try:
                with p.oneshot():
                    mem = p.memory_info()
                    ct = p.cpu_times()
                    key = (p.pid, p.create_time())
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._members_at = None  # list again next tick
                continue
            except psutil.AccessDenied:
                self._denied(f"pid {p.pid}")
                continue
            virt += mem.vms
            res += mem.rss
            cpu_now[key] = ct.user + ct.system
            pids.append(p.pid)
        if not pids:
            if not self._gone_noted:
                self._gone_noted = True
                self._note(f"{self._label} (pid {', '.join(map(str, self._roots))}) has exited; its columns stay empty")
            self._cpu_s, self._last_wall = {}, None
            return {"virt_bytes": None, "res_bytes": None, "cpu_pct": None, "num_procs": None, "pids": []}
        cpu_pct = None
        if self._last_wall is not None and now > self._last_wall:
            used = 0.0
            for key, seconds in cpu_now.items():
                before = self._cpu_s.get(key)
                if before is None:
                    # A process born since the last tick spent all its CPU time inside this interval.
                    before = 0.0 if key[1] >= self._last_epoch else None
                if before is not None:
                    used += max(0.0, seconds - before)
            cpu_pct = 100.0 * used / (now - self._last_wall)
        self._cpu_s, self._last_wall, self._last_epoch = cpu_now, now, epoch
        return {"virt_bytes": int(virt), "res_bytes": int(res), "cpu_pct": cpu_pct, "num_procs": len(pids),
                "pids": pids}

    def _denied(self, what: str) -> None:
        if not self._denied_noted:
            self._denied_noted = True
            self._note(f"{self._label}: access denied reading {what} (another user's process?); "
                       "its memory and CPU are left out of the sums")
