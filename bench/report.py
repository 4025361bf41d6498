"""Shared by the benchmarks: writes one "## title" section of a docs page, replacing it if present, so the
hand-written parts of the page stay."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, title: str, body: str, heading: str = "# Benchmarks") -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else heading + "\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"## {re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text, encoding="utf-8")
