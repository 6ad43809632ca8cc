"""Preparation: intensity mapping, levelling, rigid registration, ROI, the entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from rich.console import Console
from scipy import ndimage
from scipy.spatial.transform import Rotation

from batteryct.errors import ConfigError
from batteryct.io import open_volume, write_zarr
from batteryct.prepare import (
    IntensitySettings,
    LevelSettings,
    RegisterSettings,
    RoiSettings,
    level_map,
    prepare_series,
    register_scan,
    sample_values,
    suggest_tilt,
)
from batteryct.prepare.intensity import Normaliser, percentiles
from batteryct.prepare.resample import inside_mask, resample_box
from batteryct.prepare.rigid import Rigid, about_centre
from batteryct.series import load_series
from batteryct.synth import CycleProtocol, HandLabelSettings, generate_series
from batteryct.synth.misalign import MisalignSettings
from tests.conftest import SMALL_SHAPE, small_series_kwargs
from tests.entry_point import ROOT, run_entry_point
from tests.predict.conftest import predict_trainer

QUIET = Console(quiet=True)


def _tiny(out: Path, misalign: MisalignSettings | None = None, **protocol: object) -> Path:
    """A few scans of the small cell over a wider area (tilts and rotations need the width)."""
    kwargs = small_series_kwargs(
        shape=(SMALL_SHAPE[0], 64, 64),
        protocol=CycleProtocol(**{"n_charge": 1, "n_discharge": 1, **protocol}),
        hand_labels=HandLabelSettings(scans=(0,)),
    )
    generate_series(out, misalign=misalign, **kwargs)
    return out / "series.yaml"


@pytest.fixture(scope="module")
def scan_volume(small_series_dir: Path) -> np.ndarray:
    series = load_series(small_series_dir / "series.yaml")
    return series.open_image(series.scans[12]).read().astype(np.float32)


def _samplers(reference: np.ndarray, moving: np.ndarray):
    def sampler(volume: np.ndarray):
        def sample(box):
            identity = Rigid.identity()
            return resample_box(volume, identity, box), inside_mask(identity, box, volume.shape)

        return sample

    return sampler(reference), sampler(moving)


def test_percentiles_equal_numpy_and_map_to_the_type() -> None:
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 300.0, (12, 20, 24)).astype(np.float32)
    settings = IntensitySettings(low_percentile=1.0, high_percentile=99.0)
    low, high = percentiles(sample_values(volume, settings.max_samples), settings)
    assert (low, high) == tuple(np.percentile(volume, [1.0, 99.0]))
    mapped = Normaliser(low, high, "uint16")(volume)
    expected = np.clip(np.rint((volume - low) / (high - low) * 65535), 0, 65535)
    np.testing.assert_allclose(mapped, expected, atol=1)
    inverted = Normaliser(low, high, "uint8", invert=True)(volume)
    assert inverted[volume <= low].min() == 255 and inverted[volume >= high].max() == 0
    # a sample of a larger volume reads spread slices and stays close to the true percentiles
    big = rng.normal(100, 10, (80, 64, 64)).astype(np.float32)
    values = sample_values(big, 20_000)
    assert values.size <= 40_000
    assert abs(np.percentile(values, 50) - 100) < 1


def test_known_rigid_transform_is_recovered(scan_volume: np.ndarray) -> None:
    shape = scan_volume.shape
    centre = (np.asarray(shape) - 1) / 2
    rotation = Rotation.from_euler("xyz", [0.6, -1.1, 0.8], degrees=True).as_matrix()
    true = about_centre(rotation, centre, [0.37, -0.64, 1.23])
    margin = 5
    box = tuple((margin, n - margin) for n in shape)
    # Two "scans" of the same size: the reference and a copy moved by `true`.
    reference = resample_box(scan_volume, Rigid(np.eye(3), np.full(3, margin)), _origin(box))
    moved = resample_box(
        scan_volume, true.inverse().then(Rigid(np.eye(3), np.full(3, margin))), _origin(box)
    )
    inner = reference.shape
    frame_centre = (np.asarray(inner) - 1) / 2
    settings = RegisterSettings(search_margin_vox=4)
    fixed_box = tuple((4, n - 4) for n in inner)
    ref_sample, moving_sample = _samplers(reference, moved)
    result = register_scan(ref_sample, moving_sample, [fixed_box], inner, frame_centre, settings)
    found = result.rigid()
    expected = (
        Rigid(np.eye(3), -np.full(3, margin)).then(true).then(Rigid(np.eye(3), np.full(3, margin)))
    )
    residual = expected.inverse().then(found)
    corners = np.array(
        [
            [d, r, c]
            for d in (0, inner[0] - 1)
            for r in (0, inner[1] - 1)
            for c in (0, inner[2] - 1)
        ],
        float,
    )
    assert residual.rotation_deg() < 0.05
    assert np.abs(found(corners) - expected(corners)).max() < 0.2


def _origin(box):
    return tuple((0, b - a) for a, b in box)


def test_subvolume_averaging_beats_one_subvolume_on_a_bent_scan() -> None:
    rng = np.random.default_rng(3)
    shape = (32, 96, 96)
    volume = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5).astype(np.float32)
    centre = (np.asarray(shape) - 1) / 2
    true = about_centre(np.eye(3), centre, [0.3, -0.8, 0.6])
    moved = resample_box(volume, true.inverse(), tuple((0, n) for n in shape))
    # A local non-rigid bend in one corner: an extra in-plane displacement of ~1.5 voxels.
    d, r, c = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    bump = 1.5 * np.exp(-((r - 20) ** 2 + (c - 20) ** 2) / (2 * 12.0**2))
    moved = ndimage.map_coordinates(moved, [d, r + bump, c + bump], order=1, mode="nearest")
    ref_sample, moving_sample = _samplers(volume, moved)
    base = RegisterSettings(subvolume_vox=(24, 40, 40), search_margin_vox=4)
    single = RegisterSettings(**{**base.__dict__, "centres_vox": [[16, 20, 20]]})
    errors = {}
    for name, settings in (("single", single), ("average", base)):
        from batteryct.prepare.register import subvolume_boxes

        boxes = subvolume_boxes(settings, shape)
        result = register_scan(ref_sample, moving_sample, boxes, shape, centre, settings)
        grid = np.stack(np.meshgrid(*[np.linspace(0, n - 1, 5) for n in shape], indexing="ij"), -1)
        errors[name] = float(np.abs(result.rigid()(grid) - true(grid)).mean())
        if name == "average":
            assert len(boxes) == 4 and result.spread_vox > 0.3
    assert errors["average"] < 0.6 * errors["single"]


def test_levelling_a_tilted_cell_flattens_its_interface(tmp_path: Path) -> None:
    manifest = _tiny(tmp_path / "tilted", MisalignSettings(tilt_deg=(2.0, -1.5)))
    series = load_series(manifest)
    scan = series.scans[-1]
    suggestion = suggest_tilt(series.open_image(scan), LevelSettings())
    assert suggestion.tilt_deg == pytest.approx((2.0, -1.5), abs=0.25)
    labels = series.open_labels_gt(scan).read()

    def interface_rise(volume: np.ndarray) -> float:
        top = np.argmax(volume == 6, axis=0).astype(float)  # first stripping-electrode voxel
        rr, cc = np.meshgrid(*[np.arange(n) for n in top.shape], indexing="ij")
        design = np.column_stack([rr.ravel(), cc.ravel(), np.ones(rr.size)])
        (a, b, _), *_ = np.linalg.lstsq(design, top.ravel(), rcond=None)
        return abs(a) * (top.shape[0] - 1) + abs(b) * (top.shape[1] - 1)

    level = level_map(suggestion.tilt_deg, labels.shape)
    levelled = resample_box(labels, level, tuple((0, n) for n in labels.shape), order=0)
    assert interface_rise(labels) > 3.0
    assert interface_rise(levelled[4:-4, 4:-4, 4:-4]) < 1.0


@pytest.mark.parametrize(
    ("axes", "dtype"),
    [(["rows", "cols", "depth"], np.uint16), (["cols", "depth", "rows"], np.float32)],
)
def test_any_axis_order_and_dtype(tmp_path: Path, axes: list[str], dtype: type) -> None:
    rng = np.random.default_rng(1)
    canonical = ndimage.gaussian_filter(rng.standard_normal((20, 24, 28)), 1.0)
    canonical = (canonical - canonical.min()) * 1000
    stored = np.transpose(canonical, [("depth", "rows", "cols").index(a) for a in axes])
    tifffile.imwrite(tmp_path / "a.tif", stored.astype(dtype))
    write_zarr(tmp_path / "b.zarr", stored.astype(dtype))
    manifest = {
        "cell": {"voxel_size_um": 2.0, "axes": axes},
        "classes": {0: "background"},
        "scans": [
            {"id": "a", "image": "a.tif", "minutes": 0, "phase": "pristine"},
            {"id": "b", "image": "b.zarr", "minutes": 10, "phase": "charge"},
        ],
    }
    (tmp_path / "raw.yaml").write_text(yaml.safe_dump(manifest))
    prepared = prepare_series(
        tmp_path / "raw.yaml",
        tmp_path / "out",
        intensity=IntensitySettings(dtype="uint16", low_percentile=0, high_percentile=100),
        register=RegisterSettings(shrink_factors=(1,), smoothing_sigmas_vox=(0.0,)),
        roi=RoiSettings(margin_vox=(0, 0, 0)),
        console=QUIET,
    )
    assert prepared.cell.axes == ("depth", "rows", "cols")
    image = prepared.open_image(prepared.scans[0]).read()
    assert image.dtype == np.uint16
    typed = canonical.astype(dtype)
    expected = Normaliser(float(typed.min()), float(typed.max()), "uint16")(typed)
    roi = prepared.metadata["prepare"]["roi_vox"]
    crop = expected[tuple(slice(a, b) for a, b in roi)]
    assert np.abs(image.astype(int) - crop).max() <= 2
    assert image.shape == crop.shape and crop.shape[0] >= 18


def test_user_errors_are_one_clear_message(tmp_path: Path, small_series_dir: Path) -> None:
    manifest = small_series_dir / "series.yaml"
    with pytest.raises(ConfigError, match=r"register\.reference 'scan_99' is not a scan"):
        prepare_series(
            manifest, tmp_path / "a", register=RegisterSettings(reference="scan_99"), console=QUIET
        )
    with pytest.raises(ConfigError, match=r"roi.box_vox .* lies outside the reference scan"):
        prepare_series(
            manifest,
            tmp_path / "b",
            roi=RoiSettings(box_vox=[[0, 10], [0, 10], [50, 70]]),
            console=QUIET,
        )
    with pytest.raises(ConfigError, match="larger than the reference scan"):
        prepare_series(
            manifest, tmp_path / "c", register=RegisterSettings(subvolume_vox=64), console=QUIET
        )
    assert not any((tmp_path / n).exists() for n in "abc")


def test_a_run_that_failed_before_writing_a_scan_does_not_block_its_correction(
    tmp_path: Path,
) -> None:
    volume = ndimage.gaussian_filter(np.random.default_rng(2).standard_normal((20, 24, 28)), 1.0)
    write_zarr(tmp_path / "a.zarr", volume.astype(np.float32))
    write_zarr(tmp_path / "b.zarr", volume.astype(np.float32))
    manifest = {
        "cell": {"voxel_size_um": 2.0},
        "classes": {0: "background"},
        "scans": [
            {"id": "a", "image": "a.zarr", "minutes": 0, "phase": "pristine"},
            {"id": "b", "image": "b.zarr", "minutes": 10, "phase": "charge"},
        ],
    }
    (tmp_path / "raw.yaml").write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    settings = {
        "register": RegisterSettings(shrink_factors=(1,), smoothing_sigmas_vox=(0.0,)),
        "console": QUIET,
    }
    with pytest.raises(ConfigError, match=r"smaller than the margins roi\.margin_vox"):
        prepare_series(
            tmp_path / "raw.yaml", out, roi=RoiSettings(margin_vox=(12, 12, 12)), **settings
        )
    assert (out / "level.json").exists() and (out / "registration.json").exists()
    prepared = prepare_series(
        tmp_path / "raw.yaml", out, roi=RoiSettings(margin_vox=(1, 1, 1)), **settings
    )
    assert [s.id for s in prepared.scans] == ["a", "b"] and (out / "series.yaml").exists()
    with pytest.raises(ConfigError, match="already holds other files or a preparation"):
        prepare_series(
            tmp_path / "raw.yaml", out, roi=RoiSettings(margin_vox=(2, 2, 2)), **settings
        )


TILT = (2.0, -1.5)
# A tilted cell moved and rotated at random between scans (all but the last), changing over the
# cycle (pits, deposits, swelling); its static inclusions are what registration uses. The top
# static slab is thin (~10 voxels), so the test series has more and larger inclusions than the
# default.
E2E_MISALIGN = MisalignSettings(
    tilt_deg=TILT,
    shift_vox_max=2.5,
    rotation_deg_max=1.0,
    inclusions_per_pixel=0.03,
    inclusion_radius_vox=(2.0, 3.5),
)


def _prepare_command(manifest: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "prepare.py"),
        f"series={manifest}",
        f"out={out}",
        f"level.tilt_deg=[{TILT[0]},{TILT[1]}]",
        # one sub-volume over the static stripping side (small depth), away from the edges
        "register.subvolume_vox=[16,56,56]",
        "register.centres_vox=[[10,32,32]]",
        "register.search_margin_vox=6",
        "register.shrink_factors=[2,1]",
        "register.smoothing_sigmas_vox=[1.0,0.7]",
        "output.chunks=[16,32,32]",
    ]


@pytest.fixture(scope="module")
def prepared_e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A misaligned series, the aligned original and the output of prepare.py on the former."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    manifest = _tiny(tmp_path / "raw", E2E_MISALIGN, n_charge=2)
    original = _tiny(tmp_path / "original", n_charge=2)
    out = tmp_path / "prepared"
    command = _prepare_command(manifest, out)
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    return {
        "tmp": tmp_path,
        "raw": tmp_path / "raw",
        "original": original,
        "out": out,
        "command": command,
        "stdout": first.stdout,
    }


def test_prepare_py_levels_registers_and_resumes(prepared_e2e: dict) -> None:
    tmp_path, out, command = prepared_e2e["tmp"], prepared_e2e["out"], prepared_e2e["command"]
    assert "suggested levelling angles" in prepared_e2e["stdout"]
    misalignment = json.loads((prepared_e2e["raw"] / "misalignment.json").read_text())
    original = load_series(prepared_e2e["original"])
    prepared = load_series(out / "series.yaml")
    record = json.loads((out / "prepare.json").read_text())
    assert record["suggested_tilt_deg_rows_cols"] == pytest.approx(list(TILT), abs=0.25)
    roi = prepared.metadata["prepare"]["roi_vox"]
    crop = tuple(slice(a, b) for a, b in roi)
    start = np.array([a for a, _ in roi], float)
    ends = [(0, b - a - 1) for a, b in roi]
    corners = np.array([[d, r, c] for d in ends[0] for r in ends[1] for c in ends[2]], float)
    for scan in prepared.scans:
        # prepared voxel -> raw position -> position in the aligned original: the identity + ROI
        to_raw = Rigid.from_dict(record["scans"][scan.id]["prepared_to_raw"])
        to_aligned = Rigid.from_dict(misalignment["scans"][scan.id]["raw_to_aligned"])
        total = to_aligned.then(to_raw)
        error_vox = np.abs(total(corners) - (corners + start)).max()
        print(f"{scan.id}: {error_vox:.3f} vox at the ROI corners, {total.rotation_deg():.4f}°")
        # Issue 6's tolerance: 0.2 voxel anywhere in the ROI. Across this 64-voxel-wide cell that
        # allows about 0.2° of rotation (0.05° was meant for the paper's 3896-voxel width).
        assert error_vox < 0.2, scan.id
        assert total.rotation_deg() < 0.2, scan.id
    for scan, plain in zip(prepared.scans, original.scans, strict=True):
        agreement = (
            prepared.open_labels_gt(scan).read() == original.open_labels_gt(plain).read()[crop]
        ).mean()
        assert agreement > 0.98, scan.id
    assert all((out / "quicklook" / f"{s.id}.png").stat().st_size > 5000 for s in prepared.scans)
    assert open_volume(out / "images" / f"{prepared.scans[-1].id}.zarr").chunks == (16, 32, 32)
    # the rerun and the bad command need no process of their own (see tests.entry_point)
    again = run_entry_point("prepare.py", *command[2:], cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    bad = run_entry_point("prepare.py", *command[2:-2], "register.reference=nope", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_prepared_manifest_trains_predicts_and_analyses_like_the_original(
    prepared_e2e: dict, tmp_path: Path
) -> None:

    from batteryct.analysis import AnalysisSettings, analyze_series
    from batteryct.classes import ANALYSIS_CLASSES
    from batteryct.predict import (
        InferenceSettings,
        Outputs,
        PostProcessSettings,
        PredictSettings,
        predict_series,
    )
    from batteryct.training import train
    from tests.training.helpers import train_config

    manifest = prepared_e2e["out"] / "series.yaml"
    prepared = load_series(manifest)
    # (a) training: prepare drops `labelled_slices`; the data module finds the painted slices.
    run_dir = tmp_path / "run"
    train(
        train_config(
            manifest,
            run_dir,
            "trainer.max_epochs=1",
            "data.train_patches_per_epoch=8",
            "data.val_patches=8",
            "data.test_patches=8",
        )
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    # (b) prediction of one scan with that model
    scan = prepared.scans[-1].id
    predicted = predict_series(
        checkpoint,
        manifest,
        tmp_path / "predicted",
        InferenceSettings(precision="fp32"),
        PredictSettings(scans=(scan,), slab=8, outputs=Outputs()),
        PostProcessSettings(),
        predict_trainer(),
        console=QUIET,
    )
    again = load_series(tmp_path / "predicted" / "series.yaml")
    assert [s.id for s in again.scans] == [scan] and predicted is not None
    labels = open_volume(tmp_path / "predicted" / "labels" / f"{scan}.zarr")
    assert labels.shape == tuple(b - a for a, b in prepared.metadata["prepare"]["roi_vox"])
    # (c) analysis of the prepared manifest (its labels_gt: the resampled true labels) gives the
    # class volumes of the original series over the same region.
    result = analyze_series(
        manifest, None, AnalysisSettings(meshes=None, figures=False), console=QUIET
    )
    original = load_series(prepared_e2e["original"])
    roi = prepared.metadata["prepare"]["roi_vox"]
    crop = tuple(slice(a, b) for a, b in roi)
    voxel_um3 = original.cell.voxel_size_um**3
    for index, plain in enumerate(original.scans):
        counts = np.bincount(
            original.open_labels_gt(plain).read()[crop].ravel(), minlength=len(ANALYSIS_CLASSES)
        )
        for value, name in ANALYSIS_CLASSES.items():
            expected = counts[value] * voxel_um3
            if counts[value] < 200:  # a few voxels: resampling moves them by more than a few %
                continue
            found = result.volume_um3(name)[index]
            assert found == pytest.approx(expected, rel=0.05), (plain.id, name)
