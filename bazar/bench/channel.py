"""``python -m bazar.bench.channel``: the CPU one internal-channel call costs its two ends.

Why: a write is a handful of channel calls (``bazar.channel``), and on a machine with fewer
cores than processes their CPU is the write's latency. This starts two processes on loopback,
a ``ChannelServer`` with one trivial handler and a ``Channel`` that calls it ``--calls`` times,
``--concurrency`` at a time, after a warm-up, and prints each end's CPU time per call (user +
system, from ``os.times``) and the calls per second.

``--code DIR`` (repeatable) measures another checkout's channel the same way (both processes
import Bazar from ``DIR``: e.g. the code before a change), in interleaved rounds (``--rounds``)
with this checkout's, so that a machine that drifts drifts for both. This file runs as a script
in those processes, so it imports only what every version of the channel has.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WARM_UP = 200
SECRET = "bench"
BODY = b'[[1,{"op":"price","book_id":3,"price":42.0}]]'
HERE = str(Path(__file__).resolve().parents[2])  # this checkout's root


def serve() -> None:
    """The answering end: says ``ready <port>``, then its CPU seconds so far on each SIGUSR1."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from bazar.channel import ChannelServer, Stamp
    from bazar.jsonio import Reply
    from bazar.protocol import REPLICATE_PATH

    def answer(raw: bytes) -> Reply:
        return Reply(200, b'{"last_seq":1}')

    server = ChannelServer({REPLICATE_PATH: answer}, SECRET, lambda: Stamp("catalog-2", 1, "catalog-1", 1))

    def report() -> None:
        times = os.times()
        print(times.user + times.system, flush=True)

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(report))  # type: ignore[attr-defined]
    listening = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(server)
    listening.addCallback(lambda port: print(f"ready {port.getHost().port}", flush=True))
    reactor.run()  # type: ignore[attr-defined]


def call(calls: int, concurrency: int) -> None:
    """The calling end: starts the answering end, calls it, prints one JSON line."""
    # In this process's group, which ``measure`` kills whatever happens here.
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().split()
        if ready[:1] != ["ready"]:
            raise SystemExit("the answering end did not start")

        def server_cpu() -> float:
            assert server.stdout is not None
            os.kill(server.pid, signal.SIGUSR1)
            return float(server.stdout.readline())

        from twisted.internet import defer, task

        from bazar.channel import Channel
        from bazar.config import Replica
        from bazar.protocol import REPLICATE_PATH

        channel_address = f"tcp:127.0.0.1:{ready[1]}"
        peer = Replica("catalog-2", "catalog", "tcp:0", "http://catalog-2.invalid", "tcp:0", channel_address)
        result: dict[str, Any] = {}

        async def one(channel: Any) -> None:
            answer = await channel.request(peer, SECRET, "POST", REPLICATE_PATH, BODY, 5.0)
            if answer.code != 200:
                raise SystemExit(f"the call answered {answer.code}")

        async def run(reactor: Any) -> None:
            channel = Channel(reactor)
            for _ in range(WARM_UP):
                await one(channel)
            before, server_before, started = os.times(), server_cpu(), time.perf_counter()

            async def worker(count: int) -> None:
                for _ in range(count):
                    await one(channel)

            each = calls // concurrency
            await defer.gatherResults(
                [defer.Deferred.fromCoroutine(worker(each)) for _ in range(concurrency)]
            )
            elapsed, after, server_after = time.perf_counter() - started, os.times(), server_cpu()
            done = each * concurrency
            result.update(
                caller_us=(after.user + after.system - before.user - before.system) / done * 1e6,
                server_us=(server_after - server_before) / done * 1e6,
                calls_per_second=done / elapsed,
            )
            await channel.close()

        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        server.kill()
        server.wait()
    print(json.dumps(result), flush=True)


def measure(code: str, calls: int, concurrency: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": code}
    argv = [sys.executable, __file__, "--call", str(calls), "--concurrency", str(concurrency)]
    caller = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = caller.communicate(timeout=600)
    finally:
        try:
            os.killpg(caller.pid, signal.SIGKILL)  # both ends, however the run ended
        except ProcessLookupError:
            pass
        caller.wait()
    if caller.returncode != 0 or not out.strip():
        raise SystemExit(f"the run with {code} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bazar.bench.channel", description=__doc__)
    parser.add_argument("--calls", type=int, default=5000, help="calls per round (default 5000)")
    parser.add_argument("--concurrency", type=int, default=1, help="calls under way at once (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each checkout, interleaved (default 3)"
    )
    parser.add_argument("--code", action="append", default=[], help="another checkout's root, measured too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--call", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.call is not None:
        call(args.call, args.concurrency)
        return 0
    if args.calls < args.concurrency or args.concurrency < 1 or args.rounds < 1:
        parser.error("--concurrency must be at least 1 and at most --calls; --rounds at least 1")
    codes = [HERE, *(str(Path(c).resolve()) for c in args.code)]
    rows: dict[str, list[dict[str, float]]] = {code: [] for code in codes}
    for number in range(1, args.rounds + 1):
        for code in codes:
            row = measure(code, args.calls, args.concurrency)
            rows[code].append(row)
            print(
                f"round {number}/{args.rounds} {code}: caller {row['caller_us']:.0f} us, "
                f"server {row['server_us']:.0f} us of CPU per call, {row['calls_per_second']:.0f} calls/s",
                file=sys.stderr,
                flush=True,
            )
    print(f"| code | CPU per call, both ends (median of {args.rounds}) | caller | server | calls/s |")
    print("|---|--:|--:|--:|--:|")
    for code, runs in rows.items():
        caller = statistics.median(r["caller_us"] for r in runs)
        server = statistics.median(r["server_us"] for r in runs)
        rate = statistics.median(r["calls_per_second"] for r in runs)
        print(f"| {code} | {caller + server:.0f} us | {caller:.0f} us | {server:.0f} us | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
