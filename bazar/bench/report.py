"""Statistics, Markdown tables, CSV/JSON files and plots for the benchmark's results.

Everything but the plots is pure (numbers in, text or files out), so it is unit-tested
without a cluster. Plots need matplotlib (the ``bench`` extra); without it they are skipped
with one line saying how to get them, and the rest of the output is unaffected.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MISSING = "—"


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating linearly between ranks (numpy's default).

    Interpolation rather than nearest rank so that p99 of 1,000 samples does not jump by a
    whole sample when one more arrives.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class Summary:
    """Latency of one kind of request, in milliseconds (None when there were no samples)."""

    n: int
    errors: int
    avg_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    min_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_ms: Sequence[float], errors: int = 0) -> Summary:
    """Count, mean and percentiles of successful requests; ``errors`` counts the failed ones."""
    if not latencies_ms:
        return Summary(0, errors, None, None, None, None, None, None)
    return Summary(
        n=len(latencies_ms),
        errors=errors,
        avg_ms=sum(latencies_ms) / len(latencies_ms),
        p50_ms=percentile(latencies_ms, 50),
        p90_ms=percentile(latencies_ms, 90),
        p99_ms=percentile(latencies_ms, 99),
        min_ms=min(latencies_ms),
        max_ms=max(latencies_ms),
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


# -- formatting ----------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    """Milliseconds with precision that suits the magnitude (0.412, 3.51, 27.3, 1203)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}x"


def fmt_rounds(values: Sequence[float] | None) -> str:
    return MISSING if not values else " / ".join(fmt_count(v) for v in values)


def fmt_percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f} %"


