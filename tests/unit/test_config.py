"""Tests for ``bazar.config``: the defaults, etc/bazar.toml, the shared secret, and invalid files.

Every test that could write a secret file points ``data_dir`` and ``secret_file`` (or the
working directory) at a fresh temporary directory, never at the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bazar.config import ConfigError, Replica, document, dump, endpoints, load, parse, write

REPO_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "bazar.toml"


def defaults() -> dict[str, Any]:
    """A document that sets only an inline secret: everything else comes from the built-in defaults."""
    return {"cluster": {"secret": "s3cret"}}


class TempDirMixin:
    def tempdir(self) -> Path:
        """A fresh directory outside the repository, removed after the test."""
        path = Path(tempfile.mkdtemp(prefix="bazar-config-test-"))
        self.addCleanup(shutil.rmtree, path, True)  # type: ignore[attr-defined]
        return path

    def write_config(self, body: str, cluster: str = "") -> Path:
        """A config file: ``body``, then a [cluster] that keeps data and secret in a temp dir."""
        directory = self.tempdir()
        path = directory / "bazar.toml"
        path.write_text(
            f"{body}\n[cluster]\ndata_dir = '{directory / 'data'}'\nsecret_file = '{directory / 'secret'}'\n"
            f"{cluster}\n"
        )
        return path


class OneLineErrorMixin(TempDirMixin):
    def assertOneLineError(self, path: Path, *fragments: str) -> str:
        """Loading ``path`` fails with one line that starts with the path and has ``fragments``."""
        error = str(self.assertRaises(ConfigError, load, path))  # type: ignore[attr-defined]
        for check in ("\n" not in error, error.startswith(f"{path}: "), *(f in error for f in fragments)):
            self.assertTrue(check, error)  # type: ignore[attr-defined]
        return error


class DefaultsTests(SynchronousTestCase):
    def test_frontend(self) -> None:
        """One front end, listening and reachable on 127.0.0.1:5000, its channel on 5010."""
        config = parse(defaults())
        self.assertEqual(
            config.frontend,
            Replica(
                name="frontend",
                role="frontend",
                listen="tcp:port=5000:interface=127.0.0.1",
                url="http://127.0.0.1:5000",
                channel_listen="tcp:port=5010:interface=127.0.0.1",
                channel="tcp:host=127.0.0.1:port=5010",
            ),
        )

    def test_replicas(self) -> None:
        """Three catalog and three order replicas on loopback, the first of each the sequencer."""
        config = parse(defaults())
        self.assertEqual([r.name for r in config.catalog], ["catalog-1", "catalog-2", "catalog-3"])
        self.assertEqual([r.name for r in config.order], ["order-1", "order-2", "order-3"])
        self.assertEqual({r.role for r in config.catalog}, {"catalog"})
        self.assertEqual({r.role for r in config.order}, {"order"})
        self.assertEqual(
            [r.url for r in config.catalog + config.order],
            [f"http://127.0.0.1:{port}" for port in (5101, 5102, 5103, 5201, 5202, 5203)],
        )
        self.assertEqual(config.catalog[1].listen, "tcp:port=5102:interface=127.0.0.1")
        self.assertEqual(
            [r.channel for r in config.catalog + config.order],
            [f"tcp:host=127.0.0.1:port={port}" for port in (5111, 5112, 5113, 5211, 5212, 5213)],
        )
        self.assertEqual(config.order[2].channel_listen, "tcp:port=5213:interface=127.0.0.1")

    def test_books(self) -> None:
        """Seven books unless the config says otherwise; a million is fine."""
        self.assertEqual(parse(defaults()).books, 7)
        for books in (7, 8, 1_000_000, 100_000_000):
            with self.subTest(books=books):
                raw = defaults()
                raw["cluster"]["books"] = books
                self.assertEqual(parse(raw).books, books)

    def test_cache_size_and_data_dir(self) -> None:
        """The cache holds 5 entries; data lives under bazar-data/, one SQLite file per replica."""
        config = parse(defaults())
        self.assertEqual(config.cache_size, 5)
        self.assertEqual(config.data_dir, Path("bazar-data"))
        self.assertEqual(config.database_path(config.order[2]), Path("bazar-data") / "order-3.sqlite")
        self.assertEqual(config.source, "embedded defaults")

    def test_replica_lookup(self) -> None:
        """Config.replica finds a replica of a role by name."""
        config = parse(defaults())
        self.assertIs(config.replica("catalog", "catalog-2"), config.catalog[1])
        self.assertIs(config.replica("order", "order-3"), config.order[2])


class RepoConfigTests(TempDirMixin, SynchronousTestCase):
    def load_repo_config(self) -> tuple[dict[str, Any], Any]:
        """etc/bazar.toml as written, and parsed with its data dir and secret moved to a temp dir."""
        raw = tomllib.loads(REPO_CONFIG.read_text())
        original = {**raw["cluster"]}
        directory = self.tempdir()
        raw["cluster"]["data_dir"] = str(directory / "data")
        raw["cluster"]["secret_file"] = str(directory / "secret")
        return original, parse(raw, source=str(REPO_CONFIG))

    def test_same_as_the_defaults(self) -> None:
        """etc/bazar.toml spells out the built-in defaults: same replicas and cache size."""
        _, config = self.load_repo_config()
        builtin = parse(defaults())
        self.assertEqual(config.frontend, builtin.frontend)
        self.assertEqual(config.catalog, builtin.catalog)
        self.assertEqual(config.order, builtin.order)
        self.assertEqual(config.cache_size, builtin.cache_size)
        self.assertEqual(config.books, builtin.books)

    def test_books_is_shown_commented_out(self) -> None:
        """etc/bazar.toml shows the books key with its default, commented out."""
        self.assertIn("# books = 7\n", REPO_CONFIG.read_text())

    def test_same_data_dir_and_secret_file_as_the_defaults(self) -> None:
        """Its data_dir and secret_file are where the defaults put them."""
        original, _ = self.load_repo_config()
        self.assertEqual(Path(original["data_dir"]), parse(defaults()).data_dir)
        self.assertEqual(Path(original["secret_file"]), Path(original["data_dir"]) / "secret")


class SecretTests(TempDirMixin, SynchronousTestCase):
    def cluster(self, directory: Path, secret_file: Path | None = None) -> dict[str, Any]:
        cluster: dict[str, Any] = {"data_dir": str(directory / "data")}
        if secret_file is not None:
            cluster["secret_file"] = str(secret_file)
        return {"cluster": cluster}

    def test_generated_with_mode_0600(self) -> None:
        """Without a secret, one is generated into secret_file, readable by its owner only."""
        directory = self.tempdir()
        path = directory / "nested" / "secret"
        config = parse(self.cluster(directory, path))
        self.assertGreaterEqual(len(config.secret), 32)
        self.assertEqual(path.read_text(), config.secret + "\n")
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)

    def test_reused_on_second_load(self) -> None:
        """A second load reads the secret the first one generated, and leaves the file alone."""
        directory = self.tempdir()
        path = directory / "secret"
        first = parse(self.cluster(directory, path))
        second = parse(self.cluster(directory, path))
        self.assertEqual(first.secret, second.secret)
        self.assertEqual(path.read_text(), first.secret + "\n")

    def test_existing_file_is_read(self) -> None:
        """An existing secret file is used as is (surrounding whitespace stripped)."""
        directory = self.tempdir()
        path = directory / "secret"
        path.write_text("  shared-by-hand \n")
        self.assertEqual(parse(self.cluster(directory, path)).secret, "shared-by-hand")

    def test_default_location_is_in_data_dir(self) -> None:
        """Without secret_file, the secret goes to <data_dir>/secret."""
        directory = self.tempdir()
        config = parse(self.cluster(directory))
        self.assertEqual((directory / "data" / "secret").read_text(), config.secret + "\n")

    def test_load_without_a_file_uses_defaults_relative_to_the_working_directory(self) -> None:
        """load() with no etc/bazar.toml in the working directory gives the built-in defaults."""
        directory = self.tempdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        config = load()
        self.assertEqual(config.source, "embedded defaults")
        self.assertEqual(config.catalog, parse(defaults()).catalog)
        self.assertEqual((directory / "bazar-data" / "secret").read_text(), config.secret + "\n")

    def test_inline_secret(self) -> None:
        """An inline secret is used and no secret file is written."""
        directory = self.tempdir()
        path = directory / "secret"
        raw = self.cluster(directory, path)
        raw["cluster"]["secret"] = "inline"
        self.assertEqual(parse(raw).secret, "inline")
        self.assertFalse(path.exists())
        self.assertEqual(list(directory.iterdir()), [])

    def test_empty_inline_secret_is_rejected(self) -> None:
        """secret = "" is an error, not an empty secret."""
        error = self.assertRaises(ConfigError, parse, {"cluster": {"secret": ""}})
        self.assertIn("'secret' must be a non-empty string", str(error))

    def test_unreadable_secret_file(self) -> None:
        """A secret_file that cannot be read (here a directory) is a ConfigError naming it."""
        directory = self.tempdir()
        error = self.assertRaises(ConfigError, parse, self.cluster(directory, directory))
        self.assertIn(f"cannot read the secret file {directory}", str(error))


class InvalidConfigTests(TempDirMixin, SynchronousTestCase):
    """Each broken file raises ConfigError with a message that says what is wrong, and where."""

    CATALOG = "[[catalog]]\nname = '{name}'\nlisten = 'tcp:{port}'\nurl = '{url}'\n"

    def catalog(self, name: str, port: int = 5101, url: str | None = None) -> str:
        return self.CATALOG.format(name=name, port=port, url=url or f"http://127.0.0.1:{port}")

    def assertConfigError(self, path: Path, *fragments: str) -> None:
        error = self.assertRaises(ConfigError, load, path)
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_missing_file(self) -> None:
        """A path that does not exist is named in the error."""
        directory = self.tempdir()
        path = directory / "nope.toml"
        self.assertConfigError(path, f"config file {path} does not exist")

    def test_bad_toml(self) -> None:
        """A syntax error says the file is not valid TOML."""
        path = self.write_config("[[catalog]\nname = ")
        self.assertConfigError(path, f"config file {path} is not valid TOML")

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is reported as invalid TOML, not a UnicodeDecodeError."""
        directory = self.tempdir()
        path = directory / "bazar.toml"
        path.write_bytes(b"[cluster]\ncache_size = 5 # \xff\n")
        self.assertConfigError(path, "is not valid TOML")

    def test_duplicate_names(self) -> None:
        """Two replicas of one role with the same name are refused, listing the names."""
        path = self.write_config(self.catalog("twin", 5101) + self.catalog("twin", 5102))
        self.assertConfigError(path, "[[catalog]] replica names must be unique", "'twin'")

    def test_url_without_http(self) -> None:
        """A replica url without a scheme names the replica's position and the bad url."""
        body = self.catalog("catalog-1", 5101) + self.catalog("catalog-2", 5102, url="127.0.0.1:5102")
        path = self.write_config(body)
        self.assertConfigError(
            path, "[[catalog]] #2", "must start with http:// or https://", "127.0.0.1:5102"
        )

    def test_channel_needs_both_addresses(self) -> None:
        """A channel is given by where it listens and where it is reached: one alone is refused."""
        for key in ("channel_listen = 'tcp:5111'", "channel = 'tcp:host=127.0.0.1:port=5111'"):
            with self.subTest(key=key):
                path = self.write_config(self.catalog("solo") + key + "\n")
                self.assertConfigError(
                    path, "[[catalog]] #1", "give both 'channel_listen' and 'channel', or neither"
                )

    def test_channel_is_optional(self) -> None:
        """A replica given without a channel has none: internal calls to it go over HTTP."""
        config = load(self.write_config(self.catalog("plain")))
        self.assertEqual((config.catalog[0].channel_listen, config.catalog[0].channel), (None, None))

    def test_frontend_url_without_http(self) -> None:
        """The front end's url is checked the same way."""
        path = self.write_config("[frontend]\nlisten = 'tcp:5000'\nurl = 'ftp://x'\n")
        self.assertConfigError(path, "[frontend]", "must start with http://")

    def test_missing_listen(self) -> None:
        """A replica without 'listen' says which key is missing, and where."""
        path = self.write_config("[[order]]\nname = 'order-1'\nurl = 'http://127.0.0.1:5201'\n")
        self.assertConfigError(path, "[[order]] #1", "'listen' must be a non-empty string")

    def test_replica_not_a_table(self) -> None:
        """A replica given as a plain string is refused."""
        path = self.write_config("order = ['order-1']\n")
        self.assertConfigError(path, "[[order]] #1 must be a table")

    def test_cluster_not_a_table(self) -> None:
        """[cluster] given as a plain value is refused."""
        directory = self.tempdir()
        path = directory / "bazar.toml"
        path.write_text("cluster = 'big'\n")
        self.assertConfigError(path, "[cluster] must be a table")

    def test_bad_cache_sizes(self) -> None:
        """cache_size must be an integer >= 0: negatives, strings, booleans and floats are refused."""
        for value, shown in (("-1", "-1"), ("-3", "-3"), ("'x'", "'x'"), ("true", "True"), ("2.5", "2.5")):
            with self.subTest(cache_size=value):
                path = self.write_config("", cluster=f"cache_size = {value}")
                self.assertConfigError(
                    path,
                    f"[cluster]: 'cache_size' must be an integer >= 0 (0 disables the cache), not {shown}",
                )

    def test_probe_interval(self) -> None:
        """probe_interval: seconds, 1 by default, from 0.05 to 60; anything else is refused."""
        self.assertEqual(load(self.write_config("", cluster="probe_interval = 0.25")).probe_interval, 0.25)
        for value in ("0", "-1", "61", "'1'", "true"):
            with self.subTest(probe_interval=value):
                path = self.write_config("", cluster=f"probe_interval = {value}")
                self.assertConfigError(path, "'probe_interval' must be a number of seconds from 0.05 to 60")

    def test_bad_book_counts(self) -> None:
        """books must be an integer from 7 (the report's books) up: fewer, strings, booleans,
        floats and absurd sizes are refused, naming the value."""
        for value, shown in (
            ("6", "6"),
            ("0", "0"),
            ("-7", "-7"),
            ("'1000'", "'1000'"),
            ("true", "True"),
            ("1e6", "1000000.0"),
            ("100_000_001", "100000001"),
        ):
            with self.subTest(books=value):
                path = self.write_config("", cluster=f"books = {value}")
                self.assertConfigError(
                    path,
                    "[cluster]: 'books' must be an integer from 7 (the report's books) to 100_000_000,",
                    f"not {shown}",
                )

    def test_empty_replica_lists(self) -> None:
        """An empty list of catalog or order replicas is refused."""
        for role in ("catalog", "order"):
            with self.subTest(role=role):
                path = self.write_config(f"{role} = []\n")
                self.assertConfigError(path, f"[[{role}]] must list at least one replica")

    def test_unknown_replica(self) -> None:
        """Config.replica names the file and the replicas it does know."""
        path = self.write_config(self.catalog("north", 5101) + self.catalog("south", 5102))
        config = load(path)
        self.assertEqual(config.source, str(path))
        error = self.assertRaises(ConfigError, config.replica, "catalog", "catalog-1")
        self.assertEqual(str(error), f"unknown catalog replica 'catalog-1' in {path}; known: north, south")

    def test_valid_file_overrides(self) -> None:
        """A valid file's values replace the defaults; sections it omits keep them."""
        path = self.write_config(
            self.catalog("north", 6001, url="http://10.0.0.1:6001/"), cluster="cache_size = 2"
        )
        config = load(path)
        self.assertEqual(config.cache_size, 2)
        self.assertEqual(config.books, 7)
        self.assertEqual(config.catalog, (Replica("north", "catalog", "tcp:6001", "http://10.0.0.1:6001"),))
        self.assertEqual([r.name for r in config.order], ["order-1", "order-2", "order-3"])
        self.assertEqual(config.data_dir, path.parent / "data")


