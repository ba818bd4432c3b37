"""Checks of the container files that need no Docker engine: compose.yaml, the Dockerfiles,
etc/bazar.compose.toml and etc/haproxy.compose.cfg must agree on front ends, replicas, URLs,
ports, volumes, the secret and plugins.

PyYAML is no dependency of Bazar, so compose.yaml is read with ``read_yaml`` below: a reader for
the block-style subset the file is written in, which refuses anything outside that subset rather
than guess. Where PyYAML happens to be installed, a test checks that both read the file alike.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from twisted.application.service import IServiceMaker
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bazar.config import Config, load
from bazar.service import tcp_address

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
JSON_LOGS_OVERRIDE = ROOT / "docker" / "compose.json-logs.yaml"
COMPOSE_CONFIG = ROOT / "etc" / "bazar.compose.toml"
CONFIG_IN_CONTAINER = "/etc/bazar/bazar.toml"
CONFIG_MOUNT = f"./etc/bazar.compose.toml:{CONFIG_IN_CONTAINER}:ro"
ROLES = ("frontend", "catalog", "order")
INIT_SERVICE = "secret-init"
BALANCER = "haproxy"
HAPROXY_COMPOSE_CONFIG = ROOT / "etc" / "haproxy.compose.cfg"
HAPROXY_CONFIG_IN_CONTAINER = "/etc/bazar/haproxy.cfg"


# --- a reader for the YAML subset compose.yaml is written in -------------------------------


class UnsupportedYAML(ValueError):
    """compose.yaml uses YAML this reader does not handle; keep the file in the subset."""


_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote and not (quote == '"' and line[i - 1] == "\\"):
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str) -> Any:
    text = text.strip()
    if text[:1] in ("&", "*", "|", ">", "!", "{") and text != "{}":
        raise UnsupportedYAML(f"unsupported YAML value {text!r}")
    if text in ("", "~", "null"):
        return None
    if text == "{}":
        return {}
    if text.startswith(("[", '"')):
        try:
            return json.loads(text)  # flow lists and double-quoted strings are kept JSON-valid
        except json.JSONDecodeError:
            raise UnsupportedYAML(f"not JSON-compatible: {text!r}") from None
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise UnsupportedYAML(f"unterminated string {text!r}")
        return text[1:-1].replace("''", "'")
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?\d+\.\d*", text):
        return float(text)
    if text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    return text


def _key(text: str) -> str:
    key = _scalar(text)
    if not isinstance(key, str) or key.startswith("<<"):
        raise UnsupportedYAML(f"unsupported key {text!r}")
    return key


def _split_key(content: str) -> tuple[str, str]:
    """``key: value`` into key and value, where the key may be quoted."""
    match = re.fullmatch(r"(\"[^\"]*\"|'[^']*'|[^\s\"'#][^:]*?):(?:\s+(.*))?", content)
    if match is None:
        raise UnsupportedYAML(f"not a 'key: value' line: {content!r}")
    return match.group(1), match.group(2) or ""


def _block(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    """The mapping or list whose lines start at ``start`` with exactly ``indent`` spaces."""
    is_list = lines[start][1].startswith("- ") or lines[start][1] == "-"
    result: Any = [] if is_list else {}
    i = start
    while i < len(lines):
        line_indent, content = lines[i]
        if line_indent < indent:
            break
        if line_indent > indent:
            raise UnsupportedYAML(f"unexpected indentation at {content!r}")
        if is_list:
            if not content.startswith("- "):
                raise UnsupportedYAML(f"mixed list and mapping at {content!r}")
            item = content[2:]
            if re.match(r"(\"[^\"]*\"|'[^']*'|[^\s\"'\[][^:]*?):(\s|$)", item):
                raise UnsupportedYAML(f"list items must be scalars: {content!r}")
            result.append(_scalar(item))
            i += 1
            continue
        if content.startswith("- "):
            raise UnsupportedYAML(f"mixed list and mapping at {content!r}")
        key_text, value = _split_key(content)
        key = _key(key_text)
        if key in result:
            raise UnsupportedYAML(f"duplicate key {key!r}")
        i += 1
        if value:
            result[key] = _scalar(value)
        elif i < len(lines) and lines[i][0] > indent:
            result[key], i = _block(lines, i, lines[i][0])
        elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            result[key], i = _block(lines, i, indent)  # a list may sit at its key's indentation
        else:
            result[key] = None
    return result, i


def read_yaml(text: str) -> Any:
    """Block mappings, lists of scalars, JSON-style flow lists and quoted or plain scalars."""
    lines = []
    for raw in text.splitlines():
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise UnsupportedYAML("tabs in indentation")
        content = _strip_comment(raw)
        if content.strip() in ("---", "..."):
            raise UnsupportedYAML("document markers")
        if content.strip():
            lines.append((len(content) - len(content.lstrip(" ")), content.strip()))
    if not lines:
        return None
    document, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise UnsupportedYAML(f"unexpected indentation at {lines[end][1]!r}")
    return document


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    """A compose file, always through ``read_yaml`` so every machine checks the same way;
    ``test_agrees_with_pyyaml`` compares it with PyYAML wherever that is installed."""
    compose = read_yaml(path.read_text())
    assert isinstance(compose, dict)
    return compose


# --- the Dockerfiles -----------------------------------------------------------------------


def dockerfile(role: str) -> str:
    return (ROOT / "docker" / f"{role}.Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        name, _, arguments = pending.partition(" ")
        out.append((name.upper(), arguments.strip()))
        pending = ""
    return out


def base_stage(text: str) -> str:
    """The text of the ``base`` stage: from the ``ARG BASE`` its FROM names up to the next FROM."""
    match = re.search(r"^ARG BASE=.*?^FROM \S+ AS base$.*?(?=^FROM )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "no 'ARG BASE=...' then 'FROM ... AS base' stage"
    return match.group(0)


# --- the tests -----------------------------------------------------------------------------


class ComposeConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.compose = load_compose()
        self.services: dict[str, dict[str, Any]] = self.compose["services"]
        self.config = self.load_config()
        self.replicas = {r.name: r for r in (*self.config.catalog, *self.config.order)}
        self.frontends = {f.name: f for f in self.config.frontends}

    def load_config(self) -> Config:
        """``etc/bazar.compose.toml`` through ``bazar.config.load``, its secret file moved to a temp
        file so that loading it here neither reads nor creates /var/lib/bazar-secret."""
        text = COMPOSE_CONFIG.read_text()
        self.secret_file = re.findall(r'^secret_file = "([^"]+)"$', text, re.MULTILINE)
        self.assertEqual(len(self.secret_file), 1, "exactly one secret_file line")
        self.assertNotRegex(text, r"(?m)^\s*secret\s*=", "no inline secret in a committed config")
        directory = Path(tempfile.mkdtemp(prefix="bazar-containers-"))
        (directory / "secret").write_text("not-the-real-one\n")
        copy = directory / "bazar.toml"
        copy.write_text(text.replace(self.secret_file[0], str(directory / "secret")))
        config = load(copy)
        (directory / "secret").unlink()
        copy.unlink()
        directory.rmdir()
        return config

    def test_compose_v1_reads_it_too(self) -> None:
        """Debian's docker-compose (v1) refuses a top-level `name`: the project's name comes from
        .env, which v1 and v2 both read."""
        self.assertNotIn("name", self.compose)
        env = (ROOT / ".env").read_text().splitlines()
        self.assertIn("COMPOSE_PROJECT_NAME=bazar", env)

    def test_every_config_replica_has_a_service_and_vice_versa(self) -> None:
        """The services are exactly the config's front ends and replicas, the secret initialiser
        and HAProxy."""
        self.assertEqual(list(self.frontends), ["frontend-1", "frontend-2"])
        self.assertEqual(len(self.config.catalog), 3)
        self.assertEqual(len(self.config.order), 3)
        self.assertEqual(set(self.services), {*self.frontends, INIT_SERVICE, BALANCER, *self.replicas})

    def test_each_replica_service_runs_that_replica(self) -> None:
        """catalog-N runs the catalog image with --replica catalog-N; likewise for orders."""
        for name, replica in self.replicas.items():
            service = self.services[name]
            self.assertEqual(service["command"], ["--replica", name])
            self.assertEqual(service["build"]["dockerfile"], f"docker/{replica.role}.Dockerfile")
            self.assertEqual(service["image"], f"bazar-{replica.role}:local")
        for name in self.frontends:  # the front-end image, told which front end of the config it is
            service = self.services[name]
            self.assertEqual(service["command"], ["--name", name])
            self.assertEqual(service["build"]["dockerfile"], "docker/frontend.Dockerfile")
            self.assertEqual(service["image"], "bazar-frontend:local")

    def test_urls_name_the_service_and_its_listening_port(self) -> None:
        """Each URL's host is the service name and its port the one the process listens on;
        so is each channel address's (a client endpoint string)."""
        for name, replica in {**self.frontends, **self.replicas}.items():
            url = urlsplit(replica.url)
            self.assertEqual(url.hostname, name)
            self.assertEqual(tcp_address(replica.listen), ("0.0.0.0", url.port))
            assert replica.channel_listen is not None
            address = tcp_address(replica.channel_listen)
            assert address is not None
            self.assertEqual(address[0], "0.0.0.0")
            self.assertEqual(replica.channel, f"tcp:host={name}:port={address[1]}")

    def test_only_haproxy_is_published_and_only_on_loopback(self) -> None:
        """127.0.0.1:5000 on the host (or $BAZAR_PORT: the container test takes a free one)
        reaches the port HAProxy binds; nothing else is published."""
        (bind,) = haproxy_directives("bind")
        self.assertRegex(bind[0], r"^:\d+$")  # every address of its container
        self.assertEqual(self.services[BALANCER]["ports"], [f"127.0.0.1:${{BAZAR_PORT:-5000}}{bind[0]}"])
        for name, service in self.services.items():
            if name != BALANCER:
                self.assertNotIn("ports", service, name)

    def test_haproxy_balances_the_config_front_ends(self) -> None:
        """Its servers are the config's front ends, by name and `url`, each health-checked; it
        starts once both are healthy, and reads its config and nothing of Bazar's (no secret)."""
        servers = {words[0]: words[1] for words in haproxy_directives("server")}
        expected = {name: f.url.removeprefix("http://") for name, f in self.frontends.items()}
        self.assertEqual(servers, expected)
        self.assertTrue(all("check" in words for words in haproxy_directives("server")))
        service = self.services[BALANCER]
        self.assertEqual(service["build"]["dockerfile"], "docker/haproxy.Dockerfile")
        self.assertEqual(
            service["depends_on"], {name: {"condition": "service_healthy"} for name in self.frontends}
        )
        self.assertEqual(service["volumes"], [f"./etc/haproxy.compose.cfg:{HAPROXY_CONFIG_IN_CONTAINER}:ro"])
        self.assertEqual(entrypoint("haproxy")[-2:], ["-f", HAPROXY_CONFIG_IN_CONTAINER])

    def test_every_container_is_confined(self) -> None:
        """A read-only root, no capabilities, no new privileges, for every service alike."""
        for name, service in self.services.items():
            self.assertIs(service["read_only"], True, name)
            self.assertEqual(service["cap_drop"], ["ALL"], name)
            self.assertEqual(service["security_opt"], ["no-new-privileges:true"], name)

    def test_each_replica_has_its_own_named_data_volume(self) -> None:
        """A distinct named volume, declared at the top level, at data_dir in each replica."""
        declared = set(self.compose["volumes"])
        used = []
        for name in self.replicas:
            mounts = [v for v in self.services[name]["volumes"] if v.endswith(f":{self.config.data_dir}")]
            self.assertEqual(len(mounts), 1, name)
            volume = mounts[0].split(":")[0]
            self.assertIn(volume, declared)
            used.append(volume)
        self.assertEqual(len(set(used)), len(self.replicas))

    def test_config_and_secret_reach_every_container(self) -> None:
        """Every service mounts the one config; the secret volume is writable only by secret-init,
        which every other service waits for."""
        secret_dir = str(PurePosixPath(self.secret_file[0]).parent)
        self.assertIn("secret", self.compose["volumes"])
        for name, service in self.services.items():
            if name == BALANCER:
                continue  # checked above: its own config only
            volumes = service["volumes"]
            self.assertIn(CONFIG_MOUNT, volumes, name)
            expected = f"secret:{secret_dir}" + ("" if name == INIT_SERVICE else ":ro")
            self.assertIn(expected, volumes, name)
            if name != INIT_SERVICE:
                condition = service["depends_on"][INIT_SERVICE]["condition"]
                self.assertEqual(condition, "service_completed_successfully", name)
        init = self.services[INIT_SERVICE]
        self.assertEqual(init["entrypoint"][-1], CONFIG_IN_CONTAINER)
        self.assertIn("bazar.config import load", init["entrypoint"][2])
        self.assertEqual(init["restart"], "no")

    def test_the_front_ends_wait_for_healthy_replicas(self) -> None:
        """Every replica has a health check on its own port, and each front end starts after them."""
        for name, replica in self.replicas.items():
            for frontend in self.frontends:
                depends = self.services[frontend]["depends_on"]
                self.assertEqual(depends[name], {"condition": "service_healthy"}, frontend)
            port = tcp_address(replica.listen)
            assert port is not None
            self.assertIn(f"'127.0.0.1', {port[1]}", self.services[name]["healthcheck"]["test"][-1])


