"""Write one section of bench/RESULTS.md, leaving every other section as it is (atomically)."""

from __future__ import annotations

import re
from pathlib import Path

from fia_engine.output_paths import write_text_atomic


def write_section(results_md: Path, section: str) -> None:
    """Replace (or append) the section that starts with ``section``'s heading line."""
    heading = section.splitlines()[0]
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(heading) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text_atomic(results_md, text.rstrip("\n") + "\n")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (made if missing) by writing the whole file anew, atomically."""
    old = path.read_text() if path.exists() else ""
    write_text_atomic(path, old + text)
