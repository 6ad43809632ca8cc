"""Every scan and the checkpoint are checked before the first scan is segmented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from batteryct.errors import ConfigError
from batteryct.io import write_zarr
from batteryct.models.module import CHECKPOINT_KEY
from batteryct.predict import CheckpointError
from batteryct.series import load_series
from tests.entry_point import run_entry_point
from tests.predict.helpers import predict, series_with_images


def _bad_image(problem: str, image: np.ndarray, folder: Path) -> Path:
    """A copy of `image` with one problem a scan's volume can have."""
    if problem == "2d":
        tifffile.imwrite(folder / "plane.tif", image[40])
        return folder / "plane.tif"
    if problem == "truncated":
        tifffile.imwrite(folder / "stack.tif", image)
        data = (folder / "stack.tif").read_bytes()
        (folder / "stack.tif").write_bytes(data[: len(data) // 2])
        return folder / "stack.tif"
    slices = folder / "slices"
    slices.mkdir()
    if problem == "wrong_size":
        for index, plane in enumerate(image):
            tifffile.imwrite(slices / f"slice_{index}.tif", plane[:, :47] if index == 5 else plane)
    return slices


EXPECTED = {
    "2d": r"scan 'scan_01' \(.*plane\.tif\) is 2D \(1 × 48 × 48 voxels\); a scan must be a 3D",
    "truncated": r"scan 'scan_01': TIFF file .*stack\.tif is truncated",
    "empty": r"scan 'scan_01': folder .*slices holds no TIFF slices",
    "wrong_size": r"scan 'scan_01': TIFF slice .*slice_5\.tif has shape \(48, 47\)",
}


@pytest.mark.parametrize("problem", list(EXPECTED))
def test_a_bad_scan_is_reported_before_any_scan_is_segmented(
    problem: str, small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    series = load_series(small_series_dir / "series.yaml")
    bad = _bad_image(problem, series.open_image(series.scans[1]).read(), tmp_path)
    manifest = series_with_images(
        small_series_dir, tmp_path / "series", [series.scans[0].image, bad]
    )
    with pytest.raises(ConfigError, match=EXPECTED[problem]):
        predict(small_checkpoint, manifest, tmp_path / "out", scans=None, axes=("rows",))
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_whose_classes_do_not_fit_its_network_is_refused(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(small_checkpoint, weights_only=False)
    names = checkpoint[CHECKPOINT_KEY]["class_names"]
    checkpoint[CHECKPOINT_KEY]["class_names"] = names[:-1]
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    message = (
        f"its network outputs {len(names)} classes but the checkpoint names {len(names) - 1} "
        f"\\({', '.join(names[:-1])}\\)"
    )
    with pytest.raises(CheckpointError, match=message):
        predict(
            tmp_path / "edited.ckpt",
            small_series_dir / "series.yaml",
            tmp_path / "out",
            axes=("rows",),
        )
    assert not (tmp_path / "out").exists()


def test_predict_py_reports_every_bad_scan_at_once_and_exits_2(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    series = load_series(small_series_dir / "series.yaml")
    image = series.open_image(series.scans[1]).read()
    write_zarr(tmp_path / "int16.zarr", image.astype(np.int16) - 300)
    plane = _bad_image("2d", image, tmp_path)
    images = [series.scans[0].image, plane, tmp_path / "int16.zarr"]
    manifest = series_with_images(small_series_dir, tmp_path / "series", images)
    out = tmp_path / "out"
    job = run_entry_point(
        "predict.py",
        f"ckpt={small_checkpoint}",
        f"series={manifest}",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path,
    )
    stderr = job.stderr
    assert job.returncode == 2, stderr[-3000:]
    assert "batteryct: error: 2 scans cannot be segmented" in stderr
    assert "scan 'scan_01'" in stderr and "is 2D" in stderr
    assert "scan 'scan_02'" in stderr and "lie outside 0-255" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