def haproxy_directives(name: str) -> list[list[str]]:
    """The lines of etc/haproxy.compose.cfg that start with ``name`` (no comments), in words."""
    lines = (line.split("#", 1)[0].split() for line in HAPROXY_COMPOSE_CONFIG.read_text().splitlines())
    return [words[1:] for words in lines if words and words[0] == name]


def entrypoint(role: str) -> list[str]:
    """The role's Dockerfile ENTRYPOINT, which must be in exec (JSON) form."""
    entrypoints = [args for name, args in instructions(dockerfile(role)) if name == "ENTRYPOINT"]
    assert len(entrypoints) == 1, f"{role}: {len(entrypoints)} ENTRYPOINT instructions"
    command = json.loads(entrypoints[0])  # exec form: twistd is PID 1 and gets SIGTERM itself
    assert isinstance(command, list)
    return command


class DockerfileTests(SynchronousTestCase):
    def test_entrypoint_names_the_role_plugin(self) -> None:
        """Each image runs twistd in the foreground with its role's plugin and the mounted config."""
        makers = self.plugins()
        for role in ROLES:
            self.assertEqual(
                entrypoint(role),
                ["twistd", "-n", "--pidfile=", f"bazar-{role}", "--config", CONFIG_IN_CONTAINER],
            )
            self.assertIn(f"bazar-{role}", makers)

    def test_json_logs_override_only_adds_the_logger(self) -> None:
        """docker/compose.json-logs.yaml gives every role its image's entrypoint plus --logger."""
        services = load_compose()["services"]
        override = load_compose(JSON_LOGS_OVERRIDE)["services"]
        self.assertEqual(set(override), set(services) - {INIT_SERVICE, BALANCER})
        for name, service in override.items():
            self.assertEqual(set(service), {"entrypoint"}, name)
            role = services[name]["build"]["dockerfile"].removeprefix("docker/").removesuffix(".Dockerfile")
            twistd, *rest = entrypoint(role)
            self.assertEqual(service["entrypoint"], [twistd, "--logger", "bazar.logs.json_observer", *rest])

    def plugins(self) -> set[str]:
        """The tap names in twisted/plugins/bazar_plugins.py, the file the images install."""
        namespace: dict[str, Any] = {}
        source = ROOT / "twisted" / "plugins" / "bazar_plugins.py"
        exec(compile(source.read_text(), str(source), "exec"), namespace)
        return {m.tapname for m in namespace.values() if IServiceMaker.providedBy(m)}

    def test_base_stage_is_shared(self) -> None:
        """The three files' base stages are identical, so the images share those layers."""
        frontend, catalog, order = (base_stage(dockerfile(role)) for role in ROLES)
        self.assertEqual(frontend, catalog)
        self.assertEqual(frontend, order)
        self.assertIn("ARG BASE=debian:bookworm-slim\nFROM ${BASE} AS base\n", frontend)

    def test_pip_installs_into_a_venv_trusting_only_a_build_secret(self) -> None:
        """Debian's Python refuses a system-wide pip (PEP 668), so the install goes to a venv on
        PATH; a proxy's CA bundle may come in as the build secret `pip-cert`, never as a file,
        argument or variable that would stay in the image."""
        for role in ROLES:
            steps = instructions(dockerfile(role))
            pip = [args for name, args in steps if name == "RUN" and "pip install" in args]
            self.assertEqual(len(pip), 1, role)
            self.assertTrue(pip[0].startswith("--mount=type=secret,id=pip-cert "), pip[0])
            self.assertIn("python3 -m venv /opt/bazar", " ".join(a for n, a in steps if n == "RUN"))
            env = " ".join(args for name, args in steps if name == "ENV")
            self.assertIn("PATH=/opt/bazar/bin:", env)
            self.assertNotIn("PIP_CERT", env)
            self.assertFalse([a for n, a in steps if n in ("ARG", "COPY") and "cert" in a.lower()], role)

    def test_runs_as_an_unprivileged_numeric_user(self) -> None:
        """The last USER is a numeric uid other than root, and the role stage does not change it."""
        for role in ROLES:
            users = [args for name, args in instructions(dockerfile(role)) if name == "USER"]
            self.assertEqual(len(users), 1, role)
            uid = users[0].split(":")[0]
            self.assertTrue(uid.isdigit() and int(uid) != 0, users)

    def test_haproxy_image(self) -> None:
        """Debian's haproxy on the same base as the roles, run as a numeric uid other than root and
        the roles' (it needs none of their files), in the foreground on the mounted config."""
        steps = instructions(dockerfile("haproxy"))
        self.assertEqual(steps[:2], [("ARG", "BASE=debian:bookworm-slim"), ("FROM", "${BASE}")])
        (install,) = [args for name, args in steps if name == "RUN" and "apt-get install" in args]
        self.assertIn("--no-install-recommends haproxy", install)
        (user,) = [args for name, args in steps if name == "USER"]
        uid, gid = user.split(":")
        self.assertTrue(uid.isdigit() and int(uid) not in (0, 10001), user)
        self.assertIn(f"--uid {uid} ", install)
        self.assertIn(f"--gid {gid} ", install)
        self.assertEqual(entrypoint("haproxy"), ["haproxy", "-db", "-f", HAPROXY_CONFIG_IN_CONTAINER])
        self.assertNotIn("COPY", [name for name, _ in steps])  # its config is mounted, not built in

    def test_build_context_holds_what_the_image_copies(self) -> None:
        """.dockerignore excludes everything but what COPY needs, so no data or secret gets in."""
        patterns = [
            line.strip()
            for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        self.assertEqual(patterns[0], "*")
        included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
        for role in ROLES:
            for name, args in instructions(dockerfile(role)):
                if name == "COPY":
                    for source in args.split()[:-1]:
                        self.assertTrue(
                            any(source == i or source.startswith(i + "/") for i in included), source
                        )
        self.assertFalse(any("bazar-data" in i or "secret" in i for i in included))


YAML_SAMPLE = (
    "# comment\n"
    "top:\n"
    "  plain: word # trailing comment\n"
    '  quoted: "a: b # not a comment"\n'
    "  single: 'it''s'\n"
    "  number: 5\n"
    "  ratio: 0.5\n"
    '  flow: ["x", "y"]\n'
    "  empty:\n"
    "  nested:\n"
    "    flag: no\n"
    "  items:\n"
    '    - "127.0.0.1:5000:5000"\n'
    "    - plain\n"
    "list_at_key_indent:\n"
    "- one\n"
)
YAML_SAMPLE_READ = {
    "top": {
        "plain": "word",
        "quoted": "a: b # not a comment",
        "single": "it's",
        "number": 5,
        "ratio": 0.5,
        "flow": ["x", "y"],
        "empty": None,
        "nested": {"flag": False},
        "items": ["127.0.0.1:5000:5000", "plain"],
    },
    "list_at_key_indent": ["one"],
}


class YAMLReaderTests(SynchronousTestCase):
    def test_reads_the_subset(self) -> None:
        """Comments, quoting, numbers, booleans, flow lists, empty values and nesting."""
        self.assertEqual(read_yaml(YAML_SAMPLE), YAML_SAMPLE_READ)

    def test_refuses_what_it_does_not_understand(self) -> None:
        """Anchors, aliases, merge keys, block scalars and lists of mappings are refused."""
        for text in (
            "a: &anchor\n  b: 1\n",
            "a: *alias\n",
            "a:\n  <<: *alias\n",
            "a: |\n  text\n",
            "a:\n  - name: x\n",
            "a: {b: 1}\n",
        ):
            self.assertRaises(UnsupportedYAML, read_yaml, text)

    def test_agrees_with_pyyaml(self) -> None:
        """Where PyYAML is installed, it reads compose.yaml and the sample exactly as read_yaml does."""
        try:
            import yaml
        except ImportError:
            raise SkipTest("PyYAML is not installed (it is no dependency of Bazar)") from None
        for path in (COMPOSE, JSON_LOGS_OVERRIDE):
            self.assertEqual(read_yaml(path.read_text()), yaml.safe_load(path.read_text()), path.name)
        self.assertEqual(yaml.safe_load(YAML_SAMPLE), YAML_SAMPLE_READ)
