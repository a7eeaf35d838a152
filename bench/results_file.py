"""The one way benchmarks record their figures: ``bench/results/<name>.json`` with run metadata."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(name: str, figures: dict) -> Path:
    """Write ``figures`` with the benchmark name, time, commit and machine; print and return the path."""
    path = RESULTS_DIR / f"{name}.json"
    record = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": measured_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def measured_commit() -> str | None:
    """The code being measured: the commit, with ``-dirty`` when a file outside ``bench/results`` differs
    from it (results written earlier in a chain of benchmarks do not count)."""
    root = Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)bench/results")
    return commit + ("-dirty" if changed else "")
