"""Write benchmark results into docs/benchmarks.md, one section per benchmark.

Each section is replaced in place, so running one benchmark keeps the others' last results.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Measured by `make bench` (and `make bench-quick`) on the project's own machines (no GPU).
nimctl and vLLM's own server take turns, each alone, A B in one round and B A in the next, and
every comparison is the median of per-round ratios, so that machine noise hits both. Compare
ratios, not absolute times, across runs.
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def write_section(key: str, title: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section marked by `key` in `doc` (docs/benchmarks.md)."""
    text = doc.read_text() if doc.exists() else HEADER
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{key} -->\n## {title}\n\n*{stamp}; {machine()}*\n\n{body.strip()}\n"
        f"<!-- /bench:{key} -->\n"
    )
    pattern = re.compile(rf"<!-- bench:{key} -->.*?<!-- /bench:{key} -->\n", re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section)
    )
    doc.write_text(text)


def publish(
    name: str, result: dict[str, Any], text: str, cache: Path, title: str, write_doc: bool
) -> None:
    """Keep the raw result in the cache, print the report, and (unless told not to) put it in
    its section of docs/benchmarks.md."""
    (cache / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(result, indent=2)
    )
    print(text)
    if write_doc:
        write_section(name, title, text)
