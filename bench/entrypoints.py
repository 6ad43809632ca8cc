"""Running the repository's entry points from a benchmark, as a user would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]


def run(console: Console, *args: str) -> float:
    """Run an entry point of the repository (`train.py …`) from its root; its wall time (s)."""
    console.print(f"[bold]$ python {' '.join(args)}")
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)
    return time.perf_counter() - start
