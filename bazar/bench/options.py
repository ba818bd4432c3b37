"""``bazar-bench``'s command line: its arguments, checked, and the experiments' settings from them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bazar.bench.experiments import (
    EXPERIMENTS,
    MEMORY_REQUESTS_PER_SAMPLE,
    Settings,
)
from bazar.bench.load import Target
from bazar.config import MAX_FRONTENDS

DEFAULT_OUT = "bench-results"


class UsageError(Exception):
    """Bad arguments or an unusable --url: exit status 2, one line."""


# -- arguments -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _probabilities(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or not all(0 <= p <= 1 for p in values):
        raise argparse.ArgumentTypeError(f"probabilities must be within 0..1: {text!r}")
    return values


def _frontend_counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(n) for n in text.split(",") if n.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or not all(1 <= n <= MAX_FRONTENDS for n in values):
        raise argparse.ArgumentTypeError(f"front-end counts must be within 1..{MAX_FRONTENDS}: {text!r}")
    return values


def _experiments(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}"
        )
    return tuple(n for n in EXPERIMENTS if n in names)  # always in the report's order


def _url(text: str) -> str:
    try:
        Target.from_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="bazar-bench",
        description=(
            "Measure a Bazar cluster the way the lab report did, with enough samples for percentiles: "
            "response time with and without the cache, cache consistency under writes, a purchase-"
            "probability sweep, the LRU over time, throughput (with wrk), the front end's memory "
            "over a long run, a purchase's floor on this machine (its messages without Bazar's "
            "work), writes under load (their CPU time per write), and 1, 2 and 4 front ends on one "
            "port. Without --url it starts "
            "its own clusters on free loopback ports and stops them afterwards."
        ),
        epilog=(
            "Note: against --url the benchmark writes: it sets every book's stock to 1,000,000, buys "
            "books and changes prices (restoring them afterwards)."
        ),
    )
    parser.add_argument(
        "--url", type=_url, help="front end of a running cluster (loopback only); default: start one"
    )
    parser.add_argument(
        "--url-nocache",
        type=_url,
        help="with --url: front end of a second cluster with cache_size = 0, for the numbers without a cache",
    )
    parser.add_argument(
        "--samples",
        type=_positive_int,
        default=defaults.samples,
        help="requests per figure (default %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="output directory (default %(default)s)"
    )
    parser.add_argument(
        "--experiments",
        type=_experiments,
        default=EXPERIMENTS,
        help=f"comma-separated subset of {','.join(EXPERIMENTS)} (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=defaults.concurrency,
        help="concurrent clients in the purchase sweep (default %(default)s)",
    )
    parser.add_argument(
        "--probabilities",
        type=_probabilities,
        default=defaults.probabilities,
        help="purchase probabilities of the sweep (default 0,0.2,0.4,0.6,0.8)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=defaults.duration,
        help="seconds per wrk run in the throughput and frontends experiments (default %(default)s)",
    )
    parser.add_argument(
        "--frontends",
        type=_frontend_counts,
        default=defaults.frontends,
        help="front-end counts of the frontends experiment (default 1,2,4)",
    )
    parser.add_argument(
        "--wrk-threads", type=_positive_int, default=defaults.wrk_threads, help="wrk -t (default %(default)s)"
    )
    parser.add_argument(
        "--wrk-connections",
        type=_positive_int,
        default=defaults.wrk_connections,
        help="wrk -c (default %(default)s)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=defaults.max_seconds,
        help="time limit of each measured loop, whatever its count (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=defaults.timeout,
        help="per-request timeout, s (default %(default)s)",
    )
    parser.add_argument(
        "--cache-size",
        type=_positive_int,
        default=5,
        help="cache_size of the cluster with a cache that it starts (default %(default)s, as in the lab)",
    )
    parser.add_argument(
        "--memory-requests",
        type=_positive_int,
        help=(
            f"request bound of the memory experiment's run (default {MEMORY_REQUESTS_PER_SAMPLE} x "
            f"--samples: {MEMORY_REQUESTS_PER_SAMPLE * defaults.samples:,})"
        ),
    )
    parser.add_argument(
        "--memory-seconds",
        type=_positive_float,
        default=defaults.memory_seconds,
        help="time bound of the memory experiment's run, s (default %(default)s; --max-seconds caps it too)",
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        help=(
            "with --url: a file holding the cluster's secret (e.g. bazar-data/secret), so the memory "
            "experiment reads the front end's /metrics; without it, /proc of the process on --url's port"
        ),
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the request mixes (default %(default)s)"
    )
    parser.add_argument("--no-plots", action="store_true", help="do not draw PNGs (no matplotlib needed)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the started clusters' configs, data and logs here (default: a temporary directory)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url_nocache and not args.url:
        parser.error("--url-nocache needs --url (without --url, both clusters are started here)")
    if args.secret_file and not args.url:
        parser.error("--secret-file needs --url (the clusters started here have a secret of their own)")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        samples=args.samples,
        concurrency=args.concurrency,
        probabilities=args.probabilities,
        duration=args.duration,
        wrk_threads=args.wrk_threads,
        wrk_connections=args.wrk_connections,
        max_seconds=args.max_seconds,
        timeout=args.timeout,
        memory_requests=args.memory_requests,
        memory_seconds=args.memory_seconds,
        seed=args.seed,
        frontends=args.frontends,
    )
