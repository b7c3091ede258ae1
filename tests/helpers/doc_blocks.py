"""The code blocks of README.md and docs/*.md, with the mark that says how a test treats each.

Every shell or Python block carries an HTML comment on the line before it:

- ``<!-- example: NAME -->``: run by a named test (tests/e2e/test_readme_examples.py);
- ``<!-- run -->``: run as written against the local stack by tests/e2e/test_docs_examples.py (the
  default ports are moved to the test stack's);
- ``<!-- run: servers -->``: each line starts a server that runs until stopped; the test starts them
  all on free ports and checks they serve together;
- ``<!-- not-run: REASON -->``: cannot run on the local stack (compose, Kubernetes, a GPU, a file of
  the reader's own), and the reason says why or which test covers it instead.

A block without a mark fails tests/unit/test_docs_consistency.py, so whoever adds one decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE_LANGS = frozenset({"bash", "sh", "shell", "console", "python"})
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
_MARK = re.compile(r"<!--\s*(example|run|not-run)\s*(?::\s*(.*?))?\s*-->\s*\Z", re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    mark: str | None  # example, run, not-run, or None
    note: str  # the example name, "servers", or the reason

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a runnable language in ``path``, with the mark just before it."""
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        lang = match.group(1).lower()
        if lang not in RUNNABLE_LANGS:
            continue
        before = text[:match.start()].rstrip()
        last_line = before.rsplit("\n", 1)[-1]
        mark = _MARK.search(last_line)
        found.append(Block(path, text.count("\n", 0, match.start()) + 1, lang, match.group(2),
                           mark.group(1) if mark else None, (mark.group(2) or "") if mark else ""))
    return found


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path)]
