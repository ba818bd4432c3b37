"""The documentation points at things that exist: every relative link, every code path, every module.

Modules move (a file split in two, a package made of a module), and a page that names the old
place still reads well while sending its reader nowhere. So every relative link in README.md and
docs/*.md must reach a file or folder of the repository (a ``#L12`` anchor a line the file has, a
``#heading`` anchor a heading of the page), every repository path written in backticks must
exist, and every dotted ``bazar.…`` name in backticks must import (a module, or an attribute of
one).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "docker" / "README.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 150  # one screen or two: the rest belongs in docs/

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# A path in the repository: one of its top-level folders, then the rest of the path.
REPO_PATH = re.compile(r"(?<![\w./-])((?:bazar|tests|twisted|docker|etc|\.ci)/[\w./-]*)")
DOTTED = re.compile(r"(?<![\w./-])(bazar(?:\.\w+)+)")
FILE_SUFFIXES = {"py", "toml", "md", "json", "sqlite", "log", "pid", "png", "yaml"}
LINE_ANCHOR = re.compile(r"L(\d+)(?:-L(\d+))?")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every ``#anchor`` a page's headings give (a repeated heading gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> Iterator[str]:
    """The targets of a page's Markdown links and images (not those inside code blocks)."""
    for match in LINK.finditer(FENCE.sub("", page.read_text())):
        yield match.group(1)


def code_texts(page: Path) -> Iterator[str]:
    """What a page puts in backticks: inline code spans and fenced blocks."""
    text = page.read_text()
    yield from FENCE.findall(text)
    yield from CODE_SPAN.findall(FENCE.sub("", text))


def link_problem(page: Path, target: str) -> str | None:
    """Why a link from ``page`` to ``target`` leads nowhere, or None if it leads somewhere."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path_part, _, anchor = target.partition("#")
    destination = (page.parent / path_part).resolve() if path_part else page
    if not destination.exists():
        return "no such file"
    if not destination.is_relative_to(ROOT):
        return "outside the repository"
    if not anchor:
        return None
    line_anchor = LINE_ANCHOR.fullmatch(anchor)
    if line_anchor:
        lines = len(destination.read_text().splitlines())
        last = int(line_anchor.group(2) or line_anchor.group(1))
        return None if last <= lines else f"line {last}, but the file has {lines}"
    if destination.suffix == ".md":
        return None if anchor in anchors(destination) else f"no heading gives #{anchor}"
    return None


def resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module, or an attribute (chain) of the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


class HelpersTests(SynchronousTestCase):
    """The checks below would pass on anything if their helpers found nothing: they find."""

    def test_slug(self) -> None:
        heading = "A hung sequencer: `python -m bazar.bench.hang`"
        self.assertEqual(slug(heading), "a-hung-sequencer-python--m-bazarbenchhang")
        self.assertEqual(slug("No read shows a write"), "no-read-shows-a-write")

    def test_link_problems(self) -> None:
        readme = ROOT / "README.md"
        self.assertIsNone(link_problem(readme, "docs/design.md"))
        self.assertIsNone(link_problem(readme, "https://example.invalid/nowhere"))
        self.assertEqual(link_problem(readme, "docs/nowhere.md"), "no such file")
        self.assertEqual(link_problem(readme, "docs/design.md#nowhere"), "no heading gives #nowhere")
        self.assertIsNone(link_problem(readme, "pyproject.toml#L1"))
        self.assertRegex(link_problem(readme, "pyproject.toml#L100000") or "", r"^line 100000, but")

    def test_resolves(self) -> None:
        self.assertTrue(resolves("bazar.logs.json_observer"))
        self.assertTrue(resolves("bazar.protocol"))
        self.assertFalse(resolves("bazar.no_such_module"))
        self.assertFalse(resolves("bazar.logs.no_such_name"))

    def test_finds_links_and_paths(self) -> None:
        self.assertIn("docs/design.md", list(links(ROOT / "README.md")))
        found = {m for text in code_texts(ROOT / "docs" / "design.md") for m in REPO_PATH.findall(text)}
        self.assertIn("bazar/storage.py", found)


class DocsTests(SynchronousTestCase):
    def test_pages(self) -> None:
        """The pages checked are the README, docker/README.md and docs/ (with its index)."""
        self.assertIn(ROOT / "docs" / "design.md", PAGES)
        self.assertIn(ROOT / "docs" / "README.md", PAGES)

    def test_relative_links_resolve(self) -> None:
        """Every relative link reaches an existing file, line or heading."""
        broken = [
            f"{relative(page)}: ({target}): {problem}"
            for page in PAGES
            for target in links(page)
            if (problem := link_problem(page, target)) is not None
        ]
        self.assertEqual(broken, [])

    def test_code_paths_exist(self) -> None:
        """Every repository path written in backticks (`bazar/storage.py`, `tests/unit/`) exists."""
        missing = sorted(
            {
                f"{relative(page)}: {path}"
                for page in PAGES
                for text in code_texts(page)
                for path in REPO_PATH.findall(text)
                if not (ROOT / path.rstrip(".,:;")).exists()
            }
        )
        self.assertEqual(missing, [])

    def test_dotted_names_import(self) -> None:
        """Every ``bazar.x.y`` in backticks (``python -m bazar.verify``, ``bazar.logs.json_observer``)
        is a module of the package or an attribute of one."""
        unknown = sorted(
            {
                f"{relative(page)}: {name}"
                for page in PAGES
                for text in code_texts(page)
                for name in DOTTED.findall(text)
                if name.rsplit(".", 1)[-1] not in FILE_SUFFIXES and not resolves(name)
            }
        )
        self.assertEqual(unknown, [])

    def test_index_lists_every_page(self) -> None:
        """docs/README.md links every page of docs/, so none is found only by accident."""
        index = ROOT / "docs" / "README.md"
        listed = {(index.parent / target.partition("#")[0]).resolve() for target in links(index)}
        pages = sorted((ROOT / "docs").glob("*.md"))
        unlisted = [relative(p) for p in pages if p != index and p not in listed]
        self.assertEqual(unlisted, [])

    def test_readme_is_short(self) -> None:
        """The README is what a newcomer reads first: one screen or two. The rest is in docs/."""
        lines = len((ROOT / "README.md").read_text().splitlines())
        self.assertLessEqual(lines, README_MAX_LINES)
