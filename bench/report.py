"""Write one section of bench/RESULTS.md, leaving every other section as it is."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(results_md: Path, section: str) -> None:
    """Replace (or append) the section that starts with ``section``'s heading line."""
    heading = section.splitlines()[0]
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(heading) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results_md.write_text(text.rstrip("\n") + "\n")
