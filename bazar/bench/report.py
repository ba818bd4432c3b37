"""Markdown tables and CSV/JSON files for the benchmark's results (statistics: ``stats``;
plots: ``plots``).

Pure (numbers in, text or files out), so it is unit-tested without a cluster.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bazar.bench.stats import ratio

MISSING = "—"


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


def fmt_cores(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


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


def find_row(rows: Sequence[Mapping[str, Any]], **match: Any) -> Mapping[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def latency_table(result: Mapping[str, Any]) -> str:
    rows = result["rows"]
    out = []
    for op in result["operations"]:
        off = find_row(rows, operation=op, cache="off") or {}
        on = find_row(rows, operation=op, cache="on") or {}
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
                row = find_row(rows, p=p, operation=op, cache=cache) or {}
                cells.append(f"{fmt_ms(row.get('avg_ms'))} / {fmt_ms(row.get('p99_ms'))}")
        on_query = find_row(rows, p=p, operation="query", cache="on") or {}
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


def writes_table(result: Mapping[str, Any]) -> str:
    return columns_table(
        result["rows"],
        ("writes", "op", str),
        [
            ("clients", "clients", fmt_count),
            ("writes/s", "writes_per_s", fmt_count),
            ("not 2xx", "errors", fmt_count),
            ("p50 (ms)", "p50_ms", fmt_ms),
            ("p99 (ms)", "p99_ms", fmt_ms),
            ("CPU ms per write", "cpu_ms", fmt_ms),
            ("load", "load", fmt_ms),
        ],
    )


def fmt_mib(value: float | None, sign: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.2f} MiB" if sign else f"{value:.1f} MiB"


def memory_table(result: Mapping[str, Any]) -> str:
    """The front end's memory over the run (one figure a line), then the requests that made it."""
    m = result["memory"]
    pct = m.get("growth_pct")
    growth = fmt_mib(m.get("growth_mib"), sign=True) + ("" if pct is None else f" ({pct:+.1f} %)")
    half_pct = m.get("second_half_growth_pct")
    half = fmt_mib(m.get("second_half_growth_mib"), sign=True) + (
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
        ["RSS after the warm-up", fmt_mib(m.get("start_mib"))],
        ["RSS max", fmt_mib(m.get("max_mib"))],
        ["RSS at the end", fmt_mib(m.get("end_mib"))],
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


def frontends_table(result: Mapping[str, Any]) -> str:
    parts = [
        columns_table(
            result["rows"],
            ("front ends", "frontends", fmt_count),
            [
                ("ceiling req/s", "ceiling_rps", fmt_count),
                ("hits req/s", "hits_rps", fmt_count),
                ("hits of ceiling", "hits_of_ceiling", fmt_percent),
                ("of them hits", "hit_fraction", fmt_percent),
                ("hits speed-up", "hits_speedup", fmt_ratio),
                ("misses req/s", "misses_rps", fmt_count),
                ("misses of ceiling", "misses_of_ceiling", fmt_percent),
                ("misses speed-up", "misses_speedup", fmt_ratio),
                ("ceiling speed-up", "ceiling_speedup", fmt_ratio),
            ],
        ),
        columns_table(
            result["rows"],
            ("front ends: CPU", "frontends", fmt_count),
            [
                ("ceiling cores", "ceiling_cores", fmt_cores),
                ("ceiling req per CPU s", "ceiling_per_cpu_second", fmt_count),
                ("hits cores", "hits_cores", fmt_cores),
                ("hits per CPU s", "hits_per_cpu_second", fmt_count),
                ("misses cores", "misses_cores", fmt_cores),
                ("misses per CPU s", "misses_per_cpu_second", fmt_count),
            ],
        ),
    ]
    if result.get("prices"):
        parts.append(
            columns_table(
                result["prices"],
                ("price updates, front ends", "frontends", fmt_count),
                [
                    ("n", "n", fmt_count),
                    ("not 2xx", "errors", fmt_count),
                    ("p50 (ms)", "p50_ms", fmt_ms),
                    ("p99 (ms)", "p99_ms", fmt_ms),
                ],
            )
        )
    return "\n\n".join(parts)


_TITLES = {
    "latency": "1. Response time with and without the cache (ms)",
    "consistency": "2. Writes that invalidate the cache (ms)",
    "sweep": "3. Latency by purchase probability (ms, avg / p99)",
    "lru": "4. The LRU cache over time",
    "throughput": "5. Throughput",
    "memory": "6. The front end's memory under a long run",
    "floor": "7. A purchase's floor: its messages without Bazar's work",
    "writes": "8. Writes under load: throughput and CPU time per write",
    "frontends": "9. Several front ends on one port",
}
_TABLES = {
    "latency": latency_table,
    "consistency": consistency_table,
    "sweep": sweep_table,
    "lru": lru_table,
    "throughput": throughput_table,
    "memory": memory_table,
    "floor": floor_table,
    "writes": writes_table,
    "frontends": frontends_table,
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
