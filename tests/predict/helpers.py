"""Run prediction in the test process or as `predict.py`, and read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import zarr
from rich.console import Console

from batteryct.predict import (
    InferenceSettings,
    Outputs,
    PostProcessSettings,
    PredictSettings,
    predict_series,
)
from batteryct.series import Series, load_series, save_series, with_scans
from tests.predict.conftest import predict_trainer
from tests.training.helpers import ROOT

QUIET = Console(quiet=True)


def predict(
    ckpt: Path, series: Path, out: Path, console: Console = QUIET, **settings: object
) -> Series | None:
    """predict_series in this process: two scans, slabs of 8, entropy maps, fp32."""
    defaults = {"scans": ("scan_00", "scan_12"), "slab": 8, "outputs": Outputs(entropy=True)}
    defaults.update(settings)
    return predict_series(
        ckpt,
        series,
        out,
        InferenceSettings(precision="fp32"),
        PredictSettings(**defaults),
        PostProcessSettings(),
        predict_trainer(),
        console=console,
    )


def read_outputs(out: Path, scan: str) -> dict[str, np.ndarray]:
    """The published labels, network labels and entropy of a scan."""
    return {
        name: zarr.open_array(str(out / name / f"{scan}.zarr"), mode="r")[:]
        for name in ("labels", "labels_net", "entropy")
    }


def predict_py(*overrides: str, cwd: Path) -> subprocess.Popen[str]:
    """`python predict.py <overrides>`, started (stdout and stderr piped)."""
    env = {**os.environ, "BATTERYCT_ROOT": str(cwd)}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "predict.py"), *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def common_overrides(ckpt: Path, series_dir: Path, out: Path) -> list[str]:
    """predict.py overrides for scan_06 along rows in slabs of 2 (24 units), fp32."""
    return [
        f"ckpt={ckpt}",
        f"series={series_dir / 'series.yaml'}",
        f"out={out}",
        "settings.scans=[scan_06]",
        "settings.axes=[rows]",
        "settings.slab=2",
        "inference.precision=fp32",
        f"hydra.run.dir={out.parent / ('hydra-' + out.name)}",
    ]


def series_with_images(series_dir: Path, folder: Path, images: list[Path]) -> Path:
    """A manifest in `folder` of the small series' first scans (scan_00, scan_01, ...) with
    their images replaced by `images` and no labels."""
    source = load_series(series_dir / "series.yaml")
    scans = [
        replace(scan, image=image.resolve(), labels=None, labels_gt=None, labelled_slices=None)
        for scan, image in zip(source.scans, images, strict=False)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    return save_series(with_scans(source, scans), folder / "series.yaml")