class EndpointTests(OneLineErrorMixin, SynchronousTestCase):
    """Endpoint strings and URLs are checked when the file is loaded, so that a typo is one
    line naming the key and the file, not a traceback (or a crash loop) once a process starts."""

    def test_bad_server_endpoints(self) -> None:
        """listen and channel_listen must be server endpoint strings Twisted can parse."""
        for key, value, detail in (
            ("listen", "tcp:port=notaport", "notaport"),
            ("listen", "tcp:5000:bogus=1", "bogus"),
            ("listen", "tcp:port=70000", "70000"),
            ("listen", "pigeon:5000", "pigeon"),
            ("channel_listen", "tcp:port=x5010", "x5010"),
        ):
            with self.subTest(key=key, value=value):
                table = {
                    "listen": "tcp:port=5000:interface=127.0.0.1",
                    "url": "http://127.0.0.1:5000",
                    "channel_listen": "tcp:port=5010:interface=127.0.0.1",
                    "channel": "tcp:host=127.0.0.1:port=5010",
                    key: value,
                }
                body = "[frontend]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
                path = self.write_config(body)
                self.assertOneLineError(
                    path, "[frontend]", f"{key!r}", json.dumps(value), "server endpoint", detail
                )

    def test_bad_client_endpoints(self) -> None:
        """channel must be a client endpoint string Twisted can parse."""
        for value, detail in (
            ("tcp:host=127.0.0.1:port=notaport", "notaport"),
            ("tcp:host=127.0.0.1", "port"),
            ("tcp:host=127.0.0.1:port=5111:colour=blue", "colour"),
            ("carrier-pigeon:host=x", "carrier-pigeon"),
        ):
            with self.subTest(channel=value):
                body = (
                    "[[catalog]]\nname = 'c'\nlisten = 'tcp:5101'\nurl = 'http://127.0.0.1:5101'\n"
                    f"channel_listen = 'tcp:5111'\nchannel = {json.dumps(value)}\n"
                )
                path = self.write_config(body)
                self.assertOneLineError(
                    path, "[[catalog]] #1", "'channel'", json.dumps(value), "client endpoint", detail
                )

    def test_bad_urls(self) -> None:
        """A url must name a host, and a port if any that is a number from 0 to 65535."""
        for value in ("http://127.0.0.1:notaport", "http://127.0.0.1:70000", "http://:5101", "http:///books"):
            with self.subTest(url=value):
                body = f"[[order]]\nname = 'o'\nlisten = 'tcp:5201'\nurl = {json.dumps(value)}\n"
                self.assertOneLineError(self.write_config(body), "[[order]] #1", "'url'", json.dumps(value))

    def test_good_endpoints(self) -> None:
        """What etc/bazar.toml and the compose config use, and other kinds Twisted knows, load."""
        body = (
            "[frontend]\nlisten = 'tcp6:port=5000:interface=\\:\\:1'\nurl = 'http://[::1]:5000'\n"
            "channel_listen = 'unix:/tmp/bazar-frontend.sock'\n"
            "channel = 'unix:path=/tmp/bazar-frontend.sock'\n"
            "[[catalog]]\nname = 'c'\nlisten = 'tcp:5101'\nurl = 'https://catalog.example:5101/'\n"
            "channel_listen = 'tcp:port=5111:interface=0.0.0.0'\nchannel = 'tcp:host=catalog-1:port=5111'\n"
        )
        config = load(self.write_config(body))
        self.assertEqual(config.frontend.listen, "tcp6:port=5000:interface=\\:\\:1")
        self.assertEqual(config.catalog[0].url, "https://catalog.example:5101")

    def test_every_error_names_the_file(self) -> None:
        """Errors found in the file's values start with the file's path."""
        path = self.write_config("", cluster="cache_size = -1")
        self.assertOneLineError(path, "[cluster]", "'cache_size'")


