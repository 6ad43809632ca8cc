"""Loggers that know about resumed runs and about several runs in one process (sweeps)."""

from __future__ import annotations

import csv
from collections.abc import Sequence

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger that continues the `metrics.csv` of a resumed run.

    Lightning's writer deletes an existing `metrics.csv`. After `resume_from(step)` this one
    keeps the rows logged before that global step (the checkpoint's) and appends after them;
    rows the interrupted run logged after its checkpoint are dropped, as they are trained again.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step: int | None = None

    def resume_from(self, step: int) -> None:
        """Continue the run's metrics at global step `step` (call before anything is logged)."""
        self._resume_step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self._resume_step)
        return super().experiment


class _ContinuedWriter(ExperimentWriter):
    """An ExperimentWriter that keeps the rows of `metrics.csv` logged before `step`."""

    def __init__(self, log_dir: str, step: int) -> None:
        super().__init__(log_dir)
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = [row for row in reader if int(float(row["step"])) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(columns)

    def _check_log_dir_exists(self) -> None:
        """Keep the existing metrics (Lightning's writer deletes them here)."""


def finish_loggers(loggers: Sequence[Logger], failed: bool) -> None:
    """End the W&B run of this training run, so that the next run of a sweep starts its own."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish(exit_code=1 if failed else 0)
