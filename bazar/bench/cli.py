"""``bazar-bench``: run the lab report's experiments against a Bazar cluster and write the results.

Against ``--url`` (and ``--url-nocache`` for the numbers without a cache), or, by default,
against clusters it starts itself in a temporary directory on free loopback ports — one
with the cache and one with ``cache_size = 0`` — and stops by PID afterwards, also on
Ctrl-C or an error. Progress goes to stderr; the Markdown tables to stdout; files (JSON,
CSV, PNG, Markdown) to ``--out``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bazar.bench import plots, report, wrk
from bazar.bench.cluster import ClusterInfo, start_cluster
from bazar.bench.experiments import (
    LAB_BOOKS,
    RUNNERS,
    Context,
    Settings,
    elections,
)
from bazar.bench.machine import CpuWatch, machine_info
from bazar.bench.options import UsageError, parse_args, settings_from
from bazar.bench.progress import Progress, format_duration
from bazar.launch import Processes, StartError, cluster_status
from bazar.reactors import IBenchReactor

BUSY_SHARE = 0.05  # others' CPU share above which the results carry a warning
PLOTS = {"latency", "consistency", "sweep", "lru", "throughput", "memory", "frontends"}
WITH_WRK = ("throughput", "frontends")


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
                elif name == "frontends" and result["rows"]:
                    plots.plot_frontends(plt, result, path)
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

    async def body(reactor: IBenchReactor) -> None:
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
    with_wrk = [name for name in WITH_WRK if name in args.experiments]
    wrk_path = wrk.find() if with_wrk else None
    if with_wrk and wrk_path is None:
        progress.say(f"note: {wrk.INSTALL_HINT}; {' and '.join(with_wrk)} will be skipped")
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
