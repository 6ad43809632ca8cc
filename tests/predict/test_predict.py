"""predict_series and predict.py on the small synthetic series."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from hydra.utils import instantiate
from rich.console import Console
from rich.progress import Progress

from batteryct.classes import ANALYSIS_CLASSES
from batteryct.data.slices import AXES
from batteryct.errors import ConfigError
from batteryct.predict import (
    CheckpointError,
    InferenceSettings,
    Outputs,
    PostProcessSettings,
    PredictSettings,
    export_onnx,
    load_trained_model,
    predict_series,
)
from batteryct.predict import run as run_module
from batteryct.series import load_series
from tests.conftest import SMALL_SHAPE
from tests.entry_point import run_entry_point
from tests.predict.conftest import predict_trainer
from tests.predict.helpers import (
    QUIET,
    common_overrides,
    predict,
    predict_py,
    read_outputs,
)
from tests.training.helpers import ROOT


def test_predictions_manifest_is_the_input_format_with_analysis_labels(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    manifest = predict(small_checkpoint, small_series_dir / "series.yaml", tmp_path / "out")
    again = load_series(tmp_path / "out" / "series.yaml")
    assert [s.id for s in again.scans] == ["scan_00", "scan_12"]
    assert again.classes == ANALYSIS_CLASSES
    assert again.metadata["prediction"]["checkpoint"] == str(small_checkpoint.resolve())
    for scan in again.scans:
        labels = again.open_labels_gt(scan).read()
        assert labels.shape == again.open_image(scan).shape
        assert set(np.unique(labels)) <= set(ANALYSIS_CLASSES)
    assert manifest is not None
    ranking = (tmp_path / "out" / "uncertainty" / "scan_12_slices.csv").read_text().splitlines()
    assert ranking[0] == "rank,scan,axis,index,mean_entropy"
    values = [float(line.split(",")[-1]) for line in ranking[1:]]
    assert values == sorted(values, reverse=True)
    assert not (tmp_path / "out" / ".work" / "scan_12").exists()


def test_network_labels_equal_a_direct_whole_slice_computation(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    predict(
        small_checkpoint,
        small_series_dir / "series.yaml",
        tmp_path / "out",
        scans=("scan_12",),
        axes=("rows",),
    )
    series = load_series(small_series_dir / "series.yaml")
    image = series.open_image(series.scan("scan_12")).read().astype(np.float32) / 255.0
    model = load_trained_model(small_checkpoint)
    from monai.inferers import sliding_window_inference

    slices = torch.from_numpy(np.ascontiguousarray(image.transpose(1, 0, 2)))[:, None]  # rows axis
    with torch.no_grad():
        logits = sliding_window_inference(slices, model.patch_size, 4, model.net, overlap=0.25)
    expected = logits.argmax(1).numpy().transpose(1, 0, 2)
    ours = read_outputs(tmp_path / "out", "scan_12")["labels_net"]
    assert (ours == expected).mean() > 0.999


def test_a_finished_scan_is_skipped(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first, again = Console(record=True, width=200), Console(record=True, width=200)
    predict(small_checkpoint, small_series_dir / "series.yaml", out, first, scans=("scan_00",))
    stamp = (out / "labels" / "scan_00.zarr" / "zarr.json").stat().st_mtime_ns
    predict(small_checkpoint, small_series_dir / "series.yaml", out, again, scans=("scan_00",))
    assert (out / "labels" / "scan_00.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    shown, shown_again = first.export_text(), again.export_text()
    for stage in ("interfaces", "post-processing"):  # the stages of post-processing show
        assert re.search(rf"scan_00 {stage} .* 100%", shown)
        assert f"scan_00 {stage}" not in shown_again  # no progress: not run again
    assert "scan_00: already segmented, skipped" in shown_again


def test_the_summary_gives_each_stage_its_wall_seconds(
    small_checkpoint: Path,
    small_series_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Post-processing, wrapped, notes its own clock as it starts each stage and as it returns:
    the summary's seconds per stage agree with those times and add up to the scan's seconds."""
    postprocess = run_module.postprocess_scan
    heard: dict[str, float] = {}

    def timed(*args: Any) -> dict[str, object]:
        *inputs, advance = args

        def noting(stage: str, voxels: int) -> None:
            heard.setdefault(stage, time.perf_counter())
            advance(stage, voxels)

        report = postprocess(*inputs, noting)
        heard["returned"] = time.perf_counter()
        return report

    monkeypatch.setattr(run_module, "postprocess_scan", timed)
    out = tmp_path / "out"
    predict(small_checkpoint, small_series_dir / "series.yaml", out, scans=("scan_00",))
    summary = json.loads((out / "summary" / "scan_00.json").read_text())
    stages = summary["stage_seconds"]
    assert list(stages) == ["segmentation", "interfaces", "post-processing", "publication"]
    interfaces = heard["post-processing"] - heard["interfaces"]
    assert stages["interfaces"] == pytest.approx(interfaces, abs=0.01)
    assert stages["post-processing"] >= heard["returned"] - heard["post-processing"] - 0.01
    assert stages["segmentation"] > 0 and stages["publication"] >= 0
    assert sum(stages.values()) == pytest.approx(summary["seconds"], abs=0.005)


