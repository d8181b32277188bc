"""The code cites its reference documents as ``docs/<file>.md`` §N: every such citation names a
file that is there and a section heading ("## N. ...") that it has, and no citation leaves out
the ``docs/`` (a bare ``model.md`` pointed at a document outside the repository once)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("psvae", "search", "results_schema", "cluster", "bench", "tests")

# docs/model.md §2, ``docs/model.md`` §2-3, docs/latents.md section 4
CITATION = re.compile(r"docs/([\w-]+\.md)`*\s*(?:§|section )\s*(\d+)(?:\s*[-–]\s*(\d+))?")
LINK = re.compile(r"\]\(([\w-]+\.md)\)\s*§\s*(\d+)()")  # inside docs/: [latents.md](latents.md) §1
BARE = re.compile(r"(?<![/\w])([\w-]+\.md)`*\s*(?:§|section )\s*\d")


def _files():
    for package in CODE:
        for file in sorted((ROOT / package).rglob("*.py")):
            yield file.relative_to(ROOT).as_posix(), file.read_text()


def _documents():
    for file in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        yield file.relative_to(ROOT).as_posix(), file.read_text()


def _sections(doc: Path) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\.", doc.read_text(), re.MULTILINE)}


def test_every_citation_names_a_document_and_a_section_it_has():
    citations = [(name, m) for name, text in _files() for m in CITATION.finditer(text)]
    for name, text in _documents():
        citations += [(name, m) for pattern in (CITATION, LINK) for m in pattern.finditer(text)]
    assert len(citations) >= 8  # it found them
    wrong = []
    for name, m in citations:
        doc = ROOT / "docs" / m.group(1)
        first, last = int(m.group(2)), int(m.group(3) or m.group(2))
        if not doc.is_file():
            wrong.append(f"{name}: {m.group(0)}: no such document")
        elif missing := set(range(first, last + 1)) - _sections(doc):
            wrong.append(f"{name}: {m.group(0)}: no section {sorted(missing)}")
    assert not wrong, "\n".join(wrong)


def test_no_citation_leaves_out_the_folder():
    bare = [
        f"{name}: {m.group(0)}"
        for name, text in _files()
        if name != "tests/test_doc_citations.py"
        for m in BARE.finditer(text)
    ]
    assert not bare, "cite docs/<file>.md §N:\n" + "\n".join(bare)
