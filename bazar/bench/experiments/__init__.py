"""The lab report's experiments, each repeated enough times for percentiles.

1. ``latency``: info, search and buy, one client, with and without the cache.
2. ``consistency``: price updates that must invalidate cached entries; the next read must miss
   and show the new price.
3. ``sweep``: a mix of queries and purchases (probability p of a purchase) from concurrent
   clients, with and without the cache.
4. ``lru``: the cache's counters over time under a skewed load whose hot keys shift.
5. ``throughput``: wrk against cache hits, misses and purchases, next to a bare twisted.web
   server sending the same bytes (the machine's ceiling).
6. ``memory``: the front end's resident memory over a long run of reads of ever new cache
   keys (and price updates): it must stay flat, bounded by the cache's size.
7. ``floor``: purchases through a purchase's message chain with Bazar's work left out
   (``bazar.bench.floor``), with and without one durable SQLite row per write, next to
   Bazar's own purchases in the same minutes: the least a purchase could take here.
8. ``writes``: purchases and price updates at 1, 10 and 50 clients: writes per second,
   latency, and the CPU time one write costs all seven processes.
9. ``frontends``: 1, 2 and 4 front ends on one shared port, each beside as many bare
   twisted.web processes sharing a port: hits and misses per second; a price update's p50
   with the fewest and the most front ends.

Each returns a JSON-able dict: ``rows`` (what the table and CSV show), a ``caption``,
``notes`` (anything the numbers alone would hide) and, under ``raw``, per-request samples
for the ``*_samples.csv`` files.
"""

from __future__ import annotations

from bazar.bench.experiments import (
    consistency,
    floor,
    frontends,
    latency,
    lru,
    memory,
    sweep,
    throughput,
    writes,
)
from bazar.bench.experiments.context import (
    EXPERIMENTS,
    LAB_BOOKS,
    Context,
    Settings,
    elections,
    summary_row,
)
from bazar.bench.experiments.latency import cpu_note
from bazar.bench.experiments.lru import phase_order, zipf_weights
from bazar.bench.experiments.memory import (
    MEMORY_REQUESTS_PER_SAMPLE,
    MEMORY_SEARCH_SHARE,
    MEMORY_WRITE_SHARE,
    memory_plan,
)
from bazar.bench.experiments.throughput import lower_median, median_round, of_hits, rounds_notes

RUNNERS = {
    "latency": latency.latency,
    "consistency": consistency.consistency,
    "sweep": sweep.sweep,
    "lru": lru.lru,
    "throughput": throughput.throughput,
    "memory": memory.memory,
    "floor": floor.floor,
    "writes": writes.writes,
    "frontends": frontends.frontends,
}
assert tuple(RUNNERS) == EXPERIMENTS

__all__ = [
    "EXPERIMENTS",
    "LAB_BOOKS",
    "MEMORY_REQUESTS_PER_SAMPLE",
    "MEMORY_SEARCH_SHARE",
    "MEMORY_WRITE_SHARE",
    "RUNNERS",
    "Context",
    "Settings",
    "cpu_note",
    "elections",
    "lower_median",
    "median_round",
    "memory_plan",
    "of_hits",
    "phase_order",
    "rounds_notes",
    "summary_row",
    "zipf_weights",
]
