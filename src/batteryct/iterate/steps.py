"""Steps of the loop: a run folder each, a done marker written last, skipped once done."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from batteryct.outfolder import write_json_atomic

DONE = "done.json"
"""In a step's folder: written (atomically) only once every output of the step is complete."""
PROGRESS = "progress.csv"


@dataclass(frozen=True)
class Step:
    """One step: its name (= its folder under the loop's out) and what it does.

    `run(folder)` does the work (continuing whatever an interrupted run left in `folder`) and
    returns what the done marker records; None means the step waits for a person and is not done.
    """

    name: str
    run: Callable[[Path], dict[str, Any] | None]


def is_done(folder: Path) -> bool:
    return (folder / DONE).is_file()


def done_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / DONE).read_text())


def run_steps(out: Path, steps: list[Step], console: Console) -> bool:
    """Run the steps not done yet, in order; False when one waits for a person."""
    for number, step in enumerate(steps, start=1):
        folder = out / step.name
        prefix = f"[bold][{number}/{len(steps)}] {step.name}[/]"
        if is_done(folder):
            console.print(f"{prefix}: done before, skipped ({folder})")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        console.print(f"{prefix}: running in {folder}")
        started = time.perf_counter()
        record = step.run(folder)
        if record is None:
            return False
        seconds = time.perf_counter() - started
        record = {"step": step.name, "seconds": round(seconds, 1), **record}
        write_json_atomic(folder / DONE, record)
        _append_progress(out / PROGRESS, record)
        console.print(f"{prefix}: done in {seconds:.0f} s")
    return True


def _append_progress(path: Path, record: dict[str, Any]) -> None:
    """One row per finished step: name, seconds, labelled pixels, the step's summary."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "seconds", "labelled_px", "summary"])
        summary = {
            k: v
            for k, v in record.items()
            if k not in ("step", "seconds", "labelled_px", "test_iou")
            and (not isinstance(v, dict | list) or k == "iou")
        }
        writer.writerow(
            [record["step"], record["seconds"], record.get("labelled_px", ""), json.dumps(summary)]
        )
