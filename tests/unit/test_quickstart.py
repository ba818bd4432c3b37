"""The README's commands run as written on a stock Debian/Ubuntu: no activation step, no pip
outside a virtualenv (PEP 668 refuses it there), and CI runs exactly the test command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def section(title: str, page: str = README) -> str:
    """A page's (the README's) text under ``## title``, up to the next ``## ``."""
    start = page.index(f"\n## {title}\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else None]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


def commands(block: str) -> list[list[str]]:
    """Each simple command of a block's lines (split at && and |, comments dropped)."""
    out = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0]
        for part in re.split(r"&&|\|", line):
            if part.strip():
                out.append(shlex.split(part))
    return out


class QuickStartTests(SynchronousTestCase):
    def test_exactly_two_commands(self) -> None:
        """Quick start: one command starts the cluster, one runs the tests (then the curl examples)."""
        start, test, *_ = sh_blocks(section("Quick start"))
        self.assertEqual(len(start.strip().splitlines()), 1)
        self.assertEqual(len(test.strip().splitlines()), 1)
        self.assertIn("bazar-cluster", start)
        self.assertIn("tox", test)

    def test_ci_runs_the_test_command(self) -> None:
        """.ci/run runs the README's test command, character for character, as one of its lines."""
        _, test, *_ = sh_blocks(section("Quick start"))
        self.assertIn(test.strip(), [line.strip() for line in CI.splitlines()])

    def test_no_activation_and_no_system_pip(self) -> None:
        """Every command of the README's Quick start and docs/operations.md's "Running roles
        separately" is python3 -m venv, a program under .venv/bin/, or curl: never pip, tox,
        twistd or python off the PATH."""
        for title, page in (("Quick start", README), ("Running roles separately", OPERATIONS)):
            for block in sh_blocks(section(title, page)):
                for argv in commands(block):
                    with self.subTest(section=title, command=argv):
                        program = argv[0]
                        if program == "python3":
                            self.assertEqual(argv[1:3], ["-m", "venv"])
                        else:
                            self.assertTrue(program.startswith(".venv/bin/") or program == "curl", argv)

    def test_says_what_debian_needs(self) -> None:
        """Debian and Ubuntu ship python3 without venv's pip: the Quick start says what to install."""
        self.assertIn("apt-get install python3-venv", section("Quick start"))