def test_slices_are_ranked_beside_post_processing_and_a_failure_publishes_nothing(
    small_checkpoint: Path,
    small_series_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Post-processing waits (on an event, bounded) for the ranking to start: a serial
    finish would run one after the other and time out. A ranking that fails stops the job
    before anything is published; the same command then finishes the scan."""
    ranking_started = threading.Event()
    rank, postprocess = run_module.rank_slices, run_module.postprocess_scan
    overlapped: list[bool] = []

    def ranking(*args: object, **kwargs: object) -> Path:
        ranking_started.set()
        return rank(*args, **kwargs)

    def post_processing(*args: object, **kwargs: object) -> dict[str, object]:
        overlapped.append(ranking_started.wait(timeout=60))
        return postprocess(*args, **kwargs)

    monkeypatch.setattr(run_module, "rank_slices", ranking)
    monkeypatch.setattr(run_module, "postprocess_scan", post_processing)
    out, series = tmp_path / "out", small_series_dir / "series.yaml"
    predict(small_checkpoint, series, out, scans=("scan_00",))
    assert overlapped == [True]
    assert (out / "uncertainty" / "scan_00_slices.csv").exists()

    def failing(*args: object, **kwargs: object) -> Path:
        raise OSError("ranking failed")

    monkeypatch.setattr(run_module, "rank_slices", failing)
    with pytest.raises(OSError, match="ranking failed"):
        predict(small_checkpoint, series, out, scans=("scan_12",))
    assert not (out / "labels" / "scan_12.zarr").exists()
    assert not (out / ".work" / "scan_12" / run_module.PUBLISHING).exists()
    monkeypatch.setattr(run_module, "rank_slices", rank)
    predict(small_checkpoint, series, out, scans=("scan_12",))
    assert (out / "labels" / "scan_12.zarr").exists()
    assert (out / "uncertainty" / "scan_12_slices.csv").exists()


@pytest.fixture(scope="module")
def uninterrupted_outputs(
    small_checkpoint: Path, small_series_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, np.ndarray]:
    """scan_06's outputs from one uninterrupted, single-process predict.py run (the reference of
    the kill-and-resume and DDP tests; run in the test process, see tests.entry_point)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    overrides = common_overrides(small_checkpoint, small_series_dir, folder / "out")
    run = run_entry_point("predict.py", *overrides, cwd=folder)
    assert run.returncode == 0, run.stderr[-2000:]
    return read_outputs(folder / "out", "scan_06")


