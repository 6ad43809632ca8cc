"""The iterative training loop on a tiny series: chaining, skipping, resuming, corrections."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from rich.console import Console
from scipy import ndimage

from batteryct.data.slices import SliceRef
from batteryct.errors import ConfigError
from batteryct.iterate import CorrectionSettings, run_loop
from batteryct.iterate import loop as loop_module
from batteryct.iterate.annotator import choose_slices, simulate_corrections
from batteryct.iterate.labels import copy_labels, labelled_pixels, write_slices
from batteryct.iterate.manual import (
    PaintedSliceError,
    export_slices,
    import_slices,
    slice_name,
)
from batteryct.series import load_series, save_series
from batteryct.synth import CycleProtocol, generate_series
from batteryct.synth.hand_labels import HandLabelSettings
from tests.entry_point import ROOT
from tests.training.helpers import KilledError

TINY_TRAINING = [
    "scale=laptop",
    "data.patch_size=[32,32]",
    "data.batch_size=4",
    "data.train_patches_per_epoch=8",
    "data.val_patches=4",
    "data.test_patches=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "callbacks.overlays.n_images=1",
]
KILL_ITER1 = "+callbacks.kill={_target_:tests.training.helpers.KillAt,epoch:1,batch:0}"


@pytest.fixture(scope="module")
def tiny_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 scans of 82 × 32 × 32 voxels, hand labels on scans 0, 2 and 4 (read-only)."""
    out = tmp_path_factory.mktemp("tiny") / "series"
    generate_series(
        out,
        shape=(82, 32, 32),
        voxel_size_um=5.32,
        seed=7,
        protocol=CycleProtocol(n_charge=2, n_discharge=2),
        hand_labels=HandLabelSettings(
            scans=(0, 2, 4), in_plane_per_scan=2, cross_sections_per_scan=4
        ),
        export_tiffs=False,
        console=Console(quiet=True),
    )
    return out / "series.yaml"


def _digest(folder: Path) -> str:
    """A hash of every file under `folder` (to show the input series is never modified)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _config(series: Path, out: Path, *overrides: str, training: list[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "iterate",
            overrides=[
                f"series={series}",
                f"out={out}",
                f"paths.root_dir={out.parent}",
                "corrections.scans=[scan_02]",
                "corrections.slices=2",
                "corrections.budget_px=300",
                "corrections.min_spacing=2",
                "training.epochs.iter1=2",
                "training.epochs.iter2=1",
                "training.epochs.iter3=1",
                "training.epochs.iter4=1",
                "evaluation.max_scans=1",
                *overrides,
            ],
        )
    cfg.training.overrides = [*TINY_TRAINING, *training]
    return cfg


class _TrainSpy:
    """Records (run folder, ckpt_path) of every training the loop starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.configs: list[DictConfig] = []
        real = loop_module.train

        def spy(cfg: DictConfig) -> Any:
            self.calls.append((Path(cfg.run_dir).name, cfg.get("ckpt_path")))
            self.configs.append(cfg)
            return real(cfg)

        monkeypatch.setattr(loop_module, "train", spy)


