"""Throughput with ``wrk``: a C load generator, so Python's speed is not what gets measured.

Each run gets a small Lua script that shapes the requests (a fixed GET, GETs rotating over
paths, or a POST with a JSON body) and, in ``done``, prints one machine-readable line with
the counts and latency percentiles, so nothing depends on wrk's human-oriented text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from bazar.reactors import IBenchReactor

INSTALL_HINT = (
    "wrk is not installed; the throughput experiment needs it. On Debian or Ubuntu: "
    "`sudo apt-get install -y wrk` (elsewhere: https://github.com/wg/wrk)"
)
MARKER = "BAZAR-BENCH "

_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BAZAR-BENCH {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect\":%d,\"read\":%d," ..
    "\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f," ..
    "\"max_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII is a valid Lua string literal


def get_script() -> str:
    """GET the URL's own path, again and again."""
    return _REPORT


def rotating_get_script(paths: Sequence[str]) -> str:
    """GET each of ``paths`` in turn (per wrk thread)."""
    listed = ", ".join(_lua_string(p) for p in paths)
    return (
        f"local paths = {{{listed}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\n'
        "end\n" + _REPORT
    )


def unique_get_script(prefix: str) -> str:
    """GET ``prefix`` + a suffix no other request of the run uses (wrk thread number, counter)."""
    return (
        "local threads = 0\n"
        "setup = function(thread)\n"
        "  threads = threads + 1\n"
        '  thread:set("tid", threads)\n'
        "end\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        f'  return wrk.format("GET", {_lua_string(prefix)} .. tid .. "-" .. i)\n'
        "end\n" + _REPORT
    )


def post_script(body: str, paths: Sequence[str] = ()) -> str:
    """POST ``body`` as JSON to the URL's path, or to each of ``paths`` in turn."""
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {_lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    if paths:
        listed = ", ".join(_lua_string(p) for p in paths)
        script += (
            f"local paths = {{{listed}}}\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i % #paths + 1\n"
            "  return wrk.format(nil, paths[i])\n"
            "end\n"
        )
    return script + _REPORT


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int  # wrk's "status" errors: responses with a status above 399
    socket_errors: int  # connect, read, write and timeout errors
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "rps": self.rps,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "avg_ms": self.mean_ms,
            "max_ms": self.max_ms,
        }


def parse_output(stdout: str) -> WrkResult:
    """The result our Lua ``done`` printed; ValueError if wrk did not get that far."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                non_2xx=int(data["status"]),
                socket_errors=int(data["connect"] + data["read"] + data["write"] + data["timeout"]),
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                mean_ms=data["mean_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise ValueError(f"no {MARKER.strip()} line in wrk's output:\n{stdout[-2000:]}")


def find() -> str | None:
    return shutil.which("wrk")


def version(wrk: str) -> str | None:
    try:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else None


def command(wrk: str, url: str, script: Path, threads: int, connections: int, duration: float) -> list[str]:
    return [
        wrk,
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(code)


async def run(
    reactor: IBenchReactor,
    wrk: str,
    url: str,
    script_text: str,
    workdir: Path,
    *,
    threads: int,
    connections: int,
    duration: float,
) -> WrkResult:
    """Run wrk once without blocking the reactor; RuntimeError if it fails.

    Bounded by wrk's own -d and a hard deadline on top. If the reactor stops meanwhile
    (Ctrl-C), wrk is killed by its PID rather than left to run out its duration.
    """
    script = workdir / "bench.lua"
    script.write_text(script_text)
    args = command(wrk, url, script, threads, connections, duration)
    collect = _Collect()
    process = reactor.spawnProcess(collect, wrk, args, env=dict(os.environ))

    shutting_down = False

    def kill() -> None:
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def on_shutdown() -> None:
        nonlocal shutting_down
        shutting_down = True
        kill()

    deadline = reactor.callLater(duration + 30, kill)
    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    try:
        code = await collect.ended
    finally:
        if deadline.active():
            deadline.cancel()
        if not shutting_down:  # a trigger that has fired is no longer there to remove
            reactor.removeSystemEventTrigger(trigger)
    stdout = b"".join(collect.out).decode(errors="replace")
    stderr = b"".join(collect.err).decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"wrk exited with status {code}: {stderr.strip() or stdout.strip()}")
    try:
        return parse_output(stdout)
    except ValueError as e:
        raise RuntimeError(str(e)) from None
