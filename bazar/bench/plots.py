"""The benchmark's plots, one per experiment.

They need matplotlib (the ``bench`` extra); without it ``load_pyplot`` returns None and the
plots are skipped with one line saying how to get them, the rest of the output unaffected.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bazar.bench.report import find_row, fmt_mib, fmt_ms

MATPLOTLIB_HINT = "pip install 'bazar[bench]' (or: pip install 'matplotlib>=3.8')"


def load_pyplot() -> Any | None:
    """matplotlib's pyplot on the Agg backend (no display needed), or None if not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    ops = list(result["operations"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for offset, cache, label, color in (
        (-width / 2, "off", "no cache", "#c44e52"),
        (width / 2, "on", "cache", "#4c72b0"),
    ):
        rows = [find_row(result["rows"], operation=op, cache=cache) or {} for op in ops]
        xs = [i + offset for i in range(len(ops))]
        avg = [r.get("avg_ms") or 0 for r in rows]
        p99 = [r.get("p99_ms") or 0 for r in rows]
        bars = ax.bar(xs, avg, width, label=f"{label}: avg", color=color)
        ax.scatter(xs, p99, marker="_", s=400, color="black", zorder=3)
        for bar, value in zip(bars, avg, strict=True):
            if value:
                ax.annotate(
                    fmt_ms(value),
                    (bar.get_x() + bar.get_width() / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.scatter([], [], marker="_", s=200, color="black", label="p99")
    ax.set_xticks(range(len(ops)), ops)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel("response time (ms, log scale)")
    ax.set_title(
        "Bazar: response time with and without the front-end cache "
        f"({result.get('samples', '?')} samples each)"
    )
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_consistency(
    plt: Any, result: Mapping[str, Any], samples: Mapping[str, Sequence[float]], path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for step, values in samples.items():
        if not values:
            continue
        ordered = sorted(values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.plot(ordered, ys, label=step)
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Writes that invalidate the cache, and the reads right after them (CDF)")
    ax.legend(fontsize=8)
    ax.grid(which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    """Queries and purchases side by side (their scales differ tenfold): avg solid, p99 dotted."""
    ps = list(result["probabilities"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, op, title in zip(axes, ("query", "buy"), ("queries (info, search)", "purchases"), strict=True):
        for cache, color, name in (("on", "#4c72b0", "cache"), ("off", "#c44e52", "no cache")):
            rows = [(p, find_row(result["rows"], p=p, operation=op, cache=cache)) for p in ps]
            points = [(p, row) for p, row in rows if row and row.get("avg_ms") is not None]
            if not points:
                continue
            xs = [p for p, _ in points]
            ax.plot(xs, [r["avg_ms"] for _, r in points], color=color, marker="o", label=f"{name}: avg")
            ax.plot(xs, [r["p99_ms"] for _, r in points], color=color, linestyle=":", label=f"{name}: p99")
        ax.set_title(title)
        ax.set_xlabel("probability that a request is a purchase")
        ax.set_ylabel("response time (ms)")
        ax.set_xticks(ps)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Latency as purchases grow ({result.get('concurrency', '?')} concurrent clients)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plain_log_axis(axis: Any) -> None:
    """Log-scale ticks as 0.5, 1, 2, 5, 10 rather than 10^0 and 6x10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def plot_lru(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    snaps = result["snapshots"]
    ts = [s["t"] for s in snaps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for key, color in (
        ("hits", "#55a868"),
        ("misses", "#c44e52"),
        ("evictions", "#8172b3"),
        ("invalidations", "#dd8452"),
    ):
        top.plot(ts, [s[key] for s in snaps], label=key, color=color)
    top.set_ylabel("count since the start")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    window_t, window_ratio = [], []
    for before, after in itertools.pairwise(snaps):
        hits = after["hits"] - before["hits"]
        misses = after["misses"] - before["misses"]
        if hits + misses:
            window_t.append(after["t"])
            window_ratio.append(hits / (hits + misses))
    bottom.plot(window_t, window_ratio, color="#4c72b0")
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("hit ratio per interval")
    bottom.set_xlabel("time (s)")
    bottom.grid(alpha=0.3)
    for phase in result["phases"][1:]:
        for axis in (top, bottom):
            axis.axvline(phase["start_t"], color="grey", linestyle=":")
    top.set_title(
        f"LRU cache (capacity {result.get('capacity', '?')}) under a skewed load "
        "whose hot keys change per phase"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    rows = [r for r in result["rows"] if r.get("rps")]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.7 * max(len(rows), 1)))
    names = [r["workload"] for r in rows]
    values = [r["rps"] for r in rows]
    colors = ["#999999" if "ceiling" in r["workload"] else "#4c72b0" for r in rows]
    bars = ax.barh(names, values, color=colors)
    for bar, row in zip(bars, rows, strict=True):
        label = f"{row['rps']:,.0f} req/s"
        if row.get("of_ceiling") is not None and "ceiling" not in row["workload"]:
            label += f"  ({100 * row['of_ceiling']:.1f} % of ceiling)"
        ax.annotate(
            label,
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            va="center",
            fontsize=8,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.invert_yaxis()
    ax.set_xlabel("requests per second")
    ax.set_xlim(0, max(values or [1]) * 1.45)
    runs = result.get("wrk_args", "wrk")
    if "rounds" in result:
        runs += f"; median of {result['rounds']} rounds"
    ax.set_title(f"Bazar throughput vs a bare twisted.web server\n({runs})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontends(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    """Req/s by front-end count: the ceiling (as many bare processes), hits and misses."""
    rows = result["rows"]
    counts = [row["frontends"] for row in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"ceiling": ("#999999", "--"), "hits": ("#4c72b0", "-"), "misses": ("#dd8452", "-")}
    for workload, (color, line) in styles.items():
        points = [
            (n, row[f"{workload}_rps"]) for n, row in zip(counts, rows, strict=True) if row[f"{workload}_rps"]
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, line, marker="o", color=color, label=workload)
            for x, y in points:
                ax.annotate(f"{y:,.0f}", (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xticks(counts)
    ax.set_xlabel("front ends on one port (and bare twisted.web processes, for the ceiling)")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.set_title(
        "Several front ends on one port\n"
        f"({result.get('wrk_args', 'wrk')}; median of {result.get('rounds', '?')} rounds)"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_memory(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    """RSS over time (warm-up shaded, the flat allowance drawn), and requests served and cache entries."""
    samples = [x for x in result["samples"] if x.get("rss_bytes") is not None]
    m = result["memory"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    ts = [x["t"] for x in samples]
    top.plot(ts, [x["rss_bytes"] / 2**20 for x in samples], color="#4c72b0", marker=".", label="RSS")
    run = [x["t"] for x in samples if x.get("phase") == "run"]
    if run:
        for axis in (top, bottom):
            axis.axvspan(0, run[0], color="#dddddd", alpha=0.6, label="warm-up" if axis is top else None)
    if m.get("first_half_max_mib") is not None and m.get("allowed_growth_mib") is not None:
        top.axhline(m["first_half_max_mib"], color="grey", linestyle=":", label="first half's peak")
        top.axhline(
            m["first_half_max_mib"] + m["allowed_growth_mib"],
            color="#c44e52",
            linestyle="--",
            label="flat up to here (second half's peak)",
        )
    low = min([x["rss_bytes"] / 2**20 for x in samples] or [0])
    high = max([x["rss_bytes"] / 2**20 for x in samples] or [1])
    ceiling = (m.get("first_half_max_mib") or high) + (m.get("allowed_growth_mib") or 0)
    top.set_ylim(max(0, low - 5), max(high, ceiling) + 5)
    top.set_ylabel("resident memory (MiB)")
    top.legend(loc="lower right", fontsize=8)
    top.grid(alpha=0.3)
    top.set_title(
        f"Front-end memory: {m.get('verdict', '?')} "
        f"(start {fmt_mib(m.get('start_mib'))}, max {fmt_mib(m.get('max_mib'))}, "
        f"end {fmt_mib(m.get('end_mib'))})"
    )
    bottom.plot(ts, [x.get("requests") or 0 for x in samples], color="#55a868", label="requests served")
    bottom.set_ylabel("requests served")
    bottom.set_xlabel("time (s)")
    bottom.grid(alpha=0.3)
    entries = [(x["t"], x["cache_entries"]) for x in samples if x.get("cache_entries") is not None]
    if entries:
        right = bottom.twinx()
        right.step(
            [t for t, _ in entries],
            [e for _, e in entries],
            where="post",
            color="#8172b3",
            label="cache entries",
        )
        capacity = m.get("cache_capacity")
        if capacity is not None:
            right.axhline(capacity, color="#8172b3", linestyle=":", label=f"capacity ({capacity})")
            right.set_ylim(0, max(capacity, max(e for _, e in entries)) * 1.2 + 1)
        right.set_ylabel("cache entries")
        handles, labels = bottom.get_legend_handles_labels()
        more, more_labels = right.get_legend_handles_labels()
        bottom.legend(handles + more, labels + more_labels, loc="upper left", fontsize=8)
    else:
        bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
