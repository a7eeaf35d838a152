"""The one way benchmarks record their figures: ``bench/results/<name>.json`` with run metadata."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(name: str, figures: dict) -> Path:
    """Write ``figures`` with the benchmark name, time and machine; print and return the path."""
    path = RESULTS_DIR / f"{name}.json"
    record = {"benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **figures}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path
