"""``bazar-bench``: run the lab report's experiments against a Bazar cluster and write the results.

Against ``--url`` (and ``--url-nocache`` for the numbers without a cache), or, by default,
against clusters it starts itself in a temporary directory on free loopback ports — one
with the cache and one with ``cache_size = 0`` — and stops by PID afterwards, also on
Ctrl-C or an error. Progress goes to stderr; the Markdown tables to stdout; files (JSON,
CSV, PNG, Markdown) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bazar.bench import plots, report, wrk
from bazar.bench.cluster import ClusterInfo, start_cluster
from bazar.bench.experiments import (
    EXPERIMENTS,
    LAB_BOOKS,
    MEMORY_REQUESTS_PER_SAMPLE,
    RUNNERS,
    Context,
    Settings,
    elections,
)
from bazar.bench.load import Target
from bazar.bench.progress import Progress, format_duration
from bazar.launch import Processes, StartError, cluster_status

DEFAULT_OUT = "bench-results"
BUSY_SHARE = 0.05  # others' CPU share above which the results carry a warning
PLOTS = {"latency", "consistency", "sweep", "lru", "throughput", "memory"}


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
            "over a long run, and a purchase's floor on this machine (its messages without Bazar's "
            "work). Without --url it starts "
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
        help="seconds per wrk run in the throughput experiment (default %(default)s)",
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
    )


# -- the machine -------------------------------------------------------------------------------


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


# -- clusters --------------------------------------------------------------------------------------


def remote_cluster(url: str, label: str, secret: str | None = None) -> ClusterInfo:
    status = cluster_status(url)
    if status is None:
        raise UsageError(
            f"no healthy Bazar cluster at {url} (GET {url}/bazar/cluster failed or a replica is down)"
        )
    capacity = status.get("cache", {}).get("capacity")
    return ClusterInfo(label=label, url=url, cache_size=capacity, secret=secret)


def read_secret(path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise UsageError(f"cannot read the secret file {path}: {e.strerror}") from None
    if not secret:
        raise UsageError(f"the secret file {path} is empty")
    return secret


def setup_clusters(
    args: argparse.Namespace, processes: Processes, workdir: Path, progress: Progress, notes: list[str]
) -> tuple[ClusterInfo | None, ClusterInfo | None]:
    """(with cache, without cache): the ones at --url/--url-nocache, or started here."""
    if args.url:
        secret = read_secret(args.secret_file) if args.secret_file else None
        cache: ClusterInfo | None = remote_cluster(args.url, "cache", secret)
        nocache = remote_cluster(args.url_nocache, "nocache") if args.url_nocache else None
        if nocache is not None and nocache.cache_size != 0:
            raise UsageError(
                f"--url-nocache {args.url_nocache} has a cache of {nocache.cache_size} entries, not 0"
            )
        if cache is not None and cache.cache_size == 0:
            if nocache is not None:
                raise UsageError(f"--url {args.url} has no cache (capacity 0); give the cluster with a cache")
            notes.append(f"{args.url} has cache_size = 0: measured as the cluster without a cache")
            cache, nocache = None, cache
        elif nocache is None:
            notes.append("no --url-nocache: the numbers without a cache are skipped")
        return cache, nocache
    wanted_nocache = any(n in args.experiments for n in ("latency", "sweep", "throughput"))
    progress.say(f"starting a cluster with cache_size = {args.cache_size} in {workdir / 'cache'} ...")
    cache = start_cluster(processes, workdir / "cache", "cache", args.cache_size)
    progress.say(f"  front end at {cache.url} (pid {cache.process.pid if cache.process else '?'})")
    nocache = None
    if wanted_nocache:
        progress.say(f"starting a cluster with cache_size = 0 in {workdir / 'nocache'} ...")
        try:
            nocache = start_cluster(processes, workdir / "nocache", "nocache", 0)
        except StartError as e:
            if "cache_size" not in str(e):
                raise
            notes.append("this Bazar refuses cache_size = 0, so the numbers without a cache are skipped")
            progress.say(f"  {notes[-1]}")
        else:
            progress.say(
                f"  front end at {nocache.url} (pid {nocache.process.pid if nocache.process else '?'})"
            )
    return cache, nocache


def describe(cluster: ClusterInfo | None) -> dict[str, Any] | None:
    if cluster is None:
        return None
    return {
        "url": cluster.url,
        "cache_size": cluster.cache_size,
        "started_by_bench": cluster.process is not None,
        "pid": cluster.process.pid if cluster.process else None,
    }


# -- outputs -------------------------------------------------------------------------------------


def write_outputs(
    out: Path, name: str, result: dict[str, Any], results: dict[str, Any], plt: Any, progress: Progress
) -> list[Path]:
    """Files for one finished experiment, plus results.json and results.md so far."""
    written = []
    raw = result.pop("raw", None)
    latencies = result.pop("latencies", None)
    results["experiments"][name] = result
    if not result.get("skipped"):
        main_rows = {"lru": "snapshots", "memory": "samples"}.get(name, "rows")
        report.write_csv(out / f"{name}.csv", result[main_rows])
        written.append(out / f"{name}.csv")
        if name == "lru":
            report.write_csv(out / "lru_phases.csv", result["phases"])
            written.append(out / "lru_phases.csv")
        if name == "memory":
            report.write_csv(out / "memory_requests.csv", result["rows"])
            written.append(out / "memory_requests.csv")
        if raw:
            report.write_csv(out / f"{name}_samples.csv", raw)
            written.append(out / f"{name}_samples.csv")
        if plt is not None and name in PLOTS:
            path = out / f"{name}.png"
            try:
                if name == "latency":
                    plots.plot_latency(plt, result, path)
                elif name == "consistency":
                    plots.plot_consistency(plt, result, latencies or {}, path)
                elif name == "sweep":
                    plots.plot_sweep(plt, result, path)
                elif name == "lru":
                    plots.plot_lru(plt, result, path)
                elif name == "throughput" and result["rows"]:
                    plots.plot_throughput(plt, result, path)
                elif name == "memory":
                    plots.plot_memory(plt, result, path)
            except Exception as e:  # a plot must never cost the measurements
                progress.say(f"plot {path.name} failed: {e}")
            if path.exists():
                written.append(path)
    report.write_json(out / "results.json", results)
    (out / "results.md").write_text(report.markdown_report(results))
    return written


async def run_experiments(
    ctx: Context, names: Sequence[str], out: Path, results: dict[str, Any], plt: Any
) -> None:
    for number, name in enumerate(names, start=1):
        stage = f"[{number}/{len(names)} {name}]"
        ctx.progress.say(f"{stage} started")
        started = time.monotonic()
        result = await RUNNERS[name](ctx, stage)
        result["seconds"] = time.monotonic() - started
        if result.get("skipped"):
            ctx.progress.say(f"{stage} skipped: {result['skipped']}")
        files = write_outputs(out, name, result, results, plt, ctx.progress)
        ctx.progress.say(
            f"{stage} done in {format_duration(result['seconds'])}"
            + (f": {', '.join(p.name for p in files)}" if files else "")
        )


def elections_note(counted: dict[str, dict[str, int]]) -> str:
    """One line: the elections of every cluster and role (none is expected: no fault is injected)."""
    total = sum(n for roles in counted.values() for n in roles.values())
    where = "; ".join(
        f"{cluster}: " + ", ".join(f"{role} {n}" for role, n in roles.items())
        for cluster, roles in counted.items()
    )
    return f"elections during the run, where no fault was injected: {total} ({where})"


def run_reactor(
    settings: Settings,
    names: Sequence[str],
    out: Path,
    results: dict[str, Any],
    plt: Any,
    context: dict[str, Any],
) -> int:
    """Run every experiment inside one reactor; 0, 1 on an error, 130 if interrupted."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    state = {"done": False}

    async def body(reactor: Any) -> None:
        ctx = Context(reactor=reactor, settings=settings, **context)
        try:
            target = ctx.cache or ctx.nocache
            assert target is not None
            # The report's seven books (ids 0-6), however many more the catalogue holds.
            books = await ctx.json(target, "GET", f"/bazar/info/all?limit={LAB_BOOKS}")
            ctx.books = books[:LAB_BOOKS]
            await run_experiments(ctx, names, out, results, plt)
            results["elections"] = counted = await elections(ctx)
            results["notes"].append(elections_note(counted))
        except Exception:
            # react would hand this to twisted.logger, which nobody observes in a CLI.
            traceback.print_exc()
            raise SystemExit(1) from None
        finally:
            ctx.close()
        state["done"] = True

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(body(reactor)))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    else:  # pragma: no cover - react always exits
        code = 0
    if code == 0 and not state["done"]:
        return 130  # the reactor was stopped (Ctrl-C, SIGTERM) before the experiments finished
    return code


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that SIGTERM, too, runs the finally that stops the clusters


