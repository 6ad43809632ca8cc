"""A small trained model, shared by the prediction tests."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest

from batteryct.predict import single_process_trainer
from batteryct.training import train
from tests.training.helpers import train_config


def predict_trainer() -> pl.Trainer:
    """A one-process CPU trainer as predict.py builds it."""
    return single_process_trainer("cpu")


@pytest.fixture(scope="session")
def small_checkpoint(small_series_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.ckpt of a 5-class cross-sectional model trained for 2 epochs on the small series."""
    run_dir = tmp_path_factory.mktemp("trained")
    train(
        train_config(
            small_series_dir / "series.yaml",
            run_dir,
            "trainer.max_epochs=4",
            "data.train_patches_per_epoch=64",
        )
    )
    return run_dir / "checkpoints" / "last.ckpt"
