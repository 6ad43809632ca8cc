"""Segment every scan of a series with a trained model (what `predict.py` calls)."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import zarr
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from batteryct.classes import ANALYSIS_CLASSES
from batteryct.data.slices import ORIENTATIONS
from batteryct.errors import BatteryCTError, ConfigError
from batteryct.io import Volume, export_tiff, open_volume
from batteryct.outfolder import write_json_atomic
from batteryct.predict.checkpoint import TrainedModel, load_trained_model
from batteryct.predict.engine import (
    InferenceSettings,
    SlidingWindowEngine,
    check_window_fits,
)
from batteryct.predict.postprocess import PostProcessSettings, postprocess_scan
from batteryct.predict.uncertainty import rank_slices
from batteryct.predict.units import run_units
from batteryct.predict.volume import (
    AXIS_INDEX,
    CompletionRecord,
    Outputs,
    block_key,
    chunks_for,
    entropy_uint8,
    iter_pending,
    open_or_create,
    predict_block,
    slabs,
)
from batteryct.series import Scan, Series, load_series, save_series, with_scans

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSettings:
    """What to predict along which axes, and what to write."""

    axes: tuple[str, ...] | None = None
    """Slice axes (depth/rows/cols) whose predictions are averaged; None: every axis of the
    orientation the model was trained on (in_plane: depth; cross_section: rows and cols;
    both: all three)."""
    slab: int = 16
    """Slices per unit of work (and chunk edge along the predicted axis)."""
    slices_per_batch: int = 4
    outputs: Outputs = field(default_factory=Outputs)
    export_tiffs: bool = False
    scans: tuple[str, ...] | None = None
    """Scan ids to segment; None: all."""


@dataclass
class _Unit:
    scan_id: str
    kind: str  # "axis:<name>" writes per-axis probabilities, "final" writes the outputs
    index: int
    start: int
    stop: int


def predict_series(
    ckpt: str | Path,
    series: str | Path,
    out: str | Path,
    inference: InferenceSettings,
    settings: PredictSettings,
    postprocess: PostProcessSettings,
    trainer: pl.Trainer,
    console: Console | None = None,
    overwrite: bool = False,
) -> Series | None:
    """Segment the scans of `series` into `out`; return the predictions manifest (rank 0).

    `out` remembers the checkpoint and settings it was made with: the same command continues or
    skips finished scans; another model or other settings are refused unless `overwrite`.
    """
    console = console or Console()
    model = load_trained_model(ckpt)
    source = load_series(series)
    out = Path(out)
    _check_writable(out)
    _claim_folder(out, _fingerprint(ckpt, inference, settings, postprocess), overwrite, trainer)
    axes = _axes(settings.axes, model)
    if trainer.is_global_zero:
        console.print(
            f"model trained on {model.orientation} slices: predicting along "
            f"{' + '.join(axes)}" + (" (probabilities averaged)" if len(axes) > 1 else "")
        )
    scans = _selected_scans(source, settings.scans)
    summaries: dict[str, dict[str, Any]] = {}
    for scan in scans:
        done_file = out / "summary" / f"{scan.id}.json"
        if done_file.exists():
            summaries[scan.id] = json.loads(done_file.read_text())
            if trainer.is_global_zero:
                console.print(f"{scan.id}: already segmented, skipped")
            continue
        image = source.open_image(scan)
        started = time.perf_counter()
        try:
            _segment(model, image, scan, out, axes, inference, settings, trainer, console)
            if trainer.is_global_zero:
                summaries[scan.id] = _finish_scan(
                    source, scan, image, model, out, axes, settings, postprocess, started
                )
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise ConfigError(
                    f"the disk holding {out} is full while segmenting {scan.id}; free space and "
                    "run the same command again (finished chunks are kept)"
                ) from err
            raise
        trainer.strategy.barrier("batteryct-scan")
    if not trainer.is_global_zero:
        return None

    def write(scans: list[Scan], summaries: dict[str, dict[str, Any]]) -> Series:
        return _write_manifest(
            source, scans, out, ckpt, model, inference, settings, postprocess, summaries
        )

    manifest = _write_manifest_of_finished(source, out, write)
    _print_summary(summaries, console)
    return manifest


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out) as probe:  # a name of its own: jobs run side by side
            probe.write(b"ok")
    except OSError as err:
        raise ConfigError(f"cannot write to the output folder {out}: {err.strerror}") from err


def _fingerprint(
    ckpt: str | Path,
    inference: InferenceSettings,
    settings: PredictSettings,
    postprocess: PostProcessSettings,
) -> str:
    digest = hashlib.sha256(Path(ckpt).read_bytes())
    kept = {k: v for k, v in asdict(settings).items() if k != "scans"}
    options = {"inference": asdict(inference), "settings": kept, "post": asdict(postprocess)}
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _claim_folder(out: Path, fingerprint: str, overwrite: bool, trainer: pl.Trainer) -> None:
    """Mark `out` as made by this model and these settings, or refuse a folder made otherwise."""
    mark = out / "prediction.json"
    if trainer.is_global_zero:
        previous = json.loads(mark.read_text()).get("fingerprint") if mark.exists() else None
        if previous not in (None, fingerprint):
            if not overwrite:
                raise ConfigError(
                    f"{out} holds predictions made with another checkpoint or other settings; "
                    "choose another out= or pass overwrite=true to replace them"
                )
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        if previous != fingerprint:
            write_json_atomic(mark, {"fingerprint": fingerprint})
    trainer.strategy.barrier("batteryct-claim")


def _axes(requested: tuple[str, ...] | None, model: TrainedModel) -> tuple[str, ...]:
    trained = ORIENTATIONS.get(model.orientation, ("depth",))
    axes = tuple(requested) if requested else trained
    bad = [a for a in axes if a not in AXIS_INDEX]
    if bad or not axes:
        raise ConfigError(f"axes {list(axes)}: expected names among {list(AXIS_INDEX)}")
    return axes


def _selected_scans(series: Series, wanted: tuple[str, ...] | None) -> list[Scan]:
    if not wanted:
        return list(series.scans)
    known = {s.id for s in series.scans}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise ConfigError(f"scans {missing} are not in {series.path}; its scans: {sorted(known)}")
    return [s for s in series.scans if s.id in wanted]


def _segment(
    model: TrainedModel,
    image: Volume,
    scan: Scan,
    out: Path,
    axes: tuple[str, ...],
    inference: InferenceSettings,
    settings: PredictSettings,
    trainer: pl.Trainer,
    console: Console,
) -> None:
    """All prediction passes of one scan, resumable, spread over the trainer's processes."""
    if image.ndim != 3:
        raise ConfigError(f"scan {scan.id!r}: {image.path} is not a 3D volume")
    work = out / ".work" / scan.id
    record = CompletionRecord(work / "done")
    n_classes = len(model.class_names)
    shape = image.shape
    engines: dict[str, SlidingWindowEngine] = {}

    def engine_on(device: torch.device) -> SlidingWindowEngine:
        key = str(device)
        if key not in engines:
            engines[key] = SlidingWindowEngine(model.net, model.patch_size, inference, device)
        return engines[key]

    for axis in axes:
        position = AXIS_INDEX[axis]
        others = [s for i, s in enumerate(shape) if i != position]
        where = f"scan {scan.id!r} ({image.path}) along {axis}"
        check_window_fits(tuple(inference.window or model.patch_size), others[0], others[1], where)

    final_axis = axes[0]
    specs: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {}
    for axis in axes if len(axes) > 1 else ():
        chunks = chunks_for(shape, axis, settings.slab)
        specs[f"scratch_{axis}"] = ((n_classes, *shape), (n_classes, *chunks), "float16")
    chunks = chunks_for(shape, final_axis, settings.slab)
    specs["labels_net"] = (shape, chunks, "uint8")
    if settings.outputs.probabilities:
        specs["probabilities"] = ((n_classes, *shape), (n_classes, *chunks), "uint8")
    if settings.outputs.entropy:
        specs["entropy"] = (shape, chunks, "uint8")
    if trainer.is_global_zero:  # create once, before any rank writes into them
        for name, (full_shape, chunk_shape, dtype) in specs.items():
            open_or_create(work / f"{name}.zarr", full_shape, chunk_shape, dtype)
    trainer.strategy.barrier("batteryct-arrays")
    arrays: dict[str, Any] = {}

    def array(name: str) -> Any:
        if name not in arrays:
            arrays[name] = zarr.open_array(str(work / f"{name}.zarr"), mode="r+")
        return arrays[name]

    def work_on(unit: _Unit, device: torch.device) -> int:
        engine = engine_on(device)
        key = block_key(
            final_axis if unit.kind == "final" else unit.kind[5:], unit.start, unit.stop
        )
        if unit.kind.startswith("axis:"):
            axis = unit.kind[5:]
            probs = predict_block(
                engine, image, axis, unit.start, unit.stop, settings.slices_per_batch, unit.index
            )
            array(f"scratch_{axis}")[(slice(None), *key)] = probs.astype(np.float16)
        else:
            if len(axes) == 1:
                probs = predict_block(
                    engine,
                    image,
                    final_axis,
                    unit.start,
                    unit.stop,
                    settings.slices_per_batch,
                    unit.index,
                )
            else:
                scratch = [array(f"scratch_{a}")[(slice(None), *key)] for a in axes]
                probs = np.mean([p.astype(np.float32) for p in scratch], axis=0)
            _write_outputs(probs, key, settings, array)
        record.mark(f"{unit.kind}_{unit.index:05d}")
        return int(np.prod(probs.shape[1:]))

    stages = [f"axis:{a}" for a in axes] if len(axes) > 1 else []
    stages.append("final")
    for kind in stages:
        axis = final_axis if kind == "final" else kind[5:]
        units = [
            _Unit(scan.id, kind, i, start, stop)
            for i, (start, stop) in iter_pending(
                record, kind, slabs(shape[AXIS_INDEX[axis]], settings.slab)
            )
        ]
        if trainer.is_global_zero and units:
            console.print(f"{scan.id}: {kind} — {len(units)} slab(s) of {settings.slab} to do")
        plane = int(np.prod(shape)) // shape[AXIS_INDEX[axis]]
        own = units[trainer.global_rank :: trainer.world_size]
        total = sum((u.stop - u.start) * plane for u in own)
        with _progress(console, trainer.is_global_zero) as bar:
            task = bar.add_task(f"{scan.id} {kind}", total=total)

            run_units(trainer, units, functools.partial(_tracked, work_on, bar, task))
        left = list(iter_pending(record, kind, slabs(shape[AXIS_INDEX[axis]], settings.slab)))
        if left:
            raise RuntimeError(f"{scan.id}: {len(left)} slab(s) of stage {kind} were not done")