class UnknownKeyTests(OneLineErrorMixin, SynchronousTestCase):
    """A key or table the config does not know is refused (a typo would otherwise silently
    leave the default in place), suggesting the known key it is closest to."""

    def test_misspelt_cluster_key(self) -> None:
        """cache_sise = 3 is refused, suggesting cache_size."""
        path = self.write_config("", cluster="cache_sise = 3")
        self.assertOneLineError(path, "[cluster]", "unknown key 'cache_sise'", "did you mean 'cache_size'?")

    def test_misspelt_replica_key(self) -> None:
        """A replica's keys are checked too, naming which replica."""
        body = "[[order]]\nname = 'o'\nlisten = 'tcp:5201'\nurl = 'http://127.0.0.1:5201'\nchanel = 'x'\n"
        self.assertOneLineError(
            self.write_config(body), "[[order]] #1", "unknown key 'chanel'", "did you mean 'channel'?"
        )

    def test_misspelt_table(self) -> None:
        """An unknown top-level table or key is refused, suggesting the table it is closest to."""
        path = self.write_config("[[catalogue]]\nname = 'c'\n")
        self.assertOneLineError(path, "unknown table 'catalogue'", "did you mean 'catalog'?")

    def test_nothing_close(self) -> None:
        """Without a close match, the error lists the keys that are known."""
        path = self.write_config("", cluster="colour = 'blue'")
        self.assertOneLineError(
            path,
            "[cluster]: unknown key 'colour'",
            "known keys: books, cache_size, data_dir, frontends, probe_interval, secret, secret_file",
        )

    def test_cluster_key_in_the_wrong_table(self) -> None:
        """A [cluster] key that landed in another table (written below it) says where it belongs."""
        body = "[[order]]\nname = 'o'\nlisten = 'tcp:5201'\nurl = 'http://127.0.0.1:5201'\nbooks = 9\n"
        path = self.write_config(body)
        self.assertOneLineError(path, "[[order]] #1", "unknown key 'books'", "in [cluster]")

    def test_repo_configs_use_only_known_keys(self) -> None:
        """Every config the repository ships loads (its data moved to a temporary directory)."""
        for shipped in sorted(REPO_CONFIG.parent.glob("*.toml")):
            with self.subTest(config=shipped.name):
                raw = tomllib.loads(shipped.read_text())
                directory = self.tempdir()
                raw["cluster"]["data_dir"] = str(directory / "data")
                raw["cluster"]["secret_file"] = str(directory / "secret")
                parse(raw, source=str(shipped))


