"""The unit tests stay runnable under trial, without CI running them twice.

CI runs tests/unit once, under pytest (``tox -e tests``); ``tox -e trial`` runs them under trial
for whoever wants it. What would make the two runners differ is caught here, cheaply, by loading
each module with trial's own loader and counting: trial must find exactly the tests pytest
collects (pytest also collects plain ``test_*`` functions and ``Test*`` classes, which trial
never runs), every test class must be trial's ``SynchronousTestCase`` (the house's rule, and what
makes ``successResultOf`` and friends work), and no module may lean on pytest (a fixture or a
mark means nothing to trial).
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
import unittest
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType

from twisted.python import modules
from twisted.trial import runner
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"
PACKAGE = "tests.unit"
# pytest's defaults for what it collects; test_pytest_defaults_apply checks none is overridden.
# (Trial's loader is used as ``runner.TestLoader``: pytest would try a ``TestLoader`` here.)
PYTEST_FILES = ("test_*.py", "*_test.py")
PYTEST_CLASS_PREFIX = "Test"
PYTEST_FUNCTION_PREFIX = "test"
PYTEST_IMPORT = re.compile(r"^\s*(?:import|from)\s+_?pytest\b", re.MULTILINE)


def pytest_modules() -> list[str]:
    """The modules of tests/unit that pytest collects (it recurses, as trial does)."""
    names = []
    for path in sorted(UNIT.rglob("*.py")):
        if any(fnmatch(path.name, pattern) for pattern in PYTEST_FILES):
            names.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return names


def trial_modules() -> list[str]:
    """The modules of tests.unit that ``python -m twisted.trial tests.unit`` loads."""
    loader = runner.TestLoader()
    return sorted(
        m.name
        for m in modules.getModule(PACKAGE).walkModules()
        if m.name.rsplit(".", 1)[-1].startswith(loader.modulePrefix)
    )


def pytest_only(module: ModuleType) -> list[str]:
    """What pytest would collect in ``module`` and trial never runs: functions and plain classes."""
    found = []
    for name, value in vars(module).items():
        if inspect.isfunction(value) and name.startswith(PYTEST_FUNCTION_PREFIX):
            found.append(f"function {name}")
        elif (
            inspect.isclass(value)
            and name.startswith(PYTEST_CLASS_PREFIX)
            and not issubclass(value, unittest.TestCase)
            and getattr(value, "__test__", True)
            and value.__init__ is object.__init__  # pytest skips (with a warning) a class with
            and value.__new__ is object.__new__  # an __init__ or a __new__ of its own
        ):
            found.append(f"class {name}")
    return found


def case_classes(module: ModuleType) -> list[type[unittest.TestCase]]:
    """The TestCase classes pytest collects in ``module`` (imported ones too, as trial does)."""
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, unittest.TestCase)
        and getattr(value, "__test__", True)
    ]


def pytest_count(module: ModuleType) -> int:
    """How many tests pytest collects from ``module``'s TestCase classes (unittest's rule)."""
    names = unittest.TestLoader().getTestCaseNames
    return sum(len(names(cls)) for cls in case_classes(module))


def trial_count(module: ModuleType) -> int:
    return runner.TestLoader().loadModule(module).countTestCases()


def not_trials(module: ModuleType) -> list[str]:
    """TestCase classes with tests that are not trial's SynchronousTestCase."""
    names = unittest.TestLoader().getTestCaseNames
    return [
        cls.__name__
        for cls in case_classes(module)
        if names(cls) and not issubclass(cls, SynchronousTestCase)
    ]


class CheckerTests(SynchronousTestCase):
    """The checks find what they are for (else the tests below could not fail)."""

    def module(self) -> ModuleType:
        module = ModuleType("tests.unit.test_example")

        class Trial(SynchronousTestCase):
            def test_one(self) -> None: ...

            def test_two(self) -> None: ...

        class PyUnit(unittest.TestCase):
            def test_three(self) -> None: ...

        class TestPlain:
            def test_four(self) -> None: ...

        def test_five() -> None: ...

        module.Trial = Trial  # type: ignore[attr-defined]
        module.PyUnit = PyUnit  # type: ignore[attr-defined]
        module.TestPlain = TestPlain  # type: ignore[attr-defined]
        module.test_five = test_five  # type: ignore[attr-defined]
        return module

    def test_counts(self) -> None:
        module = self.module()
        self.assertEqual((pytest_count(module), trial_count(module)), (3, 3))

    def test_finds_what_only_pytest_runs(self) -> None:
        self.assertEqual(sorted(pytest_only(self.module())), ["class TestPlain", "function test_five"])

    def test_finds_a_test_case_that_is_not_trials(self) -> None:
        self.assertEqual(not_trials(self.module()), ["PyUnit"])

    def test_finds_a_pytest_import(self) -> None:
        self.assertRegex("import os\nimport pytest\n", PYTEST_IMPORT)
        self.assertRegex("from _pytest.fixtures import fixture\n", PYTEST_IMPORT)
        self.assertNotRegex("import pytest_twisted\n# pytest\n", PYTEST_IMPORT)


class TrialFindsWhatPytestRunsTests(SynchronousTestCase):
    def test_pytest_defaults_apply(self) -> None:
        """The counting below assumes pytest's default collection rules: nothing overrides them."""
        options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
        overridden = {"python_files", "python_classes", "python_functions"} & set(options)
        self.assertEqual(overridden, set())
        self.assertFalse((ROOT / "pytest.ini").exists() or (ROOT / "tests" / "unit" / "conftest.py").exists())

    def test_same_modules(self) -> None:
        """Trial loads every module of tests/unit that pytest collects, and no other."""
        self.assertEqual(trial_modules(), pytest_modules())
        self.assertIn("tests.unit.test_trial", trial_modules())

    def test_same_tests_in_every_module(self) -> None:
        """Module by module, trial finds as many tests as pytest collects, and pytest collects
        nothing that trial would not run."""
        differ = {}
        for name in pytest_modules():
            module = importlib.import_module(name)
            counts = (pytest_count(module), trial_count(module))
            extra = pytest_only(module)
            if counts[0] != counts[1] or extra:
                differ[name] = (counts, extra)
        self.assertEqual(differ, {})

    def test_every_test_case_is_trials(self) -> None:
        """Unit tests are SynchronousTestCases (trial's successResultOf, the same under both runners)."""
        found = {name: not_trials(importlib.import_module(name)) for name in pytest_modules()}
        self.assertEqual({name: classes for name, classes in found.items() if classes}, {})

    def test_no_module_leans_on_pytest(self) -> None:
        """No unit-test module imports pytest: a fixture, a mark or pytest.skip means nothing to trial."""
        leaning = [path.name for path in sorted(UNIT.rglob("*.py")) if PYTEST_IMPORT.search(path.read_text())]
        self.assertEqual(leaning, [])
