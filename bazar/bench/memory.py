"""The memory experiment's pure parts: reading a process's resident memory, and judging a run.

Where the figure comes from, best first:

1. the front end's ``/metrics`` (with the cluster secret): ``process_resident_memory_bytes``
   and ``process_open_fds`` from prometheus_client's ProcessCollector, and
   ``bazar_cache_entries``. Works against any ``--url`` whose secret is known.
2. ``/proc/<pid>/status`` (``VmRSS``) of the process that listens on the front end's port,
   found through ``/proc/net/tcp`` and ``/proc/<pid>/fd``: same machine, same user, no secret.

The verdict compares the two halves of the measured run (after the warm-up): memory is
**flat** if the second half's peak RSS exceeds the first half's peak by at most
``max(FLAT_MIB, FLAT_SHARE x first half's peak)``. Peaks rather than single samples, because
a bounded process's RSS still moves (allocator arenas are taken and given back): a leak
raises the high-water mark, noise does not keep raising it. A leak of *b* bytes per request
raises the second half's peak by about *b* times the requests of the second half, so the
allowance divided by those requests is the smallest leak the run would have caught
(``detectable_leak_bytes_per_request``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
FLAT_MIB = 2.0  # growth in the second half that is always allowed, MiB
FLAT_SHARE = 0.05  # ... or this share of the first half's peak, if larger
MIN_SAMPLES_PER_HALF = 3  # fewer RSS samples in either half: "inconclusive"

RULE = (
    f"flat if the second half's peak RSS is at most max({FLAT_MIB:g} MiB, {100 * FLAT_SHARE:g} % of the "
    "first half's peak) above the first half's peak (halves of the measured time, after the warm-up)"
)


# -- reading the figures ------------------------------------------------------------------------


def parse_unlabelled(text: str) -> dict[str, float]:
    """Every sample without labels in a Prometheus text exposition: ``{name: value}``."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            values[parts[0]] = float(parts[1])
        except ValueError:
            continue
    return values


def status_rss(text: str) -> int | None:
    """Resident memory in bytes from ``/proc/<pid>/status`` text (the ``VmRSS:`` line), or None."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            try:
                return int(fields[1]) * 1024  # always in kB
            except (IndexError, ValueError):
                return None
    return None


def proc_rss(pid: int, proc: Path = Path("/proc")) -> int | None:
    try:
        return status_rss((proc / str(pid) / "status").read_text())
    except OSError:
        return None


def proc_open_fds(pid: int, proc: Path = Path("/proc")) -> int | None:
    try:
        return len(os.listdir(proc / str(pid) / "fd"))
    except OSError:
        return None


# -- the verdict -------------------------------------------------------------------------------


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys over xs; None with fewer than 2 distinct xs."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


def judge(samples: Sequence[Mapping[str, Any]], capacity: int | None) -> dict[str, Any]:
    """Figures and verdict of a run from its samples over time.

    Each sample has ``t`` (s), ``phase`` (``"warm-up"`` or ``"run"``; only ``"run"`` ones are
    judged), ``rss_bytes``, and optionally ``requests`` (served so far), ``open_fds`` and
    ``cache_entries``. ``capacity`` is the cache's (None if unknown).
    """
    run = sorted(
        (s for s in samples if s.get("phase", "run") == "run" and s.get("rss_bytes") is not None),
        key=lambda s: s["t"],
    )
    entries = [s["cache_entries"] for s in samples if s.get("cache_entries") is not None]
    out: dict[str, Any] = {
        "rule": RULE,
        "samples": len(run),
        "cache_capacity": capacity,
        "cache_entries_max": max(entries) if entries else None,
        "cache_within_capacity": None if not entries or capacity is None else max(entries) <= capacity,
    }
    fds = [s["open_fds"] for s in run if s.get("open_fds") is not None]
    if fds:
        out.update(open_fds_start=fds[0], open_fds_max=max(fds), open_fds_end=fds[-1])
    if not run:
        return {**out, "verdict": "inconclusive", "why": "no memory samples"}
    rss = [float(s["rss_bytes"]) for s in run]
    start, end, peak = rss[0], rss[-1], max(rss)
    out.update(
        start_mib=start / MIB,
        max_mib=peak / MIB,
        end_mib=end / MIB,
        min_mib=min(rss) / MIB,
        growth_mib=(end - start) / MIB,
        growth_pct=100 * (end - start) / start if start else None,
        max_growth_mib=(peak - start) / MIB,
        duration_s=run[-1]["t"] - run[0]["t"],
    )
    middle = (run[0]["t"] + run[-1]["t"]) / 2
    first = [s for s in run if s["t"] <= middle]
    second = [s for s in run if s["t"] > middle]
    if len(first) < MIN_SAMPLES_PER_HALF or len(second) < MIN_SAMPLES_PER_HALF:
        return {
            **out,
            "verdict": "inconclusive",
            "why": f"fewer than {MIN_SAMPLES_PER_HALF} memory samples in a half of the run "
            f"({len(first)} and {len(second)})",
        }
    first_peak = max(float(s["rss_bytes"]) for s in first)
    second_peak = max(float(s["rss_bytes"]) for s in second)
    growth = second_peak - first_peak
    allowed = max(FLAT_MIB * MIB, FLAT_SHARE * first_peak)
    out.update(
        first_half_max_mib=first_peak / MIB,
        second_half_max_mib=second_peak / MIB,
        second_half_growth_mib=growth / MIB,
        second_half_growth_pct=100 * growth / first_peak if first_peak else None,
        allowed_growth_mib=allowed / MIB,
    )
    if all(s.get("requests") is not None for s in second):
        xs = [float(s["requests"]) for s in second]
        per_request = slope(xs, [float(s["rss_bytes"]) for s in second])
        out["second_half_slope_bytes_per_request"] = per_request
        served = xs[-1] - float(first[-1].get("requests") or 0)
        if served > 0:
            out["second_half_requests"] = int(served)
            out["detectable_leak_bytes_per_request"] = allowed / served
    per_second = slope([s["t"] for s in second], [float(s["rss_bytes"]) for s in second])
    out["second_half_slope_kib_per_s"] = None if per_second is None else per_second / 1024
    flat = growth <= allowed
    why = (
        f"the second half's peak is {growth / MIB:+.2f} MiB from the first half's "
        f"({'within' if flat else 'beyond'} the {allowed / MIB:.2f} MiB allowed)"
    )
    return {**out, "verdict": "flat" if flat else "growing", "why": why}
