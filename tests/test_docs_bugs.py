"""docs/bugs.md is the one place that states the bug classes and facts the code cites.

anchors   = GitHub heading slugs and <a id> names of docs/bugs.md
citations = every "docs/bugs.md#<anchor>" in reference/, kernels/, conformance/, tests/, ci/, every "bugs.md#<anchor>"
            in docs/ and README.md, every bare "bug-NN-slug" in the code folders
assert citations <= anchors
assert no file of the repository's own text mentions the private notes file (the word below)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUGS_MD = REPO / "docs" / "bugs.md"
CODE_FOLDERS = ("reference", "kernels", "conformance", "tests", "ci")
TOP_FILES = ("README.md", "tox.ini", "pyproject.toml")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
#: Spelled in two parts so that this file does not contain the word it forbids.
FORBIDDEN = "FA" + "CTS"

CODE_CITATION = re.compile(r"docs/bugs\.md#([A-Za-z0-9_-]+)")
DOCS_CITATION = re.compile(r"(?<![\w/])bugs\.md#([A-Za-z0-9_-]+)")
BARE_BUG_ANCHOR = re.compile(r"(?<![\w#/-])(bug-\d{2}-[a-z0-9]+(?:-[a-z0-9]+)*)")
INTERNAL_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    return {_slug(h) for h in HEADING.findall(markdown)} | set(HTML_ANCHOR.findall(markdown))


def _text_files(root: Path) -> list[Path]:
    """Readable UTF-8 text files under root (a folder or one file), caches and binaries left out."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for p in paths:
        if SKIP_DIRS.intersection(p.relative_to(REPO).parts):
            continue
        try:
            p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(p)
    return out


def _citations() -> dict[str, set[str]]:
    """anchor -> files citing it."""
    found: dict[str, set[str]] = {}
    sources = [(p, (CODE_CITATION, BARE_BUG_ANCHOR)) for d in CODE_FOLDERS for p in _text_files(REPO / d)]
    sources += [(p, (DOCS_CITATION, CODE_CITATION)) for p in _text_files(REPO / "docs")]
    sources += [(p, (DOCS_CITATION, CODE_CITATION)) for p in _text_files(REPO / "README.md")]
    sources += [(BUGS_MD, (INTERNAL_LINK,))]
    for path, patterns in sources:
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            for anchor in pattern.findall(text):
                found.setdefault(anchor, set()).add(str(path.relative_to(REPO)))
    return found


def test_the_slug_rule_matches_githubs_for_the_headings_used_here() -> None:
    assert _slug("bug-13-lds-overflow") == "bug-13-lds-overflow"
    assert _slug("Appendix: facts the code relies on") == "appendix-facts-the-code-relies-on"
    assert _slug("`moe-cts compile` (AOT)") == "moe-cts-compile-aot"


def test_every_cited_docs_bugs_anchor_exists() -> None:
    anchors = _anchors(BUGS_MD.read_text(encoding="utf-8"))
    cited = _citations()
    assert len(cited) >= 20, (
        f"only {len(cited)} distinct anchors cited: the citation patterns no longer match"
    )
    missing = {a: sorted(files) for a, files in cited.items() if a not in anchors}
    assert not missing, f"anchors cited but absent from docs/bugs.md: {missing}"


def test_docs_bugs_has_one_entry_per_bug_class_numbered_in_order() -> None:
    numbers = [
        int(n) for n in re.findall(r"^### bug-(\d{2})-", BUGS_MD.read_text(encoding="utf-8"), re.MULTILINE)
    ]
    assert numbers == list(range(1, len(numbers) + 1)), f"bug entries out of order or with gaps: {numbers}"
    assert len(numbers) >= 27, f"{len(numbers)} bug entries, expected at least 27"


def test_every_bug_entry_names_its_stage_and_formats() -> None:
    text = BUGS_MD.read_text(encoding="utf-8")
    entries = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    bugs = [e for e in entries if e.startswith("bug-")]
    lacking = [e.split("\n", 1)[0] for e in bugs if "Caught by:" not in e or "Formats:" not in e]
    assert not lacking, f"bug entries without 'Caught by:' or 'Formats:': {lacking}"


@pytest.mark.parametrize("root", (*CODE_FOLDERS, "docs", *TOP_FILES))
def test_no_file_mentions_the_private_notes_file(root: str) -> None:
    hits = [
        f"{p.relative_to(REPO)}:{n}"
        for p in _text_files(REPO / root)
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if FORBIDDEN in line
    ]
    assert not hits, f"cite docs/bugs.md#<anchor> or give the reason instead of {FORBIDDEN}: {hits}"
