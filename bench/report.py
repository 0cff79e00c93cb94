"""The result table (every figure beside its reference and target) and the JSON file."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Check:
    """One line of the table: ``ratio`` compares ``figure`` with ``reference`` measured in the same
    run; ``met`` is None for figures reported without a target."""

    scenario: str
    label: str
    figure: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def machine(postgres_version: str, redis_version: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": postgres_version,
        "redis": redis_version,
    }


def table(checks: list[Check]) -> str:
    header = ("scenario", "measurement", "figure", "reference", "ratio", "target", "met")
    rows = [
        (
            c.scenario,
            c.label,
            c.figure,
            c.reference,
            "" if c.ratio is None else f"{c.ratio:.2f}",
            c.target,
            {True: "yes", False: "NO", None: ""}[c.met],
        )
        for c in checks
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, document: dict, checks: list[Check]) -> None:
    path.write_text(json.dumps(document | {"checks": [asdict(c) for c in checks]}, indent=2, default=str) + "\n")
