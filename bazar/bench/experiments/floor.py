"""7. ``floor``: purchases through a purchase's message chain with Bazar's work left out
(``bazar.bench.floor``), with and without one durable SQLite row per write, next to
Bazar's own purchases in the same minutes: the least a purchase could take here.

The load: ``_drive``; the statistics: ``floor_rows`` (pure); the words: ``floor_caption``,
``floor_notes``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bazar.bench.cluster import ClusterInfo, start_floor
from bazar.bench.experiments.context import BUY_BODY, Context, Run, cache_label, sample_rows, summary_row
from bazar.bench.load import Call
from bazar.bench.stats import ratio
from bazar.launch import StartError

FLOOR_WARM_UP = 50  # requests through each chain before it is timed (connections, page cache)
FLOOR_CHAINS = (
    (False, "floor: the messages alone"),
    (True, "floor: the messages + one durable row per write"),
)
DURABLE = dict(FLOOR_CHAINS)[True]
BAZAR = "Bazar, cache "  # Bazar's own row: "Bazar, cache on" (or off)


@dataclass
class FloorRuns:
    floors: dict[bool, Run] = field(default_factory=dict)  # by durable, in FLOOR_CHAINS order
    unmeasured: list[tuple[str, str]] = field(default_factory=list)  # (chain, why)
    bazar: Run | None = None

    @property
    def runs(self) -> list[Run]:
        return [*self.floors.values(), *([self.bazar] if self.bazar is not None else [])]


async def _drive(ctx: Context, stage: str) -> FloorRuns:
    """A purchase's message chain run by seven processes that do nothing else (see
    ``bazar.bench.floor``), then Bazar's purchases, in the same minutes and the same way:
    one client, sequential POSTs. What Bazar takes beyond the durable floor is its own work."""
    s = ctx.settings
    cluster = ctx.cache or ctx.nocache
    measured = FloorRuns()

    async def timed(target: ClusterInfo, label: str, path: str) -> Run:
        def buy(i: int) -> Call:
            return Call("buy", "POST", path, BUY_BODY)

        await ctx.loop(target, f"{stage} {label}, warm-up", buy, min(FLOOR_WARM_UP, s.samples), 1)
        return Run({"chain": label}, await ctx.loop(target, f"{stage} {label}", buy, s.samples, 1))

    for durable, label in FLOOR_CHAINS:
        try:
            started, port = start_floor(ctx.processes, ctx.workdir, durable)
        except StartError as e:
            measured.unmeasured.append((label, str(e)))
            ctx.progress.say(f"{stage} {label}: not measured: {e}")
            continue
        try:
            target = ClusterInfo(label, f"http://127.0.0.1:{port}", None)
            measured.floors[durable] = await timed(target, label, "/")
        finally:
            for process in reversed(started):  # stopped before the next chain: the cores are few
                process.stop()
                ctx.processes.started.remove(process)
    if cluster is not None:
        await ctx.top_up(cluster)
        path = f"/bazar/purchase/{ctx.book_ids[0]}"
        measured.bazar = await timed(cluster, f"{BAZAR}{cache_label(cluster)}", path)
    return measured


async def floor(ctx: Context, stage: str) -> dict[str, Any]:
    measured = await _drive(ctx, stage)
    rows = floor_rows(measured.runs)
    return {
        "caption": floor_caption(ctx.settings.samples),
        "samples": ctx.settings.samples,
        "rows": rows,
        "notes": floor_notes(measured.unmeasured, rows),
        "raw": [row for run in measured.runs for row in sample_rows(run.result.samples, **run.labels)],
    }


def durable_p50(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The durable floor's p50 (None if it was not measured)."""
    return next((row["p50_ms"] for row in rows if row["chain"] == DURABLE), None)


def floor_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """A summary row per run, each with its p50 as a multiple of the durable floor's (``of_floor``)."""
    rows = [summary_row(run.result.samples, **run.labels) for run in runs]
    floor_p50 = durable_p50(rows)
    for row in rows:
        row["of_floor"] = ratio(row["p50_ms"], floor_p50)
    return rows


def floor_notes(unmeasured: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Chains not measured, failed requests, and how far Bazar's p50 is above the durable floor's."""
    notes = [f"{label}: not measured: {why}" for label, why in unmeasured]
    notes += [f"{row['chain']}: {row['errors']} requests were not 2xx" for row in rows if row["errors"]]
    bazar = next((row for row in rows if row["chain"].startswith(BAZAR)), None)
    floor_p50 = durable_p50(rows)
    if bazar is not None and bazar["p50_ms"] is not None and floor_p50 is not None:
        notes.append(
            f"Bazar's purchase p50 is {bazar['p50_ms'] - floor_p50:.2f} ms above the durable floor's "
            f"({bazar['of_floor']:.2f} times it): Bazar's own work on a purchase's critical path"
        )
    return notes


def floor_caption(samples: int) -> str:
    return (
        f"{samples:,} sequential POSTs per row from one client, after {FLOOR_WARM_UP} untimed. A floor "
        "is seven processes passing a purchase's messages as Bazar does (client → front end over HTTP, "
        "then over AMP, one connection per peer: front end → order sequencer → catalog sequencer → its 2 "
        "followers and the front end, then the order sequencer → its 2 followers) and doing nothing else; "
        "the durable floor also commits one SQLite row per write at each of the six replicas (WAL, "
        "synchronous=FULL, through a one-connection adbapi pool). Bazar: POST /bazar/purchase/<id> on "
        "the cluster, right after. Of floor = p50 / the durable floor's p50."
    )