class WriterTests(TempDirMixin, SynchronousTestCase):
    """``document``/``dump``/``write``: the one writer, whose files ``load`` reads back as written."""

    def cluster_document(self, directory: Path, **cluster: Any) -> dict[str, Any]:
        names = ("frontend", "catalog-1", "catalog-2", "order-1")
        tables = {name: endpoints(6000 + 100 * i, 6050 + 100 * i) for i, name in enumerate(names)}
        cluster = {"data_dir": str(directory / "data"), "secret": 'a "quoted" s3cret', **cluster}
        return document(cluster, tables)

    def test_written_file_loads_as_the_document_parses(self) -> None:
        """A written file loads to the same Config as its document parses to (strings with
        quotes and backslashes included); each process has its own HTTP and channel ports."""
        directory = self.tempdir()
        raw = self.cluster_document(directory, cache_size=0, books=12, data_dir=str(directory / "d\\ata"))
        config = load(write(directory / "bazar.toml", raw))
        self.assertEqual(config, parse(raw))
        self.assertEqual([r.name for r in config.catalog], ["catalog-1", "catalog-2"])
        self.assertEqual(config.catalog[1].listen, "tcp:port=6200:interface=127.0.0.1")
        self.assertEqual(config.catalog[1].channel, "tcp:host=127.0.0.1:port=6250")
        self.assertEqual((config.cache_size, config.books, config.secret), (0, 12, 'a "quoted" s3cret'))

    def test_none_leaves_the_default(self) -> None:
        """A [cluster] key given as None is not written, so its default applies."""
        directory = self.tempdir()
        raw = self.cluster_document(directory, books=None)
        self.assertNotIn("books", dump(raw))
        self.assertEqual(load(write(directory / "bazar.toml", raw)).books, 7)

    def test_address(self) -> None:
        """``endpoints`` on another address: both servers bind it, both clients reach it."""
        self.assertEqual(
            endpoints(5101, address="10.1.2.11"),
            {
                "listen": "tcp:port=5101:interface=10.1.2.11",
                "url": "http://10.1.2.11:5101",
                "channel_listen": "tcp:port=5111:interface=10.1.2.11",
                "channel": "tcp:host=10.1.2.11:port=5111",
            },
        )

    def test_unknown_keys_refused_when_written(self) -> None:
        """The writer refuses what the reader would: an unknown table, or key in any table."""
        directory = self.tempdir()
        raw = self.cluster_document(directory, cache_sise=3)
        self.assertIn("unknown key 'cache_sise'", str(self.assertRaises(ConfigError, dump, raw)))
        raw = self.cluster_document(directory)
        raw["catalog"][1]["chanel"] = "x"
        self.assertIn("[[catalog]] #2: unknown key 'chanel'", str(self.assertRaises(ConfigError, dump, raw)))
        raw = self.cluster_document(directory)
        raw["catalogue"] = []
        self.assertIn("unknown table 'catalogue'", str(self.assertRaises(ConfigError, dump, raw)))


