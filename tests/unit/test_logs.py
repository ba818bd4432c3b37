"""Tests for ``bazar.logs``: one JSON object per line, and the cluster secret never in a log."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from bazar import config, logs

SECRET_MARK = "a-secret-in-an-exception"
STARTUP_DEADLINE = 30.0  # seconds for twistd to start listening
SHUTDOWN_DEADLINE = 30.0  # seconds for it to exit after SIGTERM


def lines_of(out: io.StringIO) -> list[dict[str, Any]]:
    """Every line written, each parsed as JSON (fails the test on one that is not)."""
    text = out.getvalue()
    assert text.endswith("\n"), repr(text[-80:])
    return [json.loads(line) for line in text.splitlines()]


@dataclass(frozen=True)
class Holder:
    """Like ``Config``: an object whose repr and str carry the secret."""

    secret: str


class JSONLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        self.log = Logger(namespace="bazar.test", observer=logs.json_observer(self.out))

    def test_one_object_per_event_with_structured_fields(self) -> None:
        """Each event is one line of JSON holding its fields, format, level and rendered text."""
        self.log.info("sold {quantity} of book {book_id}", quantity=2, book_id=3, replica="order-1")
        self.log.warn("cache full")
        first, second = lines_of(self.out)
        self.assertEqual(first["quantity"], 2)
        self.assertEqual(first["book_id"], 3)
        self.assertEqual(first["replica"], "order-1")
        self.assertEqual(first["log_format"], "sold {quantity} of book {book_id}")
        self.assertEqual(first["log_namespace"], "bazar.test")
        self.assertEqual(first["log_level"]["name"], "info")
        self.assertIsInstance(first["log_time"], float)
        self.assertEqual(first["log_message"], "sold 2 of book 3")
        self.assertEqual(second["log_level"]["name"], "warn")
        self.assertEqual(second["log_message"], "cache full")

    def test_newlines_stay_inside_the_line(self) -> None:
        """A multi-line message is still one line of output."""
        self.log.info("first\nsecond {x}", x="third\nfourth")
        [event] = lines_of(self.out)
        self.assertEqual(event["log_message"], "first\nsecond third\nfourth")

    def test_failure_carries_its_traceback_as_text(self) -> None:
        """log.failure gives one line whose message includes the traceback."""
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            self.log.failure("dividing went wrong")
        [event] = lines_of(self.out)
        self.assertTrue(event["log_message"].startswith("dividing went wrong\n"))
        self.assertIn("ZeroDivisionError", event["log_message"])
        self.assertIn("log_failure", event)

    def test_unserialisable_and_cyclic_fields_do_not_break_the_line(self) -> None:
        """Objects JSON cannot hold, NaN and self-containing dicts still give valid JSON lines."""
        cyclic: dict[str, Any] = {}
        cyclic["self"] = cyclic
        self.log.info("odd {thing}", thing=object(), ratio=float("nan"), cyclic=cyclic, raw=b"\xff")
        [event] = lines_of(self.out)
        self.assertTrue(event["log_message"].startswith("odd <object object at "))
        self.assertEqual(event["ratio"], "nan")
        self.assertEqual(event["raw"], "\xff")


class SecretTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.secret = "bazar-test-" + secrets.token_urlsafe(24)
        logs.register_secret(self.secret)
        self.addCleanup(logs.unregister_secret, self.secret)
        self.out = io.StringIO()
        self.log = Logger(namespace="bazar.test", observer=logs.json_observer(self.out))

    def assertNoSecret(self, text: str) -> None:
        self.assertNotIn(self.secret, text)
        self.assertNotIn(json.dumps(self.secret)[1:-1], text)

    def test_never_as_a_field(self) -> None:
        """The secret as a plain field, nested in a dict, a list or bytes, is replaced."""
        self.log.info(
            "peer {peer}",
            peer="catalog-2",
            shared=self.secret,
            headers={"X-Bazar-Secret": self.secret, "Accept": "application/json"},
            args=["--secret", self.secret],
            raw=self.secret.encode(),
        )
        self.assertNoSecret(self.out.getvalue())
        [event] = lines_of(self.out)
        self.assertEqual(event["shared"], logs.REDACTED)
        self.assertEqual(event["headers"], {"X-Bazar-Secret": logs.REDACTED, "Accept": "application/json"})
        self.assertEqual(event["args"], ["--secret", logs.REDACTED])
        self.assertEqual(event["log_message"], "peer catalog-2")

    def test_never_inside_a_formatted_message(self) -> None:
        """Rendering a field, an attribute of one, or an object's str/repr never shows it."""
        holder = Holder(self.secret)
        self.log.info("sending {value} to {peer}", value=self.secret, peer="catalog-2")
        self.log.info("loaded {holder!r} and {holder}", holder=holder)
        self.log.info("attribute: {holder.secret}", holder=holder)
        self.log.info(f"an f-string with {self.secret} in its format")
        self.assertNoSecret(self.out.getvalue())
        messages = [event["log_message"] for event in lines_of(self.out)]
        self.assertEqual(messages[0], "sending [REDACTED] to catalog-2")
        self.assertEqual(messages[1], "loaded Holder(secret='[REDACTED]') and Holder(secret='[REDACTED]')")
        self.assertEqual(messages[2], "attribute: [REDACTED]")
        self.assertEqual(messages[3], "an f-string with [REDACTED] in its format")

    def test_never_in_a_traceback(self) -> None:
        """An exception whose message holds the secret is logged with it replaced."""
        try:
            raise ValueError(f"bad header {self.secret}")
        except ValueError:
            self.log.failure("request failed")
        self.assertNoSecret(self.out.getvalue())
        [event] = lines_of(self.out)
        self.assertIn("bad header [REDACTED]", event["log_message"])

    def test_fields_named_like_a_secret_are_redacted_even_unregistered(self) -> None:
        """A field called secret/token/password is never shown, whatever its value."""
        self.log.info("auth {token}", token="unregistered-token", password="pw-123", secret_file="/run/x")
        text = self.out.getvalue()
        self.assertNotIn("unregistered-token", text)
        self.assertNotIn("pw-123", text)
        [event] = lines_of(self.out)
        self.assertEqual(event["log_message"], "auth [REDACTED]")
        self.assertEqual(event["password"], logs.REDACTED)

    def test_text_observer_redacts_too(self) -> None:
        """The classic-text observer shows the same events without the secret."""
        out = io.StringIO()
        log = Logger(namespace="bazar.test", observer=logs.text_observer(out))
        log.info("loaded {holder!r}, secret {s}", holder=Holder(self.secret), s=self.secret)
        try:
            raise RuntimeError(self.secret)
        except RuntimeError:
            log.failure("boom")
        self.assertNoSecret(out.getvalue())
        self.assertIn("loaded Holder(secret='[REDACTED]'), secret [REDACTED]", out.getvalue())
        self.assertIn("RuntimeError: [REDACTED]", out.getvalue())

    def test_other_observers_see_the_original_event(self) -> None:
        """Redaction works on a copy: the event shared with other observers is unchanged."""
        seen: list[dict[str, Any]] = []
        log = Logger(observer=logs.RedactingObserver(seen.append))
        event: dict[str, Any] = {"value": self.secret, "nested": {"v": self.secret}}
        log.info("x {value}", **event)
        self.assertEqual(seen[0]["value"], logs.REDACTED)
        self.assertEqual(event, {"value": self.secret, "nested": {"v": self.secret}})

    def test_an_event_that_cannot_be_redacted_still_gives_a_line(self) -> None:
        """A field that breaks on iteration yields a stand-in event, not an exception (which
        would make Twisted drop the observer for good)."""

        class Broken(dict[str, str]):
            def items(self) -> Any:
                raise RuntimeError(f"broken {SECRET_MARK}")

        seen: list[dict[str, Any]] = []
        log = Logger(observer=logs.RedactingObserver(seen.append))
        logs.register_secret(SECRET_MARK)
        self.addCleanup(logs.unregister_secret, SECRET_MARK)
        log.info("x {broken}", broken=Broken())
        [event] = seen
        self.assertEqual(event["error"], "RuntimeError: broken [REDACTED]")
        self.assertEqual(event["log_level"].name, "info")

    def test_registration(self) -> None:
        """Empty secrets are ignored, non-strings refused, unregistering restores the text."""
        logs.register_secret("")
        self.assertEqual(logs.redact_text("a b"), "a b")
        self.assertRaises(TypeError, logs.register_secret, b"bytes")
        logs.register_secret("short")
        logs.register_secret("a-short-one")  # contains the first: replaced whole, longest first
        self.addCleanup(logs.unregister_secret, "short")
        self.addCleanup(logs.unregister_secret, "a-short-one")
        self.assertEqual(logs.redact_text("x a-short-one short"), "x [REDACTED] [REDACTED]")
        logs.unregister_secret(self.secret)
        self.assertEqual(logs.redact_text(self.secret), self.secret)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(directory: Path, frontend_port: int, secret: str) -> Path:
    """A config whose front end listens on ``frontend_port``; the replicas are never contacted."""
    tables = {"frontend": config.endpoints(frontend_port, with_channel=False)}
    for role in ("catalog", "order"):
        tables[f"{role}-1"] = config.endpoints(free_port(), with_channel=False)
    raw = config.document({"data_dir": str(directory / "data"), "secret": secret}, tables)
    return config.write(directory / "bazar.toml", raw)


