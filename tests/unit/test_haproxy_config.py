"""Checks of etc/haproxy.cfg that need no running HAProxy: it balances the front ends that
``frontends = 2`` gives, by name and port, and its health check asks a route the front end
answers by itself. Where HAProxy is installed, ``haproxy -c`` must accept the file too.
(tests/integration/test_haproxy.py runs it in front of two front ends on two hosts.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bazar.config import DEFAULT_FRONTEND_PORT, parse
from bazar.frontend.app import FrontendApp

HAPROXY_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "haproxy.cfg"
# compose.yaml's; tests/unit/test_containers.py checks its servers against etc/bazar.compose.toml.
HAPROXY_COMPOSE_CONFIG = HAPROXY_CONFIG.with_name("haproxy.compose.cfg")


def settings(path: Path) -> list[str]:
    """The file's lines without comments, blank lines and what differs between hosts: the address
    HAProxy listens on, its servers, how their names are looked up."""
    lines = [" ".join(line.split("#", 1)[0].split()) for line in path.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith(("bind ", "server "))]
    kept = lines[: lines.index("resolvers docker")] if "resolvers docker" in lines else lines
    return [line.split(" resolvers ")[0] if line.startswith("default-server ") else line for line in kept]


def directives(name: str) -> list[list[str]]:
    """Every line of the file that starts with ``name`` (comments left out), split in words."""
    lines = (line.split("#", 1)[0].split() for line in HAPROXY_CONFIG.read_text().splitlines())
    return [words[1:] for words in lines if words and words[0] == name]


class HaproxyConfigTests(SynchronousTestCase):
    def test_servers_are_the_frontends_of_frontends_2(self) -> None:
        config = parse({"cluster": {"frontends": 2, "secret": "s"}})
        expected = {f.name: f.url.removeprefix("http://") for f in config.frontends}
        servers = {words[0]: words[1] for words in directives("server")}
        self.assertEqual(servers, expected)
        self.assertTrue(all("check" in words for words in directives("server")))
        # Not on the port the front ends already share.
        (bind,) = directives("bind")
        self.assertEqual(
            {f.public for f in config.frontends}, {f"tcp:port={DEFAULT_FRONTEND_PORT}:interface=127.0.0.1"}
        )
        self.assertNotEqual(int(bind[0].rsplit(":", 1)[1]), DEFAULT_FRONTEND_PORT)

    def test_the_health_check_asks_a_get_route_of_the_frontend(self) -> None:
        (check,) = directives("http-check")[:1]
        self.assertEqual(check[:2], ["send", "meth"])
        method, path = check[2], check[check.index("uri") + 1]
        self.assertEqual(method, "GET")
        adapter = FrontendApp.app.url_map.bind("localhost")
        endpoint, _ = adapter.match(path, method=method)
        self.assertEqual(endpoint, "openapi_document")  # answered by the front end alone
        self.assertIn(["balance", "roundrobin"], [["balance", *w] for w in directives("balance")])
        self.assertTrue(re.search(r"fall \d+ rise \d+", " ".join(directives("default-server")[0])))

    def test_the_compose_config_differs_only_in_addresses(self) -> None:
        """etc/haproxy.compose.cfg keeps this file's timeouts, retries and health checks: only
        `bind`, the servers and their lookup in Docker's DNS differ."""
        self.assertEqual(settings(HAPROXY_COMPOSE_CONFIG), settings(HAPROXY_CONFIG))
        self.assertIn("option httpchk", settings(HAPROXY_CONFIG))

    def test_haproxy_accepts_it(self) -> None:
        """Both files; the compose one's servers need not resolve here (`init-addr ... none`)."""
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise SkipTest("HAProxy is not installed (Debian: apt-get install haproxy)")
        for path in (HAPROXY_CONFIG, HAPROXY_COMPOSE_CONFIG):
            command = [haproxy, "-c", "-f", str(path)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