def test_loop_chains_resumes_after_a_kill_waits_for_paint_and_skips_done_steps(
    tiny_series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _digest(tiny_series.parent)
    out = tmp_path / "loop"
    spy = _TrainSpy(monkeypatch)
    console = Console(quiet=True)

    with pytest.raises(KilledError):  # killed in iteration 1's second epoch
        run_loop(_config(tiny_series, out, "annotator=manual", training=[KILL_ITER1]), console)
    assert (out / "start" / "done.json").is_file()
    assert not (out / "iter1" / "done.json").exists()
    assert (out / "iter1" / "checkpoints" / "last.ckpt").is_file()
    start_marker = (out / "start" / "done.json").stat().st_mtime_ns

    cfg = _config(tiny_series, out, "annotator=manual")
    assert run_loop(cfg, console) is None  # resumed, predicted, exported, now waiting
    assert spy.calls[1] == ("iter1", str(out / "iter1" / "checkpoints" / "last.ckpt"))
    assert (out / "start" / "done.json").stat().st_mtime_ns == start_marker
    assert not (out / "corrections" / "done.json").exists()
    exported = sorted((out / "corrections" / "export").glob("*_labels.tif"))
    assert len(exported) == 2

    with pytest.raises(PaintedSliceError, match="missing"):  # nothing painted yet
        run_loop(cfg, console)
    for path in exported:
        shutil.copy(path, out / "corrections" / "painted" / path.name)
    result = run_loop(cfg, console)
    assert result is not None
    assert set(result["held_out"]["iou"]) == {
        "background",
        "dendrite",
        "pit",
        "deposited_li",
        "electrode",
    }
    assert result["held_out"]["scans"] == ["scan_01"]  # never labelled, evenly spaced
    steps = [call[0] for call in spy.calls]
    assert steps == [
        "iter1",
        "iter1",
        "iter2_deposited_li",
        "iter2_redeposited_li",
        "iter2_electrode",
        "iter3",
        "iter4",
    ]
    iter4 = spy.configs[-1]
    assert iter4.init_from == str(out / "iter3" / "checkpoints" / "best.ckpt")
    assert iter4.data.split == [0.72, 0.13, 0.15]
    assert iter4.data.orientation == "cross_section"
    assert spy.configs[0].data.orientation == "in_plane"
    corrections = load_series(out / "corrections" / "series.yaml")
    combined = load_series(out / "combine" / "series.yaml")
    assert [s.id for s in combined.scans] == ["scan_02"]
    hand = corrections.open_labels(corrections.scan("scan_02")).read()
    merged = combined.open_labels(combined.scan("scan_02")).read()
    assert np.array_equal(merged[hand != 0], hand[hand != 0])  # hand labels win
    for path in exported:
        axis, index = path.name.split("_")[2], int(path.name.split("_")[3])
        assert index in corrections.scan("scan_02").labelled_slices[axis]

    calls = len(spy.calls)
    assert run_loop(cfg, console) is not None  # everything done: nothing is trained again
    assert len(spy.calls) == calls
    rows = (out / "progress.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]][-1] == "eval_iter4"
    assert _digest(tiny_series.parent) == before  # the input series is never modified


def test_each_step_is_one_wandb_run_of_the_loop_group(
    tiny_series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[DictConfig] = []

    def fake_train(cfg: DictConfig) -> None:
        seen.append(cfg)
        raise KilledError("stop after composing the first step's config")

    monkeypatch.setattr(loop_module, "train", fake_train)
    cfg = _config(tiny_series, tmp_path / "loop", "tracking.logger=wandb", "tracking.group=g7")
    with pytest.raises(KilledError):
        run_loop(cfg, Console(quiet=True))
    assert seen[0].logger.wandb.group == "g7"
    assert seen[0].logger.wandb.name == "iter1"
    assert seen[0].logger.wandb.save_dir == str(tmp_path / "loop" / "iter1")
    assert json.loads((tmp_path / "loop" / "loop.json").read_text())["group"] == "g7"


def test_uncertain_slices_are_chosen_apart_and_never_twice() -> None:
    ranked = [
        (0.9, SliceRef("a", "rows", 10)),
        (0.8, SliceRef("a", "rows", 11)),  # too close to rows 10
        (0.7, SliceRef("a", "cols", 5)),  # already labelled
        (0.6, SliceRef("a", "depth", 3)),  # not an allowed axis
        (0.5, SliceRef("b", "rows", 10)),
        (0.1, SliceRef("a", "rows", 30)),
    ]
    settings = CorrectionSettings(slices=2, min_spacing=4)
    chosen = choose_slices(ranked, {SliceRef("a", "cols", 5)}, settings, np.random.default_rng(0))
    assert chosen == [SliceRef("a", "rows", 10), SliceRef("b", "rows", 10)]


def test_simulated_annotator_paints_strokes_on_the_chosen_slices_within_budget(
    tiny_series: Path, tmp_path: Path
) -> None:
    before = _digest(tiny_series.parent)
    series = copy_labels(load_series(tiny_series), tmp_path / "start")
    chosen = [SliceRef("scan_02", "rows", 9), SliceRef("scan_04", "cols", 20)]
    budget = 900
    painted = simulate_corrections(
        series, chosen, CorrectionSettings(budget_px=budget), np.random.default_rng(1)
    )
    assert set(painted) == set(chosen)
    total = sum(int(np.count_nonzero(v)) for v in painted.values())
    assert 0.5 * budget < total <= budget
    for ref, values in painted.items():
        truth = np.asarray(series.open_labels_gt(series.scan(ref.scan_id))[ref.key()])
        labelled = values != 0
        assert labelled.mean() < 0.5  # strokes, not the whole slice
        assert np.array_equal(values[labelled], truth[labelled] + 1)  # the truth's classes
        assert ndimage.label(labelled)[1] < labelled.sum() / 10  # blobs, not scattered pixels

    manifest = write_slices(series, painted, tmp_path / "round1", {"step": "test"})
    assert labelled_pixels(manifest) <= labelled_pixels(series) + total
    for scan in series.scans:
        if scan.labels is None:
            continue
        old = series.open_labels(scan).read()
        new = manifest.open_labels(manifest.scan(scan.id)).read()
        changed = np.argwhere(old != new)
        refs = [r for r in chosen if r.scan_id == scan.id]
        allowed = np.zeros(old.shape, bool)
        for ref in refs:
            allowed[ref.key()] = True
        assert allowed[tuple(changed.T)].all()  # nothing outside the chosen slices changed
        for ref in refs:
            assert ref.index in manifest.scan(scan.id).labelled_slices[ref.axis]
    assert _digest(tiny_series.parent) == before


def test_simulated_annotator_needs_full_labels(tiny_series: Path, tmp_path: Path) -> None:
    series = load_series(tiny_series)
    series.scans = [replace(s, labels_gt=None) for s in series.scans]
    with pytest.raises(ConfigError, match="annotator=manual"):
        simulate_corrections(
            series, [SliceRef("scan_02", "rows", 3)], CorrectionSettings(), np.random.default_rng(0)
        )
    real = save_series(series, tmp_path / "real" / "series.yaml")
    out = tmp_path / "loop"
    with pytest.raises(ConfigError, match="annotator=manual"):  # refused before any step
        run_loop(_config(real, out), Console(quiet=True))
    assert not (out / "start").exists()


@pytest.fixture()
def exported(tiny_series: Path, tmp_path: Path) -> tuple[Path, list[SliceRef], Path]:
    series = copy_labels(load_series(tiny_series), tmp_path / "start")
    refs = [SliceRef("scan_02", "rows", 9), SliceRef("scan_04", "cols", 20)]
    folder = tmp_path / "corrections"
    export_slices(series, refs, None, folder)
    return series.path, refs, folder


def test_export_writes_image_and_starting_labels_and_import_maps_back(
    exported: tuple[Path, list[SliceRef], Path],
) -> None:
    manifest, refs, folder = exported
    series = load_series(manifest)
    for ref in refs:
        image = tifffile.imread(folder / "export" / f"{slice_name(ref)}_image.tif")
        expected = np.asarray(series.open_image(series.scan(ref.scan_id))[ref.key()])
        assert np.array_equal(image, expected)
        labels = tifffile.imread(folder / "export" / f"{slice_name(ref)}_labels.tif")
        assert labels.shape == image.shape and (labels == 255).all()  # no prediction: unpainted
        painted = labels.copy()
        painted[:5] = 6  # stripping electrode (class id 6)
        painted[5:8, :3] = 0  # background
        tifffile.imwrite(folder / "painted" / f"{slice_name(ref)}_labels.tif", painted)
    values = import_slices(series, folder)
    assert set(values) == set(refs)
    for raw in values.values():
        assert (raw[:5] == 7).all()  # hand-label value of stripping_electrode
        assert (raw[5:8, :3] == 1).all() and (raw[8:] == 0).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "missing"),
        ("shape", "shape"),
        ("values", r"values \[7, 254\] are not class ids; valid values: \[0, 1, 2, 3, 4, 5, 6\]"),
        ("float", "float"),
        ("damaged", "not a readable TIFF"),
    ],
)
def test_import_refuses_a_painted_file_that_does_not_fit_its_slice(
    exported: tuple[Path, list[SliceRef], Path], change: str, message: str
) -> None:
    manifest, refs, folder = exported
    for ref in refs:
        name = f"{slice_name(ref)}_labels.tif"
        shutil.copy(folder / "export" / name, folder / "painted" / name)
    bad = folder / "painted" / f"{slice_name(refs[1])}_labels.tif"
    labels = tifffile.imread(bad)
    if change == "missing":
        bad.unlink()
    elif change == "shape":
        tifffile.imwrite(bad, labels[:-1])
    elif change == "values":
        labels[0, 0], labels[0, 1] = 7, 254
        tifffile.imwrite(bad, labels)
    elif change == "float":
        tifffile.imwrite(bad, labels.astype(np.float32))
    else:
        bad.write_bytes(b"not a tiff")
    with pytest.raises(PaintedSliceError, match=message) as error:
        import_slices(load_series(manifest), folder)
    assert str(bad) in str(error.value)
    assert slice_name(refs[0]) not in str(error.value)  # only the file at fault is named
