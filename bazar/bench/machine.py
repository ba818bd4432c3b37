"""What the benchmark records about the machine it ran on: CPU, memory, versions, and how
much of the CPU other processes took during the run (``CpuWatch``)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bazar.bench import wrk


def cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name from /proc/cpuinfo text ("model name", or "Model"/"Hardware" on ARM)."""
    for key in ("model name", "Model", "Hardware"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def machine_info(wrk_path: str | None) -> dict[str, Any]:
    import twisted

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(cpuinfo) or platform.processor() or None,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "bazar": _version("bazar"),
        "bazar_git": _git_revision(),
        "matplotlib": _version("matplotlib"),
        "wrk": wrk.version(wrk_path) if wrk_path else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, steal) clock ticks of all CPUs from /proc/stat text ("cpu" line)."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            fields = [int(f) for f in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
            steal = fields[7] if len(fields) > 7 else 0
            return user + nice + system + irq + softirq, steal
    raise ValueError("no cpu line in /proc/stat")


class CpuWatch:
    """How much CPU *other* processes used while we ran: the noise in these numbers.

    All CPU time spent (from /proc/stat) minus our own and our reaped descendants' (the
    clusters, their replicas, wrk and the ceiling all are, once stopped): what is left was
    someone else's work competing with the measurements.
    """

    def __init__(self) -> None:
        self.start = self._sample()
        self.began = time.monotonic()

    @staticmethod
    def _sample() -> tuple[tuple[int, int], float] | None:
        try:
            ticks = cpu_ticks(Path("/proc/stat").read_text())
        except (OSError, ValueError):
            return None
        own = os.times()
        return ticks, own.user + own.system + own.children_user + own.children_system

    def report(self) -> dict[str, Any] | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        (busy0, steal0), own0 = self.start
        (busy1, steal1), own1 = end
        wall = time.monotonic() - self.began
        available = wall * (os.cpu_count() or 1)
        other = max(0.0, (busy1 - busy0) / hz - (own1 - own0))
        return {
            "wall_seconds": wall,
            "cpu_seconds_ours": own1 - own0,
            "cpu_seconds_others": other,
            "others_share": other / available if available else None,
            "steal_seconds": (steal1 - steal0) / hz,
        }


def _memory() -> str | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    """The checkout the bazar package runs from, with "+dirty" for uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