def wait_for_port(process: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    """Return once ``port`` accepts connections; fail if the process exits or time runs out."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"twistd did not listen on port {port} within {STARTUP_DEADLINE}s")


class TwistdJSONLoggerTests(SynchronousTestCase):
    def test_twistd_logger_option_gives_json_lines(self) -> None:
        """``twistd --logger bazar.logs.json_observer -n bazar-frontend`` prints only JSON lines."""
        directory = Path(tempfile.mkdtemp(prefix="bazar-logs-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        port = free_port()
        secret = "bazar-test-" + secrets.token_urlsafe(24)
        config = write_config(directory, port, secret)
        command = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--logger",
            "bazar.logs.json_observer",
            "--nodaemon",
            "--pidfile=",
            "bazar-frontend",
            "--config",
            str(config),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            wait_for_port(process, port, time.monotonic() + STARTUP_DEADLINE)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(b"GET /no/such/path HTTP/1.0\r\nHost: x\r\n\r\n")
                self.assertTrue(client.recv(100).startswith(b"HTTP/1.0 404"))
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
            try:
                stdout, stderr = process.communicate(timeout=SHUTDOWN_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                raise
        # twistd stops cleanly on SIGTERM, then ends itself by that signal so callers can tell.
        self.assertIn(process.returncode, (0, -signal.SIGTERM), stderr.decode(errors="replace"))
        text = stdout.decode()
        self.assertNotIn(secret, text)
        events = [json.loads(line) for line in text.splitlines()]
        self.assertTrue(all(isinstance(event, dict) for event in events))
        messages = [event.get("log_message", "") for event in events]
        self.assertTrue(any("starting up" in m for m in messages), messages)
        self.assertTrue(any(str(port) in m for m in messages), messages)
        self.assertTrue(any("Server Shut Down" in m for m in messages), messages)