def _tracked(work: Any, bar: Progress, task: TaskID, unit: _Unit, device: torch.device) -> int:
    """Run one unit and advance the progress bar by the voxels it segmented."""
    voxels = work(unit, device)
    bar.advance(task, voxels)
    return voxels


class _VoxelRate(ProgressColumn):
    """Throughput of the running task in voxels per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed / 1e6:.2f} Mvoxel/s")


def _progress(console: Console, visible: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _VoxelRate(),
        TimeRemainingColumn(),
        console=console,
        disable=not visible,
        transient=False,
    )


def _write_outputs(
    probs: np.ndarray, key: tuple[slice, slice, slice], settings: PredictSettings, array: Any
) -> None:
    """Labels (argmax) and, when asked, probabilities and entropy of one block (uint8)."""
    array("labels_net")[key] = probs.argmax(axis=0).astype(np.uint8)
    if settings.outputs.probabilities:
        quantised = np.clip(np.rint(probs * 255), 0, 255).astype(np.uint8)
        array("probabilities")[(slice(None), *key)] = quantised
    if settings.outputs.entropy:
        array("entropy")[key] = entropy_uint8(probs)


def _finish_scan(
    series: Series,
    scan: Scan,
    image: Volume,
    model: TrainedModel,
    out: Path,
    axes: tuple[str, ...],
    settings: PredictSettings,
    postprocess: PostProcessSettings,
    started: float,
) -> dict[str, Any]:
    """Post-process, publish atomically, export, record the scan as finished (rank 0)."""
    work = out / ".work" / scan.id
    report = postprocess_scan(
        work / "labels_net.zarr", work / "labels.zarr", model.class_names, series.cell, postprocess
    )
    published = {"labels": work / "labels.zarr", "labels_net": work / "labels_net.zarr"}
    if settings.outputs.probabilities:
        published["probabilities"] = work / "probabilities.zarr"
    if settings.outputs.entropy:
        published["entropy"] = work / "entropy.zarr"
        rank_slices(work / "entropy.zarr", out / "uncertainty" / f"{scan.id}_slices.csv", scan.id)
    for name, source in published.items():
        target = out / name / f"{scan.id}.zarr"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        source.rename(target)
    if settings.export_tiffs:
        export_tiff(
            open_volume(out / "labels" / f"{scan.id}.zarr"),
            out / "tiff" / f"{scan.id}_labels.tif",
            voxel_size_um=series.cell.voxel_size_um,
        )
    seconds = time.perf_counter() - started
    voxels = int(np.prod(image.shape))
    summary = {
        "scan": scan.id,
        "seconds": seconds,
        "voxels": voxels,
        "voxels_per_s": voxels / seconds if seconds > 0 else None,
        "axes": list(axes),
        "postprocess": report,
    }
    record = out / "summary" / f"{scan.id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _finished_scans(source: Series, out: Path) -> list[Scan]:
    return [s for s in source.scans if (out / "summary" / f"{s.id}.json").exists()]


def _write_manifest_of_finished(
    source: Series,
    out: Path,
    write: Callable[[list[Scan], dict[str, dict[str, Any]]], Series],
) -> Series:
    """Write (with `write`) the manifest of every finished scan in `out`. Jobs that each
    segment some scans (a SLURM array, Hydra's submitit launcher) fill the same folder and may
    finish at once: a job that finds more finished scans after writing writes again, so the last
    manifest written lists them all (scans only ever become finished)."""
    while True:
        finished = _finished_scans(source, out)
        summaries = {
            s.id: json.loads((out / "summary" / f"{s.id}.json").read_text()) for s in finished
        }
        manifest = write(finished, summaries)
        if [s.id for s in _finished_scans(source, out)] == [s.id for s in finished]:
            return manifest


def _write_manifest(
    source: Series,
    scans: list[Scan],
    out: Path,
    ckpt: str | Path,
    model: TrainedModel,
    inference: InferenceSettings,
    settings: PredictSettings,
    postprocess: PostProcessSettings,
    summaries: dict[str, dict[str, Any]],
) -> Series:
    """The predictions manifest: the input's scans with `labels_gt` = the 7-class predictions."""
    entries = []
    for scan in scans:
        entries.append(
            Scan(
                id=scan.id,
                image=scan.image,
                minutes=scan.minutes,
                phase=scan.phase,
                current_mA=scan.current_mA,
                labels=None,
                labels_gt=(out / "labels" / f"{scan.id}.zarr").resolve(),
            )
        )
    manifest = with_scans(source, entries)
    manifest.classes = dict(ANALYSIS_CLASSES)
    manifest.hand_label_values = None
    manifest.metadata["prediction"] = {
        "checkpoint": str(Path(ckpt).resolve()),
        "model_classes": model.class_names,
        "orientation": model.orientation,
        "inference": asdict(inference),
        "settings": {**asdict(settings), "outputs": asdict(settings.outputs)},
        "postprocess": asdict(postprocess),
        "scans": summaries,
    }
    save_series(manifest, out / "series.yaml")
    return manifest


def _print_summary(summaries: dict[str, dict[str, Any]], console: Console) -> None:
    table = Table(title="Segmentation time and throughput per scan")
    for column in ("scan", "voxels", "seconds", "voxels/s"):
        table.add_column(column, justify="right" if column != "scan" else "left")
    for scan_id, s in summaries.items():
        rate = s.get("voxels_per_s")
        table.add_row(
            scan_id, f"{s['voxels']:,}", f"{s['seconds']:.1f}", f"{rate:,.0f}" if rate else "-"
        )
    console.print(table)


__all__ = ["BatteryCTError", "PredictSettings", "predict_series"]
