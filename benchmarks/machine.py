"""What every benchmark says about the machine it ran on (figures without it mean nothing), and
where its figures go: its own section of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity: on a shared node, fewer than it has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_gib() -> float:
    """Physical memory of the machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def record_section(path: str | Path, heading: str, text: str) -> None:
    """Put `text` (which starts with `heading`, a top-level Markdown heading) into the results
    file: in place of that heading's section, up to the next top-level heading, or at the end.
    Each benchmark rewrites its own sections and leaves the others' alone."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    start = old.find(heading + "\n")
    if start < 0:
        path.write_text((old.rstrip("\n") + "\n\n" if old else "") + text)
        return
    end = old.find("\n# ", start + len(heading))
    rest = old[end + 1 :] if end >= 0 else ""
    path.write_text(old[:start] + text + ("\n" + rest if rest else ""))
