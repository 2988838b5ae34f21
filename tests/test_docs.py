"""The documentation a reader follows: every relative link in the README and docs/ names a file
or folder of this repository, which a fresh clone has (not ../shared/, nor a built artefact)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

DOCUMENTS = sorted([ROOT / "README.md", ROOT / "leaderboard" / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) and [text]: target; a target's "#anchor" and ' "title"' are not part of the path.
INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)


def relative_links(text: str) -> list[str]:
    """The link targets of a markdown text that are paths: not URLs, mail or in-page anchors, and
    not inside code (a fenced block or `code`)."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = INLINE.findall(text) + REFERENCE.findall(text)
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t, re.IGNORECASE)]


def test_the_link_finder_finds_relative_links_only():
    text = ('see [a](docs/a.md#x), [b](https://x.org/b), [c](#here), [d](<../e.md>), '
            '[m](mailto:a@b.c), `[e](not/a/link.md)`, [f](img.png "a title")\n\n'
            '[g]: ../shared/x.md\n```\n[h](in/code.md)\n```\n')
    assert relative_links(text) == ["docs/a.md#x", "../e.md", "img.png", "../shared/x.md"]


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``document`` that name nothing inside ``root``."""
    broken = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            broken.append(target)
    return broken


def test_a_link_outside_the_repository_or_to_nothing_is_caught(tmp_path):
    (tmp_path / "repo" / "docs").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "repo" / "docs" / "ok.md").write_text("x")
    doc = tmp_path / "repo" / "docs" / "guide.md"
    doc.write_text("[a](ok.md#part) [b](../../shared) [c](gone.md) [d](../docs/)")
    assert broken_links(doc, tmp_path / "repo") == ["../../shared", "gone.md"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path):
    assert broken_links(document) == [], f"{document.relative_to(ROOT)}: links that lead nowhere in a clone"