def test_killed_prediction_resumes_to_byte_identical_output(
    small_checkpoint: Path,
    small_series_dir: Path,
    tmp_path: Path,
    uninterrupted_outputs: dict[str, np.ndarray],
) -> None:
    out = tmp_path / "killed"
    first = predict_py(*common_overrides(small_checkpoint, small_series_dir, out), cwd=tmp_path)
    done = out / ".work" / "scan_06" / "done"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if done.is_dir() and len(list(done.glob("*.done"))) >= 5:
            break
        time.sleep(0.02)  # polling for progress, not waiting for it to finish
    assert first.poll() is None, "the run finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    finished_before = len(list(done.glob("*.done")))
    n_slabs = SMALL_SHAPE[1] // 2
    assert 5 <= finished_before < n_slabs
    assert not (out / "labels" / "scan_06.zarr").exists()  # nothing half-written is published

    # the rerun needs no process of its own (see tests.entry_point)
    overrides = common_overrides(small_checkpoint, small_series_dir, out)
    second = run_entry_point("predict.py", *overrides, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{n_slabs - finished_before} slab(s) of 2 to do" in second.stdout
    ours, theirs = read_outputs(out, "scan_06"), uninterrupted_outputs
    for name in ours:
        assert ours[name].tobytes() == theirs[name].tobytes(), name


def test_a_multi_axis_run_stopped_in_either_stage_resumes_to_identical_output(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """Along three axes (the model's default), stopped while keeping an earlier axis's
    probabilities and again while averaging them with the last axis: each rerun does only the
    slabs left and the outputs equal an uninterrupted run's, byte for byte."""
    series = small_series_dir / "series.yaml"
    predict(small_checkpoint, series, tmp_path / "whole", scans=("scan_12",))
    out = tmp_path / "stopped"
    shown = []
    for name, calls_before_failing in (("probabilities_block", 7), ("segment_block", 2)):
        real, calls = getattr(run_module, name), []

        def fails(*args: object, real=real, calls=calls, limit=calls_before_failing, **kw: object):
            calls.append(args)
            if len(calls) > limit:
                raise RuntimeError("the node went down")
            return real(*args, **kw)

        console = Console(record=True, width=200)
        with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="node went"):
            patch.setattr(run_module, name, fails)
            predict(small_checkpoint, series, out, console=console, scans=("scan_12",))
        shown.append(console.export_text())
    console = Console(record=True, width=200)
    predict(small_checkpoint, series, out, console=console, scans=("scan_12",))
    shown.append(console.export_text())
    slabs = [-(-size // 8) for size in SMALL_SHAPE]  # slabs of 8 along depth, rows and cols
    assert f"axis:rows — {slabs[1]} slab(s)" in shown[0]
    assert f"axis:cols — {slabs[2] - 1} slab(s)" in shown[1]  # rows and 1 col slab were done
    assert "axis:rows —" not in shown[1] + shown[2] and "axis:cols —" not in shown[2]
    assert f"final — {slabs[0] - 2} slab(s)" in shown[2]
    ours, theirs = read_outputs(out, "scan_12"), read_outputs(tmp_path / "whole", "scan_12")
    for name in ours:
        assert ours[name].tobytes() == theirs[name].tobytes(), name


def test_two_ddp_processes_equal_one(
    small_checkpoint: Path,
    small_series_dir: Path,
    tmp_path: Path,
    uninterrupted_outputs: dict[str, np.ndarray],
) -> None:
    ddp = predict_py(
        *common_overrides(small_checkpoint, small_series_dir, tmp_path / "two"),
        "trainer=ddp_cpu",
        cwd=tmp_path,
    )
    _, stderr = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, stderr[-3000:]
    ours = read_outputs(tmp_path / "two", "scan_06")
    theirs = uninterrupted_outputs
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name


def test_jobs_segmenting_different_scans_side_by_side_fill_one_manifest(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shared"
    jobs = []
    for scan in ("scan_03", "scan_09"):
        overrides = common_overrides(small_checkpoint, small_series_dir, out)
        overrides[3] = f"settings.scans=[{scan}]"
        overrides[-1] = f"hydra.run.dir={tmp_path / ('hydra-' + scan)}"
        jobs.append(predict_py(*overrides, cwd=tmp_path))
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-3000:]
    manifest = load_series(out / "series.yaml")
    assert [s.id for s in manifest.scans] == ["scan_03", "scan_09"]
    assert sorted(manifest.metadata["prediction"]["scans"]) == ["scan_03", "scan_09"]
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".write-test*"))


def test_a_job_that_finds_more_finished_scans_after_writing_the_manifest_writes_again(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "out"
    predict(small_checkpoint, small_series_dir / "series.yaml", out)
    record = out / "summary" / "scan_12.json"
    saved = record.read_text()
    record.unlink()  # as if another job were still segmenting scan_12
    real_write = run_module._write_manifest
    calls = []

    def write_then_other_job_finishes(*args, **kwargs):
        calls.append([s.id for s in args[1]])
        manifest = real_write(*args, **kwargs)
        if not record.exists():
            record.write_text(saved)  # the other job finishes between listing and writing
        return manifest

    monkeypatch.setattr(run_module, "_write_manifest", write_then_other_job_finishes)
    predict(small_checkpoint, small_series_dir / "series.yaml", out, scans=("scan_00",))
    assert calls == [["scan_00"], ["scan_00", "scan_12"]]
    assert [s.id for s in load_series(out / "series.yaml").scans] == ["scan_00", "scan_12"]


def test_errors_are_clear(small_checkpoint: Path, small_series_dir: Path, tmp_path: Path) -> None:
    series = small_series_dir / "series.yaml"
    with pytest.raises(CheckpointError, match="does not exist"):
        predict(tmp_path / "nope.ckpt", series, tmp_path / "a")
    torch.save({"weights": 1}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="is not a batteryct model"):
        predict(tmp_path / "other.ckpt", series, tmp_path / "b")
    with pytest.raises(ConfigError, match=r"scans \['scan_99'\] are not in"):
        predict(small_checkpoint, series, tmp_path / "c", scans=("scan_99",))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write to the output folder"):
        predict(small_checkpoint, series, blocker / "out")
    with pytest.raises(ConfigError, match=r"128 × 128 window; pass a smaller inference\.window="):
        predict_series(
            small_checkpoint,
            series,
            tmp_path / "d",
            InferenceSettings(window=(128, 128)),
            PredictSettings(scans=("scan_00",)),
            PostProcessSettings(),
            predict_trainer(),
            console=QUIET,
        )
    with pytest.raises(CheckpointError, match=r"is a folder; pass one checkpoint file in it"):
        predict(small_checkpoint.parent, series, tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_onnx_export_matches_pytorch(small_checkpoint: Path, tmp_path: Path) -> None:
    import onnxruntime

    path = export_onnx(small_checkpoint, tmp_path / "model.onnx")
    model = load_trained_model(small_checkpoint)
    image = np.random.default_rng(0).random((2, 1, 48, 64), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"image": image})
    with torch.no_grad():
        torch_logits = model.net(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-3, atol=1e-3)
    assert (tmp_path / "model.json").exists()


def test_predict_config_composes_to_the_engine_settings(
    small_series_dir: Path, tmp_path: Path
) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "predict", overrides=["ckpt=x", "settings.axes=[rows,cols]", "inference.blend=gaussian"]
        )
    settings = instantiate(cfg.settings, _convert_="all")
    assert list(settings.axes) == ["rows", "cols"] and settings.outputs.entropy
    assert instantiate(cfg.inference).blend == "gaussian"


def test_a_folder_of_another_model_or_settings_is_refused_unless_overwritten(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    series, out = small_series_dir / "series.yaml", tmp_path / "out"
    predict(small_checkpoint, series, out, scans=("scan_00",))
    with pytest.raises(ConfigError, match=r"holds predictions .* made with another"):
        predict(small_checkpoint, series, out, scans=("scan_00",), slab=4)
    predict_series(
        small_checkpoint,
        series,
        out,
        InferenceSettings(precision="fp32"),
        PredictSettings(scans=("scan_00",), slab=4),
        PostProcessSettings(),
        predict_trainer(),
        console=QUIET,
        overwrite=True,
    )
    assert (out / "labels" / "scan_00.zarr").exists()
    assert not (out / "entropy").exists()  # the old run's outputs are gone


def test_two_orientations_are_averaged(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    series = small_series_dir / "series.yaml"
    probs = {}
    for axis in ("rows", "cols"):
        predict(
            small_checkpoint,
            series,
            tmp_path / axis,
            scans=("scan_12",),
            axes=(axis,),
            outputs=Outputs(probabilities=True, entropy=True),
        )
        probs[axis] = zarr.open_array(str(tmp_path / axis / "probabilities" / "scan_12.zarr"))[:]
    predict(small_checkpoint, series, tmp_path / "both", scans=("scan_12",), axes=("rows", "cols"))
    both = read_outputs(tmp_path / "both", "scan_12")["labels_net"]
    expected = (probs["rows"].astype(float) + probs["cols"]).argmax(axis=0)
    assert (both == expected).mean() > 0.99  # probabilities were stored as uint8: rare ties differ
    assert (both != read_outputs(tmp_path / "rows", "scan_12")["labels_net"]).any()


def test_tiff_export_and_a_full_disk(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import errno

    import tifffile

    series = small_series_dir / "series.yaml"
    predict(small_checkpoint, series, tmp_path / "t", scans=("scan_00",), export_tiffs=True)
    labels = zarr.open_array(str(tmp_path / "t" / "labels" / "scan_00.zarr"))[:]
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "t" / "tiff" / "scan_00_labels.tif"), labels
    )

    import batteryct.predict.overlap as overlap_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(overlap_module, "_write", full)  # every write of a slab's outputs
    with pytest.raises(ConfigError, match="is full while segmenting scan_06"):
        predict(small_checkpoint, series, tmp_path / "full", scans=("scan_06",))
    assert not (tmp_path / "full" / "labels").exists()


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [("in_plane", ("depth",)), ("cross_section", ("rows", "cols")), ("both", AXES)],
)
def test_prediction_follows_every_orientation_the_model_was_trained_on(
    orientation: str, expected: tuple[str, ...]
) -> None:
    model = SimpleNamespace(orientation=orientation)
    assert run_module._axes(None, model) == expected
    assert run_module._axes(("cols",), model) == ("cols",)  # an explicit choice wins


def test_the_console_says_which_axes_are_averaged(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    console = Console(record=True, width=200)
    predict_series(
        small_checkpoint,
        small_series_dir / "series.yaml",
        tmp_path / "out",
        InferenceSettings(precision="fp32"),
        PredictSettings(scans=("scan_00",), slab=16),
        PostProcessSettings(),
        predict_trainer(),
        console=console,
    )
    text = console.export_text()
    assert "model trained on both slices: predicting along depth + rows + cols" in text
    manifest = load_series(tmp_path / "out" / "series.yaml")
    assert manifest.metadata["prediction"]["scans"]["scan_00"]["axes"] == list(AXES)


def test_the_progress_rate_is_voxels_done_over_the_time_since_the_task_started() -> None:
    now = [0.0]
    bar = Progress(get_time=lambda: now[0])
    task = bar.add_task("scan_00 post-processing", total=4e6)
    rate = run_module._VoxelRate()
    assert rate.render(bar.tasks[0]).plain == "-"
    now[0] = 2.0
    bar.advance(task, 1e6)  # one slab after 2 s
    assert rate.render(bar.tasks[0]).plain == "0.50 Mvoxel/s"
    now[0] = 4.0
    bar.advance(task, 3e6)  # the rest, finished at 4 s
    now[0] = 100.0
    assert rate.render(bar.tasks[0]).plain == "1.00 Mvoxel/s"  # the rate when it finished