class FrontendsTests(OneLineErrorMixin, SynchronousTestCase):
    """Several named front ends: ``[[frontend]]`` tables or ``frontends = N``; the first is the default."""

    def test_one_frontend_by_default(self) -> None:
        config = parse(defaults())
        self.assertEqual(config.frontends, (config.frontend,))
        self.assertEqual(config.frontend.name, "frontend")

    def test_shorthand(self) -> None:
        """``frontends = 3``: each on its own ports, all sharing the lab's port 5000."""
        config = parse({"cluster": {**defaults()["cluster"], "frontends": 3}})
        self.assertEqual([f.name for f in config.frontends], ["frontend-1", "frontend-2", "frontend-3"])
        self.assertEqual(config.frontend, config.frontends[0])
        self.assertEqual({f.public for f in config.frontends}, {"tcp:port=5000:interface=127.0.0.1"})
        urls = {f.url for f in config.frontends}
        channels = {f.channel for f in config.frontends}
        self.assertEqual((len(urls), len(channels)), (3, 3))
        self.assertNotIn("http://127.0.0.1:5000", urls)
        self.assertIsNone(parse(defaults()).frontend.public)
        self.assertEqual(config.frontend_named("frontend-2"), config.frontends[1])
        self.assertRaises(ConfigError, config.frontend_named, "frontend-9")

    def test_a_listener_on_the_shared_port(self) -> None:
        """The front ends may share their public port; nothing else may listen there."""
        public = "public = 'tcp:port=6000:interface=127.0.0.1'\n"
        body = (
            f"[[frontend]]\nlisten = 'tcp:port=6001'\nurl = 'http://127.0.0.1:6001'\n{public}"
            f"[[frontend]]\nlisten = 'tcp:port=6002'\nurl = 'http://127.0.0.1:6002'\n{public}"
        )
        self.assertEqual(len(load(self.write_config(body)).frontends), 2)
        clash = body.replace("tcp:port=6002'", "tcp:port=6000:interface=127.0.0.1'")
        self.assertOneLineError(self.write_config(clash), "frontend-2's listen", "public port")
        unix = "[frontend]\nlisten = 'tcp:port=6001'\nurl = 'http://127.0.0.1:6001'\npublic = 'unix:/tmp/x'\n"
        self.assertOneLineError(self.write_config(unix), "'public'", "TCP endpoint with a port")

    def test_tables(self) -> None:
        """``[[frontend]]`` tables, named in order unless they say, the first the default."""
        body = (
            "[[frontend]]\nlisten = 'tcp:port=6000'\nurl = 'http://127.0.0.1:6000'\n"
            "[[frontend]]\nname = 'edge'\nlisten = 'tcp:port=6001'\nurl = 'http://127.0.0.1:6001'\n"
        )
        config = load(self.write_config(body))
        self.assertEqual([f.name for f in config.frontends], ["frontend-1", "edge"])
        self.assertEqual(config.frontend.url, "http://127.0.0.1:6000")

    def test_written_and_read_back(self) -> None:
        """``document`` writes several front ends as [[frontend]] tables, read back the same."""
        raw = document(
            defaults()["cluster"],
            {"frontend-1": endpoints(6100), "frontend-2": endpoints(6200), "catalog-1": endpoints(6300)},
        )
        path = write(self.tempdir() / "bazar.toml", raw)
        config = load(path)
        self.assertEqual(
            [f.url for f in config.frontends], ["http://127.0.0.1:6100", "http://127.0.0.1:6200"]
        )

    def test_duplicate_names(self) -> None:
        body = (
            "[[frontend]]\nname = 'a'\nlisten = 'tcp:port=6000'\nurl = 'http://127.0.0.1:6000'\n"
            "[[frontend]]\nname = 'a'\nlisten = 'tcp:port=6001'\nurl = 'http://127.0.0.1:6001'\n"
        )
        self.assertOneLineError(self.write_config(body), "front-end names must be unique", "'a'")

    def test_duplicate_ports(self) -> None:
        """A second front end on the first one's port (a copied table) is refused where it is written."""
        body = (
            "[[frontend]]\nlisten = 'tcp:port=6000:interface=127.0.0.1'\nurl = 'http://127.0.0.1:6000'\n"
            "[[frontend]]\nlisten = 'tcp:port=6000:interface=127.0.0.1'\nurl = 'http://127.0.0.1:6001'\n"
        )
        self.assertOneLineError(self.write_config(body), "frontend-2's listen", "frontend-1's listen", "6000")

    def test_a_frontend_on_a_replicas_channel_port(self) -> None:
        body = "[[frontend]]\nlisten = 'tcp:port=5111:interface=127.0.0.1'\nurl = 'http://127.0.0.1:5111'\n"
        self.assertOneLineError(self.write_config(body), "port 5111", "catalog-1's channel_listen")

    def test_the_same_port_on_two_hosts_is_fine(self) -> None:
        """One process per host (or container): the same port everywhere."""
        body = "".join(
            f"[[catalog]]\nname = 'catalog-{n}'\nlisten = 'tcp:port=5101'\nurl = 'http://host-{n}:5101'\n"
            for n in (1, 2, 3)
        )
        self.assertEqual(len(load(self.write_config(body)).catalog), 3)

    def test_the_same_port_on_two_interfaces_is_fine(self) -> None:
        body = (
            "[[frontend]]\nlisten = 'tcp:port=6000:interface=10.0.0.1'\nurl = 'http://10.0.0.1:6000'\n"
            "[[frontend]]\nlisten = 'tcp:port=6000:interface=10.0.0.2'\nurl = 'http://10.0.0.2:6000'\n"
        )
        self.assertEqual(len(load(self.write_config(body)).frontends), 2)

    def test_count_that_disagrees_with_the_tables(self) -> None:
        body = "[frontend]\nlisten = 'tcp:port=6000'\nurl = 'http://127.0.0.1:6000'\n"
        self.assertOneLineError(
            self.write_config(body, cluster="frontends = 2"), "'frontends' = 2", "1 front-end"
        )

    def test_bad_count(self) -> None:
        for bad in ("0", "true", "'2'", "65"):
            with self.subTest(bad=bad):
                self.assertOneLineError(
                    self.write_config("", cluster=f"frontends = {bad}"), "'frontends' must be"
                )
