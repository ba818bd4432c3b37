"""The wheel holds every package of the source tree: ``pyproject.toml`` lists them by hand (so
that ``twisted.plugins``, which has no ``__init__.py`` of ours, is installed too), and a package
left off the list installs a Bazar that cannot start (as ``bazar.protocol`` once did)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]


class PackageListTests(SynchronousTestCase):
    def test_every_package_is_listed(self) -> None:
        listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
        in_tree = {
            ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "bazar").rglob("__init__.py")
        }
        self.assertEqual(in_tree - listed, set())
        self.assertIn("twisted.plugins", listed)
