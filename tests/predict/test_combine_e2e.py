"""Iteration 2 -> 3 on the small series: binary models combined into labels that train a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from batteryct.predict import CombineSettings, InferenceSettings, combine_series
from batteryct.training import train
from tests.predict.conftest import predict_trainer
from tests.training.helpers import LAPTOP_EXPERIMENT, train_config


def test_binary_models_combine_into_labels_that_train_iteration_3(
    small_series_dir: Path, tmp_path: Path
) -> None:
    series = small_series_dir / "series.yaml"
    checkpoints = []
    for phase in ("deposited_li", "electrode"):
        run = tmp_path / phase
        train(train_config(series, run, f"experiment=iter2/{phase}", *LAPTOP_EXPERIMENT))
        checkpoints.append(str(run / "checkpoints" / "last.ckpt"))
    trainer = predict_trainer()
    settings = CombineSettings(checkpoints=tuple(checkpoints), threshold=0.6, scans=("scan_12",))
    manifest = combine_series(
        settings, series, tmp_path / "combined", InferenceSettings(), trainer, Console(quiet=True)
    )
    assert manifest is not None
    assert manifest.hand_label_values == {1: "background", 2: "deposited_li", 3: "electrode"}
    labels = manifest.open_labels(manifest.scan("scan_12")).read()
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert (labels > 0).any() and (labels == 0).any()  # sure voxels labelled, unsure left out
    value = train(
        train_config(
            tmp_path / "combined" / "series.yaml",
            tmp_path / "iter3",
            "experiment=iter3_multiclass",
            *LAPTOP_EXPERIMENT,
            "trainer.fast_dev_run=true",
        )
    )
    assert value is not None
