"""Compose small training configs for tests (the real conf/, small overrides)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import batteryct.config  # noqa: F401  (registers the ${len:} resolver)
from tests.entry_point import ROOT

SMALL_RUN = (
    "data.patch_size=[32,32]",
    "data.batch_size=8",
    "data.train_patches_per_epoch=32",
    "data.val_patches=16",
    "data.test_patches=16",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.overlays.n_images=2",
)


LAPTOP_EXPERIMENT = (
    "scale=laptop",
    "data.patch_size=[32,32]",
    "data.batch_size=8",
    "data.train_patches_per_epoch=32",
    "data.val_patches=16",
    "trainer.max_epochs=1",
)
"""Overrides that shrink an iteration experiment (paper scale) to a quick CPU run."""


def small_overrides(series: Path, run_dir: Path) -> list[str]:
    """Overrides for a quick CPU run on `series`, writing into `run_dir`."""
    return [f"series={series}", f"run_dir={run_dir}", f"paths.root_dir={run_dir}", *SMALL_RUN]


def train_config(series: Path, run_dir: Path, *overrides: str) -> DictConfig:
    """The train config as `train.py` composes it, with small settings and `overrides` last."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*small_overrides(series, run_dir), *overrides])


class KilledError(RuntimeError):
    """What KillAt raises: the run stops as if its process had been killed."""


class KillAt(pl.Callback):
    """Stop a run with KilledError before training batch `batch` of epoch `epoch`.

    Add it with `+callbacks.kill={_target_:tests.training.helpers.KillAt,epoch:1,batch:2}`.
    """

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise KilledError(f"killed before batch {batch_idx} of epoch {trainer.current_epoch}")
