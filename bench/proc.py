"""Process facts the benchmarks report, read from /proc (Linux): a process's descendants, their
resident memory, and the CPU time processes and the machine use."""

from __future__ import annotations

import os


def descendants(root: int) -> list[int]:
    """The processes below ``root`` (children, their children, …)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def resident_mb(pids: list[int]) -> float:
    """The resident memory of ``pids`` together, in MB (a process gone meanwhile counts 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total / 1024


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(CPU time ``pid`` has used: user + system, its own threads; when it started, seconds
    after boot), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / hz, int(fields[19]) / hz


def uptime() -> float:
    """Seconds since boot."""
    with open("/proc/uptime", encoding="ascii") as up:
        return float(up.read().split()[0])


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


class CpuLedger:
    """CPU seconds used by groups of processes over a stretch of time.

    ``sample(groups)`` with ``groups`` = {name: pids}: each process's CPU time is read, and the
    most seen per process (a process that ends between samples keeps its last reading) counts
    towards its group; ``used()`` gives each group's CPU seconds since the ledger began (a
    process started since counts from its start)."""

    def __init__(self) -> None:
        self.began = uptime()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.group: dict[int, str] = {}

    def sample(self, groups: dict[str, list[int]]) -> None:
        for name, pids in groups.items():
            for pid in pids:
                reading = cpu_seconds(pid)
                if reading is None:
                    continue
                seconds, started = reading
                self.first.setdefault(pid, 0.0 if started >= self.began else seconds)
                self.last[pid] = max(seconds, self.last.get(pid, 0.0))
                self.group.setdefault(pid, name)

    def used(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, name in self.group.items():
            out[name] = out.get(name, 0.0) + self.last[pid] - self.first[pid]
        return out