def handle_interrupts() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the benchmark, which then stops every cluster it started.

    SIGINT explicitly: a shell starts a background job with SIGINT ignored, and Python then
    leaves it ignored (and so does Twisted's reactor, which only replaces Python's own
    handler), so the benchmark could not be interrupted at all. SIGTERM unless someone set
    a handler of their own; the reactor installs its own for both while it runs.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handle_interrupts()
    settings = settings_from(args)
    progress = Progress()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plt = None
    if not args.no_plots:
        plt = plots.load_pyplot()
        if plt is None:
            progress.say(
                f"matplotlib is not installed: no plots (CSV and JSON are written). {plots.MATPLOTLIB_HINT}"
            )
    wrk_path = wrk.find() if "throughput" in args.experiments else None
    if "throughput" in args.experiments and wrk_path is None:
        progress.say(f"note: {wrk.INSTALL_HINT}; that experiment will be skipped")
    began = time.monotonic()
    watch = CpuWatch()
    notes: list[str] = []
    results: dict[str, Any] = {
        "tool": "bazar-bench",
        "machine": machine_info(wrk_path),
        "settings": {**asdict(settings), "experiments": list(args.experiments)},
        "clusters": {},
        "notes": notes,
        "experiments": {},
    }
    processes = Processes()
    workdir_cm: AbstractContextManager[Any] = (
        nullcontext(str(args.workdir)) if args.workdir else tempfile.TemporaryDirectory(prefix="bazar-bench-")
    )
    code = 1
    try:
        with workdir_cm as workdir_name:
            workdir = Path(workdir_name)
            workdir.mkdir(parents=True, exist_ok=True)
            try:
                cache, nocache = setup_clusters(args, processes, workdir, progress, notes)
                results["clusters"] = {"cache": describe(cache), "nocache": describe(nocache)}
                context = {
                    "progress": progress,
                    "workdir": workdir,
                    "processes": processes,
                    "cache": cache,
                    "nocache": nocache,
                    "wrk_path": wrk_path,
                }
                code = run_reactor(settings, args.experiments, out, results, plt, context)
            finally:
                stopped = processes.stop_all()
                if stopped:
                    progress.say(f"stopped {', '.join(f'{p.name} (pid {p.pid})' for p in stopped)}")
    except UsageError as e:
        progress.say(f"bazar-bench: {e}")
        return 2
    except StartError as e:
        progress.say(f"bazar-bench: {e}")
        return 1
    except KeyboardInterrupt:
        code = 130
    results["runtime_seconds"] = time.monotonic() - began
    others = watch.report()
    results["machine"]["other_processes"] = others
    if others and (others["others_share"] or 0) > BUSY_SHARE:
        notes.append(
            f"other processes used {100 * others['others_share']:.0f} % of this machine's CPU time "
            "during the run: they competed with the measurements, so the numbers are noisier "
            "(and slower) than on an idle machine"
        )
        progress.say(f"warning: {notes[-1]}")
    if results["experiments"]:
        report.write_json(out / "results.json", results)
        (out / "results.md").write_text(report.markdown_report(results))
    if code == 130:
        progress.say(f"interrupted; what finished is in {out}/")
        return code
    if code == 0:
        sys.stdout.write(report.markdown_report(results))
        sys.stdout.flush()
        pngs = ", *.png" if plt is not None else ""
        progress.say(
            f"done in {format_duration(results['runtime_seconds'])}; "
            f"results in {out}/ (results.json, *.csv{pngs}, results.md)"
        )
    return code
