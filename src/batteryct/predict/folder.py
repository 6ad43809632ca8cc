"""The output folder of predict.py: its claim, its jobs and the locks they share it by.

```
prediction.json      the fingerprint (checkpoint and settings) every job in the folder shares
jobs/<job>.json      one record per job process (DDP ranks each have one): host, process id,
                     start, checkpoint path, scans asked for
summary/<scan>.json  a finished scan (written last when it is published)
.work/<scan>/        unfinished work: zarr arrays and, in done/, a record and a lock per slab
.locks/              claim.lock, running.lock, <scan>.lock (empty files; see `batteryct.locks`)
```
Every job holds `running` (shared) while it works; a job with other settings may replace the
folder only when none does. A job holds its scan's lock (shared) while it segments the scan;
publishing the scan takes it exclusively, so a scan is published once, after everyone's slabs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from batteryct.errors import ConfigError
from batteryct.locks import FileLock
from batteryct.outfolder import write_json_atomic


class PredictionFolder:
    """Paths, claim, job records and locks of one predictions folder."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.mark = out / "prediction.json"
        self.locks = out / ".locks"
        self.jobs_dir = out / "jobs"

    def work(self, scan_id: str) -> Path:
        """Unfinished work of a scan."""
        return self.out / ".work" / scan_id

    def summary(self, scan_id: str) -> Path:
        """The record of a finished scan."""
        return self.out / "summary" / f"{scan_id}.json"

    def finished(self, scan_id: str) -> bool:
        return self.summary(scan_id).exists()

    def scan_lock(self, scan_id: str) -> FileLock:
        self.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(self.locks / f"{scan_id}.lock")

    def claim(self, fingerprint: str, overwrite: bool, console: Console) -> FileLock:
        """Mark the folder as made with `fingerprint`; return the `running` lock, held shared
        until the job ends.

        A folder claimed with another fingerprint is refused while another job runs in it, and
        when it holds work (finished scans or slabs) unless `overwrite`; a claim with no work
        (a run that failed before any) is replaced.
        """
        self.locks.mkdir(parents=True, exist_ok=True)
        running = FileLock(self.locks / "running.lock")
        with FileLock(self.locks / "claim.lock"):
            previous = (
                json.loads(self.mark.read_text()).get("fingerprint") if self.mark.exists() else None
            )
            if previous not in (None, fingerprint):
                if not running.acquire(wait=False):
                    raise ConfigError(
                        f"another predict.py job is segmenting into {self.out} with another "
                        "checkpoint or other settings; choose another out= or let it finish"
                    )
                try:
                    self._replace(overwrite, console)
                except BaseException:
                    running.release()
                    raise
            if previous != fingerprint:
                write_json_atomic(self.mark, {"fingerprint": fingerprint})
            running.acquire(shared=True)
        return running

    def _replace(self, overwrite: bool, console: Console) -> None:
        """Empty the folder of another claim, unless it holds work and `overwrite` is False."""
        scans = len(list((self.out / "summary").glob("*.json")))
        slabs = len(list((self.out / ".work").glob("*/done/*.done")))
        if (scans or slabs) and not overwrite:
            raise ConfigError(
                f"{self.out} holds predictions ({scans} finished scan(s), {slabs} slab(s) of "
                "unfinished ones) made with another checkpoint or other settings; choose "
                "another out= or pass overwrite=true to replace them"
            )
        if not (scans or slabs):
            console.print(
                f"{self.out} was claimed with another checkpoint or other settings by a run "
                "that segmented nothing: claiming it afresh"
            )
        for child in self.out.iterdir():
            if child == self.locks:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def record_job(self, job: dict[str, Any]) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.jobs_dir / f"{job['job']}.json", job)

    def jobs(self) -> list[dict[str, Any]]:
        """The records of every job process that worked in the folder, oldest first."""
        records = [json.loads(p.read_text()) for p in self.jobs_dir.glob("*.json")]
        return sorted(records, key=lambda job: (job["started"], job["job"]))
