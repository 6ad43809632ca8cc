"""Held-out IoU of any model (binary, 3-class, 5-class) in its own classes against full labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from rich.console import Console

from batteryct.data.label_map import LabelMap
from batteryct.evaluation import json_number, scores
from batteryct.io import open_volume
from batteryct.predict import (
    InferenceSettings,
    Outputs,
    PostProcessSettings,
    PredictSettings,
    load_trained_model,
    predict_series,
)
from batteryct.series import Series


def held_out_ids(truth: Series, labelled: set[str], limit: int | None) -> list[str]:
    """Scans with full labels that no step labelled (at most `limit`, evenly spaced)."""
    ids = [s.id for s in truth.scans if s.labels_gt is not None and s.id not in labelled]
    if limit is not None and len(ids) > limit:
        picks = np.linspace(0, len(ids) - 1, limit).round().astype(int)
        ids = [ids[i] for i in sorted(set(picks))]
    return ids


def model_iou(
    ckpt: Path,
    truth: Series,
    scans: list[str],
    out: Path,
    trainer: pl.Trainer,
    inference: InferenceSettings,
) -> dict[str, Any]:
    """Segment `scans` with `ckpt` into `out` (resumable) and score the network's raw labels
    per class of the model against `labels_gt` mapped through the model's own label map."""
    model = load_trained_model(ckpt)
    settings = PredictSettings(scans=tuple(scans), outputs=Outputs(entropy=False))
    predict_series(
        ckpt,
        truth.path,
        out,
        inference,
        settings,
        PostProcessSettings(enabled=False),
        trainer,
        console=Console(quiet=True),
    )
    label_map = model.config["data"]["label_map"]
    mapped = LabelMap(label_map["classes"], label_map["mapping"], "labels_gt")
    table = mapped.lookup_table(truth)
    n = len(model.class_names)
    confusion = np.zeros((n, n), np.int64)
    for scan_id in scans:
        true = truth.open_labels_gt(truth.scan(scan_id))
        predicted = open_volume(out / "labels_net" / f"{scan_id}.zarr")
        for start in range(0, true.shape[0], 32):
            t = mapped.apply(np.asarray(true[start : start + 32]), table, scan_id).astype(np.int64)
            p = np.asarray(predicted[start : start + 32]).astype(np.int64)
            keep = t < n
            confusion += np.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)
    result = scores(confusion, model.class_names)
    return {
        "scans": scans,
        "iou": dict(zip(model.class_names, map(json_number, result.iou), strict=True)),
        "foreground_mean": json_number(result.foreground_mean),
        "total_iou": json_number(result.total_iou),
    }
