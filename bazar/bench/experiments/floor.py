"""7. ``floor``: purchases through a purchase's message chain with Bazar's work left out
(``bazar.bench.floor``), with and without one durable SQLite row per write, next to
Bazar's own purchases in the same minutes: the least a purchase could take here."""

from __future__ import annotations

from typing import Any

from bazar.bench.cluster import ClusterInfo, start_floor
from bazar.bench.experiments.context import BUY_BODY, Context, cache_label, sample_rows, summary_row
from bazar.bench.load import Call
from bazar.bench.stats import ratio
from bazar.launch import StartError

FLOOR_WARM_UP = 50  # requests through each chain before it is timed (connections, page cache)
FLOOR_CHAINS = (
    (False, "floor: the messages alone"),
    (True, "floor: the messages + one durable row per write"),
)


async def floor(ctx: Context, stage: str) -> dict[str, Any]:
    """A purchase's message chain run by seven processes that do nothing else (see
    ``bazar.bench.floor``), then Bazar's purchases, in the same minutes and the same way:
    one client, sequential POSTs. What Bazar takes beyond the durable floor is its own work."""
    s = ctx.settings
    cluster = ctx.cache or ctx.nocache
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    notes: list[str] = []

    async def timed(target: ClusterInfo, label: str, path: str) -> dict[str, Any]:
        def buy(i: int) -> Call:
            return Call("buy", "POST", path, BUY_BODY)

        await ctx.loop(target, f"{stage} {label}, warm-up", buy, min(FLOOR_WARM_UP, s.samples), 1)
        result = await ctx.loop(target, f"{stage} {label}", buy, s.samples, 1)
        raw.extend(sample_rows(result.samples, chain=label))
        row = summary_row(result.samples, chain=label)
        rows.append(row)
        return row

    floors: dict[bool, dict[str, Any]] = {}
    for durable, label in FLOOR_CHAINS:
        try:
            started, port = start_floor(ctx.processes, ctx.workdir, durable)
        except StartError as e:
            notes.append(f"{label}: not measured: {e}")
            ctx.progress.say(f"{stage} {label}: not measured: {e}")
            continue
        try:
            floors[durable] = await timed(ClusterInfo(label, f"http://127.0.0.1:{port}", None), label, "/")
        finally:
            for process in reversed(started):  # stopped before the next chain: the cores are few
                process.stop()
                ctx.processes.started.remove(process)
    bazar = None
    if cluster is not None:
        await ctx.top_up(cluster)
        path = f"/bazar/purchase/{ctx.book_ids[0]}"
        bazar = await timed(cluster, f"Bazar, cache {cache_label(cluster)}", path)
    floor_p50 = floors[True]["p50_ms"] if True in floors else None
    for row in rows:
        row["of_floor"] = ratio(row["p50_ms"], floor_p50)
        if row["errors"]:
            notes.append(f"{row['chain']}: {row['errors']} requests were not 2xx")
    if bazar is not None and bazar["p50_ms"] is not None and floor_p50 is not None:
        notes.append(
            f"Bazar's purchase p50 is {bazar['p50_ms'] - floor_p50:.2f} ms above the durable floor's "
            f"({bazar['of_floor']:.2f} times it): Bazar's own work on a purchase's critical path"
        )
    return {
        "caption": (
            f"{s.samples:,} sequential POSTs per row from one client, after {FLOOR_WARM_UP} untimed. A floor "
            "is seven processes passing a purchase's messages as Bazar does (client → front end over HTTP, "
            "treq → order sequencer → catalog sequencer → its 2 followers and the front end, then the order "
            "sequencer → its 2 followers, over AMP) and doing nothing else; the durable floor also commits "
            "one SQLite row per write at each of the six replicas (WAL, synchronous=FULL, through a "
            "one-connection adbapi pool). Bazar: POST /bazar/purchase/<id> on the cluster, right after. "
            "Of floor = p50 / the durable floor's p50."
        ),
        "samples": s.samples,
        "rows": rows,
        "notes": notes,
        "raw": raw,
    }