def fmt_count(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:,.0f}"


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[bool] = ()
) -> str:
    """A GitHub-flavoured Markdown table, padded so it also reads well as plain text.

    ``numeric[i]`` right-aligns column ``i``. A ``|`` in a cell is escaped so it cannot
    split the cell.
    """
    body = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells, the table has {len(headers)} columns")
    widths = [max([len(h), 3, *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    right = [i < len(numeric) and numeric[i] for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right, strict=True)]
    return "\n".join([line(list(headers)), line(rule), *(line(row) for row in body)])


# -- the tables of each experiment -----------------------------------------------------------


def _row(rows: Sequence[Mapping[str, Any]], **match: Any) -> Mapping[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def latency_table(result: Mapping[str, Any]) -> str:
    rows = result["rows"]
    out = []
    for op in result["operations"]:
        off = _row(rows, operation=op, cache="off") or {}
        on = _row(rows, operation=op, cache="on") or {}
        out.append(
            [
                op,
                fmt_ms(off.get("avg_ms")),
                fmt_ms(off.get("p50_ms")),
                fmt_ms(off.get("p99_ms")),
                fmt_ms(on.get("avg_ms")),
                fmt_ms(on.get("p50_ms")),
                fmt_ms(on.get("p99_ms")),
                fmt_percent(on.get("hit_ratio")),
                fmt_ratio(ratio(off.get("avg_ms"), on.get("avg_ms"))),
                fmt_ratio(ratio(off.get("p99_ms"), on.get("p99_ms"))),
            ]
        )
    headers = [
        "request",
        "no cache avg",
        "no cache p50",
        "no cache p99",
        "cache avg",
        "cache p50",
        "cache p99",
        "cache hits",
        "speed-up avg",
        "speed-up p99",
    ]
    return markdown_table(headers, out, [False, *[True] * 9])


def consistency_table(result: Mapping[str, Any]) -> str:
    out = [
        [
            row["step"],
            fmt_count(row.get("n")),
            fmt_ms(row.get("avg_ms")),
            fmt_ms(row.get("p50_ms")),
            fmt_ms(row.get("p99_ms")),
            fmt_ms(row.get("max_ms")),
        ]
        for row in result["rows"]
    ]
    return markdown_table(["step", "n", "avg", "p50", "p99", "max"], out, [False, *[True] * 5])


def sweep_table(result: Mapping[str, Any]) -> str:
    rows = result["rows"]
    out = []
    for p in result["probabilities"]:
        cells: list[str] = [f"{p:.1f}"]
        for op in ("query", "buy"):
            for cache in ("on", "off"):
                row = _row(rows, p=p, operation=op, cache=cache) or {}
                cells.append(f"{fmt_ms(row.get('avg_ms'))} / {fmt_ms(row.get('p99_ms'))}")
        on_query = _row(rows, p=p, operation="query", cache="on") or {}
        cells.append(fmt_percent(on_query.get("hit_ratio")))
        conflicts = sum(int(r.get("status_409") or 0) for r in rows if r.get("p") == p)
        cells.append(str(conflicts))
        out.append(cells)
    headers = [
        "p(buy)",
        "query, cache (avg / p99)",
        "query, no cache",
        "buy, cache",
        "buy, no cache",
        "query hits",
        "409s",
    ]
    return markdown_table(headers, out, [True] * len(headers))


def lru_table(result: Mapping[str, Any]) -> str:
    out = []
    for phase in result["phases"]:
        out.append(
            [
                str(phase["phase"]),
                ", ".join(phase["hot_keys"]),
                fmt_count(phase.get("hits")),
                fmt_count(phase.get("misses")),
                fmt_percent(phase.get("hit_ratio")),
                fmt_count(phase.get("evictions")),
                fmt_count(phase.get("invalidations")),
            ]
        )
    headers = ["phase", "hottest keys", "hits", "misses", "hit ratio", "evictions", "invalidations"]
    return markdown_table(headers, out, [True, False, True, True, True, True, True])


Column = tuple[str, str, Callable[[Any], str]]  # header, the row's key, how its value is shown


def columns_table(rows: Sequence[Mapping[str, Any]], label: Column, columns: Sequence[Column]) -> str:
    """One line per row: ``label`` left-aligned, then ``columns`` right-aligned."""
    out = [[fmt(row.get(key)) for _, key, fmt in (label, *columns)] for row in rows]
    headers = [header for header, _, _ in (label, *columns)]
    return markdown_table(headers, out, [False, *[True] * len(columns)])


def throughput_table(result: Mapping[str, Any]) -> str:
    return columns_table(
        result["rows"],
        ("workload", "workload", str),
        [
            ("req/s", "rps", fmt_count),
            ("p50", "p50_ms", fmt_ms),
            ("p99", "p99_ms", fmt_ms),
            ("requests", "requests", fmt_count),
            ("non-2xx", "non_2xx", fmt_count),
            ("socket errors", "socket_errors", fmt_count),
            ("of ceiling", "of_ceiling", fmt_percent),
            ("each round's req/s", "rps_rounds", fmt_rounds),
        ],
    )


def floor_table(result: Mapping[str, Any]) -> str:
    return columns_table(
        result["rows"],
        ("purchases through", "chain", str),
        [
            ("n", "n", fmt_count),
            ("not 2xx", "errors", fmt_count),
            ("avg (ms)", "avg_ms", fmt_ms),
            ("p50 (ms)", "p50_ms", fmt_ms),
            ("p99 (ms)", "p99_ms", fmt_ms),
            ("of floor", "of_floor", fmt_ratio),
        ],
    )


def _mib(value: float | None, sign: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.2f} MiB" if sign else f"{value:.1f} MiB"


def memory_table(result: Mapping[str, Any]) -> str:
    """The front end's memory over the run (one figure a line), then the requests that made it."""
    m = result["memory"]
    pct = m.get("growth_pct")
    growth = _mib(m.get("growth_mib"), sign=True) + ("" if pct is None else f" ({pct:+.1f} %)")
    half_pct = m.get("second_half_growth_pct")
    half = _mib(m.get("second_half_growth_mib"), sign=True) + (
        "" if half_pct is None else f" ({half_pct:+.1f} %)"
    )
    if m.get("allowed_growth_mib") is not None:
        half += f", allowed {m['allowed_growth_mib']:.2f} MiB"
    entries = m.get("cache_entries_max")
    capacity = m.get("cache_capacity")
    cache = f"{fmt_count(entries)} (capacity {fmt_count(capacity)})"
    if m.get("cache_within_capacity") is False:
        cache += " — OVER CAPACITY"
    fds = MISSING
    if m.get("open_fds_start") is not None:
        fds = f"{m['open_fds_start']} → {m['open_fds_end']} (max {m['open_fds_max']})"
    duration = m.get("run_seconds")
    requests = m.get("requests")
    served = fmt_count(requests)
    if duration:
        served += f" in {duration:.1f} s ({(requests or 0) / duration:,.0f} req/s)"
    figures = [
        ["verdict", f"**{m.get('verdict', MISSING)}**"],
        ["RSS after the warm-up", _mib(m.get("start_mib"))],
        ["RSS max", _mib(m.get("max_mib"))],
        ["RSS at the end", _mib(m.get("end_mib"))],
        ["growth, start → end", growth],
        ["second half's peak - first half's", half],
        ["cache entries, max", cache],
        ["open descriptors", fds],
        ["requests (after the warm-up)", served],
        ["memory samples", fmt_count(m.get("samples"))],
    ]
    parts = [markdown_table(["figure", "value"], figures, [False, True])]
    rows = result.get("rows") or []
    if rows:
        ops = [
            [
                row["operation"],
                fmt_count(row.get("n")),
                fmt_count(row.get("errors")),
                fmt_ms(row.get("avg_ms")),
                fmt_ms(row.get("p99_ms")),
                fmt_percent(row.get("hit_ratio")),
            ]
            for row in rows
        ]
        headers = ["request", "n", "not 2xx", "avg (ms)", "p99 (ms)", "cache hits"]
        parts.append(markdown_table(headers, ops, [False, *[True] * 5]))
    return "\n\n".join(parts)


_TITLES = {
    "latency": "1. Response time with and without the cache (ms)",
    "consistency": "2. Writes that invalidate the cache (ms)",
    "sweep": "3. Latency by purchase probability (ms, avg / p99)",
    "lru": "4. The LRU cache over time",
    "throughput": "5. Throughput",
    "memory": "6. The front end's memory under a long run",
    "floor": "7. A purchase's floor: its messages without Bazar's work",
}
_TABLES = {
    "latency": latency_table,
    "consistency": consistency_table,
    "sweep": sweep_table,
    "lru": lru_table,
    "throughput": throughput_table,
    "memory": memory_table,
    "floor": floor_table,
}


def markdown_report(results: Mapping[str, Any]) -> str:
    """Every finished experiment's table under a heading, with its one-line caption and notes."""
    parts = []
    machine = results.get("machine", {})
    if machine:
        parts.append(
            f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, "
            f"Python {machine.get('python', '?')}, Twisted {machine.get('twisted', '?')}, "
            f"{machine.get('date', '?')}."
        )
    for note in results.get("notes", []):
        parts.append(f"Note: {note}")
    for name, result in results.get("experiments", {}).items():
        parts.append(f"#### {_TITLES.get(name, name)}")
        if result.get("skipped"):
            parts.append(f"Skipped: {result['skipped']}")
            continue
        if result.get("caption"):
            parts.append(result["caption"])
        parts.append(_TABLES[name](result))
        for note in result.get("notes", []):
            parts.append(f"- {note}")
    return "\n\n".join(parts) + "\n"


# -- files ---------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null, so every JSON parser reads the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (a reader never sees half a file, even after Ctrl-C)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """One row per mapping; the columns are every key seen, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    os.replace(tmp, path)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else round(value, 6)
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return value


# -- plots ---------------------------------------------------------------------------------

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
        rows = [_row(result["rows"], operation=op, cache=cache) or {} for op in ops]
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
            rows = [(p, _row(result["rows"], p=p, operation=op, cache=cache)) for p in ps]
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
        f"(start {_mib(m.get('start_mib'))}, max {_mib(m.get('max_mib'))}, end {_mib(m.get('end_mib'))})"
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
