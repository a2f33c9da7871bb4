"""The user documentation describes the product, not how it was developed, and its links lead somewhere.

README.md and docs/*.md (not docs/results/, which holds the bench scripts' outputs) must name no machine by a
private letter ("VM A"), no issue number and no history ("used to": that goes to CHANGELOG.md); the README's quick
start must fit on one screen; every relative link must reach a file, and every #anchor a heading or an
``<a id>`` of the page it names. Each check is also shown to fail on a copy of the pages with one bad line, so a
check that finds nothing cannot pass unnoticed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRIVATE_LANGUAGE = re.compile(r"VM [A-D]|(?i:issue) [0-9]|used to")
QUICK_START_MAX_LINES = 30

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^()\s]+)\)|!\[[^\]]*\]\(([^()\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def user_pages(root: Path) -> list[Path]:
    """README.md and the pages directly under docs/ (docs/results/ holds bench outputs, not pages)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def language_problems(root: Path) -> list[str]:
    """``file:line: text`` for every line of the user pages in the team's private language."""
    problems = []
    for page in user_pages(root):
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            if PRIVATE_LANGUAGE.search(line):
                problems.append(f"{page.relative_to(root)}:{number}: {line.strip()}")
    return problems


def quick_start_lines(root: Path) -> int:
    """Lines of the README's "## Quick start" section, heading and code blocks included, trailing blanks not."""
    lines = (root / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("## Quick start")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = lines[start:end]
    while section and not section[-1].strip():
        section.pop()
    return len(section)


def _prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the page's lines outside fenced code blocks."""
    kept, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append((number, line))
    return kept


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lowercased, punctuation dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (repeats numbered as GitHub does) and its ``<a id>``s."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = page.read_text(encoding="utf-8")
    for _, line in _prose(text):
        heading = _HEADING.match(line)
        if heading:
            slug = _slug(heading.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(_HTML_ID.findall(text))
    return found


def link_problems(root: Path) -> list[str]:
    """``file:line: target (why)`` for every relative link of the user pages that leads nowhere."""
    problems = []
    for page in user_pages(root):
        for number, line in _prose(page.read_text(encoding="utf-8")):
            line = re.sub(r"`[^`]*`", "``", line)  # inline code is not a link
            for match in _LINK.finditer(line):
                target = match.group(1) or match.group(2)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                path_part, _, anchor = target.partition("#")
                destination = (page.parent / path_part).resolve() if path_part else page
                where = f"{page.relative_to(root)}:{number}: {target}"
                if not destination.exists():
                    problems.append(f"{where} (no such file)")
                elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                    problems.append(f"{where} (no such anchor in {destination.name})")
    return problems


def test_the_pages_speak_of_the_product_only() -> None:
    assert language_problems(ROOT) == []


def test_the_quick_start_fits_on_one_screen() -> None:
    assert quick_start_lines(ROOT) <= QUICK_START_MAX_LINES


def test_every_relative_link_and_anchor_leads_somewhere() -> None:
    assert link_problems(ROOT) == []


def _copy_pages(destination: Path) -> Path:
    shutil.copy(ROOT / "README.md", destination / "README.md")
    (destination / "docs").mkdir()
    for page in (ROOT / "docs").glob("*.md"):
        shutil.copy(page, destination / "docs" / page.name)
    shutil.copytree(ROOT / "docs" / "results", destination / "docs" / "results")
    for file in ("LICENSE", "CHANGELOG.md"):
        shutil.copy(ROOT / file, destination / file)
    shutil.copytree(ROOT / "deploy", destination / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def test_the_checks_fail_on_private_language_a_long_quick_start_and_a_dead_link(tmp_path: Path) -> None:
    copy = _copy_pages(tmp_path)
    assert language_problems(copy) == [] and link_problems(copy) == []
    performance = copy / "docs" / "performance.md"
    performance.write_text(performance.read_text(encoding="utf-8")
                           + "\nMeasured on VM D.\nAs Issue 21 says, it used to be slower.\n"
                           + "See [the table](results.md#no-such-heading) and [the folder](performance/).\n",
                           encoding="utf-8")
    problems = language_problems(copy)
    assert [p.split(": ", 1)[1] for p in problems] == ["Measured on VM D.", "As Issue 21 says, it used to be slower."]
    assert all(p.startswith("docs/performance.md:") for p in problems)
    dead = link_problems(copy)
    assert len(dead) == 2
    assert "results.md#no-such-heading (no such anchor in results.md)" in dead[0]
    assert "performance/ (no such file)" in dead[1]
    readme = copy / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace(
        "## Quick start\n", "## Quick start\n" + "A line of timings.\n" * QUICK_START_MAX_LINES), encoding="utf-8")
    assert quick_start_lines(copy) > QUICK_START_MAX_LINES

