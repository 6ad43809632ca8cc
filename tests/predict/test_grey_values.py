"""Grey values: the checkpoint records how training mapped them; prediction maps every scan so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from batteryct.data.slices import to_unit_range
from batteryct.errors import ConfigError
from batteryct.greyvalues import legacy_scale
from batteryct.io import write_zarr
from batteryct.models.module import CHECKPOINT_KEY
from batteryct.predict import load_trained_model
from batteryct.series import load_series
from tests.predict.helpers import predict, read_outputs, series_with_images


def _scan_12(series_dir: Path) -> np.ndarray:
    series = load_series(series_dir / "series.yaml")
    return series.open_image(series.scan("scan_12")).read()


def test_the_checkpoint_records_the_grey_values_of_the_training_images(
    small_checkpoint: Path, small_series_dir: Path
) -> None:
    recorded = torch.load(small_checkpoint, weights_only=False)[CHECKPOINT_KEY]["grey_values"]
    series = load_series(small_series_dir / "series.yaml")
    # the small scans are sampled whole: two chunks of (64, 48, 48) along 82 slices
    values = np.concatenate([series.open_image(s).read().ravel() for s in series.scans]) / 255
    assert recorded["scales"] == {"uint8": [0.0, 255.0]}
    np.testing.assert_allclose(recorded["quantiles"], np.percentile(values, [1, 99]))


def test_float_and_int16_scans_holding_0_255_are_segmented_like_their_uint8_original(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    original = _scan_12(small_series_dir)[:, :16]  # 16 slices along rows: one slab each
    images = [tmp_path / "uint8.zarr", tmp_path / "float64.zarr", tmp_path / "int16.zarr"]
    for path in images:
        write_zarr(path, original.astype(path.stem))
    manifest = series_with_images(small_series_dir, tmp_path / "series", images)
    out = tmp_path / "out"
    predict(small_checkpoint, manifest, out, scans=None, axes=("rows",), slab=16)
    uint8 = read_outputs(out, "scan_00")["labels_net"]
    assert np.array_equal(read_outputs(out, "scan_01")["labels_net"], uint8)
    assert np.array_equal(read_outputs(out, "scan_02")["labels_net"], uint8)
    recorded = load_series(out / "series.yaml").metadata["prediction"]["scans"]["scan_01"]
    assert recorded["grey_values"] == {"dtype": "float64", "mapped_to_0_1": [0.0, 255.0]}


def test_scans_off_the_training_scale_are_refused_before_any_work(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    original = _scan_12(small_series_dir).astype(np.int32)
    negative = (original - 300).astype(np.int16)
    volumes = {
        "int16.zarr": negative,
        "unit.zarr": (original / 255).astype(np.float32),  # 0-1 floats: /255 again is garbage
        "uint16.zarr": (original * 257).astype(np.uint16),  # a full-range uint16 scan
    }
    for name, data in volumes.items():
        write_zarr(tmp_path / name, data)
    manifest = series_with_images(
        small_series_dir, tmp_path / "series", [tmp_path / n for n in volumes]
    )
    with pytest.raises(ConfigError) as error:
        predict(small_checkpoint, manifest, tmp_path / "out", scans=None, axes=("rows",))
    message = str(error.value)
    assert message.startswith("3 scans cannot be segmented")
    # small scans are sampled whole, so the sample's extremes are the volume's
    assert f"grey values {negative.min()} to {negative.max()} lie outside 0-255" in message
    assert "'scan_01'" in message and "float32 grey values on another scale" in message
    assert f"grey values {(original * 257).min()} to {(original * 257).max()}" in message
    assert "prepare.py" in message
    assert not (tmp_path / "out").exists()


def test_grey_values_outside_the_range_between_sampled_chunks_stop_the_run(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    image = _scan_12(small_series_dir).astype(np.float64)
    image[40:44] = 300.0  # depth chunk 5 of 11; the up-front sample reads chunks 0, 3, 7 and 10
    write_zarr(tmp_path / "float.zarr", image, chunks=(8, 48, 48))
    manifest = series_with_images(small_series_dir, tmp_path / "series", [tmp_path / "float.zarr"])
    # read in bands of whole chunks (48 rows): the band holding the first slab is named
    with pytest.raises(ConfigError, match=r"float\.zarr, slices 0-47 along rows: .* 300 lie"):
        predict(small_checkpoint, manifest, tmp_path / "out", scans=None, axes=("rows",), slab=16)
    assert not (tmp_path / "out" / "labels").exists()


def test_a_checkpoint_without_grey_values_warns_and_maps_as_before(
    small_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(small_checkpoint, weights_only=False)
    del checkpoint[CHECKPOINT_KEY]["grey_values"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match="does not record how its training images' grey values"):
        model = load_trained_model(tmp_path / "old.ckpt")
    assert model.grey_values is None
    rng = np.random.default_rng(0)
    for data in (
        rng.integers(0, 256, (4, 5, 6)).astype(np.uint8),
        rng.integers(-3000, 3000, (4, 5, 6)).astype(np.int16),
        rng.normal(0.5, 2, (4, 5, 6)),
    ):
        mapped = legacy_scale(data.dtype).apply(data, "test")
        np.testing.assert_array_equal(mapped, to_unit_range(data))
