"""8. ``writes``: purchases and price updates at 1, 10 and 50 concurrent clients: writes per
second, latency, and the CPU time one write costs the whole cluster (the seven processes'
``process_cpu_seconds_total``, before and after, over the writes answered 2xx).

Why: a write's cost is CPU on every hop, not cores or disks (issue 16); under load group
commit should make each write cheaper, and a lone write is bounded by the durable floor
(``floor``). The load average is noted with every run: on a shared machine it says how far
the figures can be trusted.

The load: ``_drive``; the statistics: ``writes_rows`` (pure); the words: ``writes_caption``,
``writes_notes``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bazar.bench.cluster import ClusterInfo, cpu_seconds
from bazar.bench.experiments.context import BUY_BODY, CPU_PREFIX, Context, summary_row
from bazar.bench.experiments.latency import cpu_per_request
from bazar.bench.load import Call, LoopResult

WRITE_CLIENTS = (1, 10, 50)
WRITES_WARM_UP = 50  # writes before each operation's runs (connections, caches, the JIT-less warm-up)
ENDLESS = 10**9  # a run is bounded by time (``Settings.duration``), not by a count
PURCHASE = "purchase"
PRICE = "price update"


def price_of(i: int) -> float:
    """The i-th price update's price: a new one each time, so each is a real write."""
    return 10 + (i % 400) / 4


def write_plan(op: str, book_ids: Sequence[int]) -> Callable[[int], Call]:
    """The i-th write of ``op``, over ``book_ids`` in turn."""
    if op == PURCHASE:
        return lambda i: Call("buy", "POST", f"/bazar/purchase/{book_ids[i % len(book_ids)]}", BUY_BODY)
    return lambda i: Call(
        "price",
        "PUT",
        f"/bazar/update_price/{book_ids[i % len(book_ids)]}",
        b'{"price":%.2f}' % price_of(i),
    )


@dataclass(frozen=True)
class WriteRun:
    op: str
    clients: int
    result: LoopResult
    cpu_before: Mapping[str, float] | None
    cpu_after: Mapping[str, float] | None
    load: tuple[float, float, float] | None  # the load average as the run ended


@dataclass
class WriteRuns:
    runs: list[WriteRun] = field(default_factory=list)


# -- the load --------------------------------------------------------------------------------


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


async def _drive(ctx: Context, stage: str, clients: Sequence[int] = WRITE_CLIENTS) -> WriteRuns:
    """Each operation at each number of clients, for ``Settings.duration`` seconds, closed loop."""
    cluster = ctx.cache or ctx.nocache
    assert cluster is not None
    measured = WriteRuns()
    await ctx.top_up(cluster)
    for op in (PURCHASE, PRICE):
        plan = write_plan(op, ctx.book_ids)
        await ctx.loop(cluster, f"{stage} {op}s, warm-up", plan, WRITES_WARM_UP, 1)
        for n in clients:
            measured.runs.append(await timed_run(ctx, cluster, f"{stage} {op}s, {n} clients", op, plan, n))
    await restore_prices(ctx, cluster)
    return measured


async def timed_run(
    ctx: Context, cluster: ClusterInfo, label: str, op: str, plan: Callable[[int], Call], clients: int
) -> WriteRun:
    before = cpu_seconds(cluster)
    result = await ctx.loop(cluster, label, plan, ENDLESS, clients, max_seconds=ctx.settings.duration)
    return WriteRun(op, clients, result, before, cpu_seconds(cluster), load_average())


async def restore_prices(ctx: Context, cluster: ClusterInfo) -> None:
    for book in ctx.books:
        await ctx.json(cluster, "PUT", f"/bazar/update_price/{book['id']}", {"price": book["price"]})


async def writes(ctx: Context, stage: str) -> dict[str, Any]:
    measured = await _drive(ctx, stage)
    rows = writes_rows(measured.runs)
    return {
        "caption": writes_caption(ctx.settings.duration),
        "rows": rows,
        "notes": writes_notes(rows),
    }


# -- the statistics --------------------------------------------------------------------------


def writes_rows(runs: Sequence[WriteRun]) -> list[dict[str, Any]]:
    """One row per run: latency of the 2xx answers, writes per second, the CPU milliseconds
    one 2xx write cost each process (``cpu_ms_<name>``) and all of them (``cpu_ms``)."""
    rows = []
    for run in runs:
        ok = sum(1 for sample in run.result.samples if sample.ok)
        row = summary_row(run.result.samples, op=run.op, clients=run.clients)
        row["writes_per_s"] = ok / run.result.elapsed if run.result.elapsed > 0 else None
        each = cpu_per_request(run.cpu_before, run.cpu_after, ok)
        for name, ms in each.items():
            row[f"{CPU_PREFIX}{name}"] = ms
        row["cpu_ms"] = sum(each.values()) if each else None
        row["load"] = None if run.load is None else round(run.load[0], 2)
        rows.append(row)
    return rows


# -- the words -------------------------------------------------------------------------------


def writes_caption(duration: float) -> str:
    return (
        f"Each row: {duration:g} s of writes from that many clients in a closed loop (each sends its "
        "next write when the last is answered), over books 0-6 in turn, after a warm-up; purchases "
        "first, then price updates (each a new price; the old prices are put back afterwards). "
        "CPU ms per write: the seven processes' CPU time over the run (process_cpu_seconds_total) "
        "divided by the writes answered 2xx. Load: the 1-minute load average as the run ended."
    )


def writes_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Failed writes, runs without a CPU reading, and where one write's CPU time went."""
    notes = []
    for row in rows:
        where = f"{row['op']}s, {row['clients']} clients"
        if row["errors"]:
            notes.append(f"{where}: {row['errors']} writes were not 2xx ({row['status_409']} of them 409)")
        if row["cpu_ms"] is None:
            notes.append(f"{where}: no CPU reading (a cluster not started by the benchmark)")
            continue
        each = ", ".join(
            f"{key[len(CPU_PREFIX) :]} {ms:.2f}" for key, ms in row.items() if key.startswith(CPU_PREFIX)
        )
        notes.append(f"{where}: CPU ms per write by process: {each}")
    return notes
