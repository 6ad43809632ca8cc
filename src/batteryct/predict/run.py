"""Segment every scan of a series with a trained model (what `predict.py` calls)."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
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
from batteryct.io import export_tiff, open_volume, open_zarr_for_writing
from batteryct.outfolder import write_json_atomic
from batteryct.predict.checkpoint import TrainedModel, load_trained_model
from batteryct.predict.engine import InferenceSettings, SlidingWindowEngine
from batteryct.predict.folder import PredictionFolder
from batteryct.predict.inputs import ScanInput, check_inputs
from batteryct.predict.overlap import BackgroundWriter, Prefetch, ReadAhead
from batteryct.predict.postprocess import PostProcessSettings, postprocess_scan
from batteryct.predict.uncertainty import rank_slices
from batteryct.predict.units import run_units
from batteryct.predict.volume import (
    AXIS_INDEX,
    SCRATCH_ZSTD_LEVEL,
    ZSTD_LEVEL,
    CompletionRecord,
    Outputs,
    block_key,
    chunks_for,
    iter_pending,
    open_or_create,
    probabilities_block,
    scratch_chunks,
    segment_block,
    slab_name,
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
    """Slices segmented at once (fewer on a CPU for slices over a megapixel, see
    `SlidingWindowEngine.slices_per_call`)."""
    outputs: Outputs = field(default_factory=Outputs)
    export_tiffs: bool = False
    scans: tuple[str, ...] | None = None
    """Scan ids to segment; None: all."""


PUBLISHING = "publishing.json"
"""In a scan's work folder: its outputs are being moved into place (what post-processing found
and who did which slabs); a job stopped meanwhile is followed by one that finishes the moves."""


@dataclass
class _Unit:
    scan_id: str
    kind: str  # "axis:<name>" writes per-axis probabilities, "final" writes the outputs
    index: int
    start: int
    stop: int
    voxels: int

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.index:05d}"


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

    Every scan is checked before the first is segmented. `out` remembers the checkpoint and
    settings it was made with: the same command continues or skips finished scans; another model
    or other settings are refused unless `overwrite`. Jobs with the same command share the
    folder's slabs (see `batteryct.predict.folder`).
    """
    console = console or Console()
    model = load_trained_model(ckpt)
    source = load_series(series)
    axes = _axes(settings.axes, model)
    scans = _selected_scans(source, settings.scans)
    out = Path(out)
    folder = PredictionFolder(out)
    inputs = check_inputs(source, scans, model, axes, inference, postprocess)
    _check_writable(out)
    running = None
    if trainer.is_global_zero:
        fingerprint = _fingerprint(ckpt, inference, settings, postprocess)
        running = folder.claim(fingerprint, overwrite, console)
    try:
        job = _job_record(ckpt, series, settings, trainer)
        folder.record_job(job)
        if trainer.is_global_zero:
            console.print(
                f"model trained on {model.orientation} slices: predicting along "
                f"{' + '.join(axes)}" + (" (probabilities averaged)" if len(axes) > 1 else "")
            )
        summaries = _segment_all(
            source,
            scans,
            inputs,
            folder,
            model,
            axes,
            inference,
            settings,
            postprocess,
            trainer,
            console,
            job["job"],
        )
    finally:
        if running is not None:
            running.release()
    if not trainer.is_global_zero:
        return None

    def write(scans: list[Scan], summaries: dict[str, dict[str, Any]]) -> Series:
        return _write_manifest(
            source, scans, folder, ckpt, model, inference, settings, postprocess, summaries
        )

    manifest = _write_manifest_of_finished(source, folder, write)
    _print_summary(summaries, console)
    return manifest


def _segment_all(
    source: Series,
    scans: list[Scan],
    inputs: dict[str, ScanInput],
    folder: PredictionFolder,
    model: TrainedModel,
    axes: tuple[str, ...],
    inference: InferenceSettings,
    settings: PredictSettings,
    postprocess: PostProcessSettings,
    trainer: pl.Trainer,
    console: Console,
    job: str,
) -> dict[str, dict[str, Any]]:
    """Segment and publish each scan not finished yet; the summaries of all (rank 0)."""
    summaries: dict[str, dict[str, Any]] = {}
    for scan in scans:
        started = time.perf_counter()
        lock = folder.scan_lock(scan.id)
        lock.acquire(shared=True)  # held while segmenting: nobody publishes the scan meanwhile
        try:
            trainer.strategy.barrier("batteryct-scan-lock")
            state = trainer.strategy.broadcast(_scan_state(folder, scan.id))
            if state == "segment":
                _segment(
                    model, inputs[scan.id], folder, axes, inference, settings, trainer, console, job
                )
        except OSError as err:
            _raise_if_disk_full(err, folder.out, scan.id)
            raise
        finally:
            lock.release()
        if trainer.is_global_zero:
            with lock:
                if folder.finished(scan.id):
                    summaries[scan.id] = json.loads(folder.summary(scan.id).read_text())
                    console.print(
                        f"{scan.id}: already segmented, skipped"
                        if state == "finished"
                        else f"{scan.id}: published by another job"
                    )
                else:
                    try:
                        summaries[scan.id] = _finish_scan(
                            source,
                            inputs[scan.id],
                            model,
                            folder,
                            axes,
                            settings,
                            postprocess,
                            started,
                            console,
                        )
                    except OSError as err:
                        _raise_if_disk_full(err, folder.out, scan.id)
                        raise
        trainer.strategy.barrier("batteryct-scan")
    return summaries


def single_process_trainer(accelerator: str = "cpu") -> pl.Trainer:
    """A one-device Trainer for predict_series outside predict.py (scripts, the iterative loop,
    tests): no logger, checkpoints, progress bar or distributed sampler."""
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


def _scan_state(folder: PredictionFolder, scan_id: str) -> str:
    """What is left of a scan: nothing ("finished"), moving its outputs into place ("publish",
    after a job stopped while publishing it) or its slabs ("segment")."""
    if folder.finished(scan_id):
        return "finished"
    if (folder.work(scan_id) / PUBLISHING).exists():
        return "publish"
    return "segment"


def _raise_if_disk_full(err: OSError, out: Path, scan_id: str) -> None:
    if err.errno == errno.ENOSPC:
        raise ConfigError(
            f"the disk holding {out} is full while segmenting {scan_id}; free space and "
            "run the same command again (finished chunks are kept)"
        ) from err


def _job_record(
    ckpt: str | Path, series: str | Path, settings: PredictSettings, trainer: pl.Trainer
) -> dict[str, Any]:
    """What one job's process is: where it runs (DDP ranks are processes of one job) and what
    it was asked for (its settings beyond the folder's shared ones)."""
    now = time.time()
    host = socket.gethostname()
    return {
        "job": f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{host}-{os.getpid()}",
        "host": host,
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "checkpoint": str(Path(ckpt).resolve()),
        "series": str(Path(series).resolve()),
        "scans": list(settings.scans) if settings.scans else None,
        "rank": trainer.global_rank,
        "processes": trainer.world_size,
        "device": trainer.strategy.root_device.type,
    }


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


def _axes(requested: tuple[str, ...] | None, model: TrainedModel) -> tuple[str, ...]:
    trained = ORIENTATIONS.get(model.orientation, ("depth",))
    axes = tuple(requested) if requested else trained
    bad = [a for a in axes if a not in AXIS_INDEX]
    if bad or not axes:
        raise ConfigError(f"settings.axes is {list(axes)}; expected names among {list(AXIS_INDEX)}")
    return axes


def _selected_scans(series: Series, wanted: tuple[str, ...] | None) -> list[Scan]:
    if not wanted:
        return list(series.scans)
    known = {s.id for s in series.scans}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise ConfigError(
            f"settings.scans {missing} are not in {series.path}; its scans: {sorted(known)}"
        )
    return [s for s in series.scans if s.id in wanted]


def _segment(
    model: TrainedModel,
    scan_input: ScanInput,
    folder: PredictionFolder,
    axes: tuple[str, ...],
    inference: InferenceSettings,
    settings: PredictSettings,
    trainer: pl.Trainer,
    console: Console,
    job: str,
) -> None:
    """All prediction passes of one scan, resumable, spread over the trainer's processes and
    shared with other jobs: a process does a slab only while it holds the slab's lock."""
    scan, image = scan_input.scan, scan_input.image
    work = folder.work(scan.id)
    record = CompletionRecord(work / "done")
    n_classes = len(model.class_names)
    shape = image.shape
    engines: dict[str, SlidingWindowEngine] = {}

    def engine_on(device: torch.device) -> SlidingWindowEngine:
        key = str(device)
        if key not in engines:
            engines[key] = SlidingWindowEngine(model.net, model.patch_size, inference, device)
        return engines[key]

    final_axis, earlier_axes = axes[0], axes[1:]
    specs: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, int]] = {}
    for axis in earlier_axes:
        chunks = scratch_chunks(shape, axis, final_axis, settings.slab)
        scratch_spec = ((n_classes, *shape), (n_classes, *chunks), "float16", SCRATCH_ZSTD_LEVEL)
        specs[f"scratch_{axis}"] = scratch_spec
    chunks = chunks_for(shape, final_axis, settings.slab)
    specs["labels_net"] = (shape, chunks, "uint8", ZSTD_LEVEL)
    if settings.outputs.probabilities:
        specs["probabilities"] = ((n_classes, *shape), (n_classes, *chunks), "uint8", ZSTD_LEVEL)
    if settings.outputs.entropy:
        specs["entropy"] = (shape, chunks, "uint8", ZSTD_LEVEL)
    if trainer.is_global_zero:  # create once, before any rank writes into them
        for name, (full_shape, chunk_shape, dtype, level) in specs.items():
            open_or_create(work / f"{name}.zarr", full_shape, chunk_shape, dtype, level)
    trainer.strategy.barrier("batteryct-arrays")
    arrays = {name: open_zarr_for_writing(work / f"{name}.zarr") for name in specs}

    def read_earlier(unit: _Unit) -> list[np.ndarray]:
        """The earlier axes' scratch probabilities of a final unit's block."""
        key = block_key(final_axis, unit.start, unit.stop)
        return [arrays[f"scratch_{a}"][(slice(None), *key)] for a in earlier_axes]

    def work_on(unit: _Unit, device: torch.device, wait: bool = False) -> int:
        """Do the unit unless it is done or (`wait` False) another process holds it; the
        voxels segmented. Its outputs are written in the background while the next unit runs;
        the unit is recorded as done, and its lock released, once they are."""
        lock = record.acquire(unit.name, wait)
        if lock is None:
            return 0
        try:
            engine = engine_on(device)
            axis = _axis_of(unit.kind, final_axis)
            key = block_key(axis, unit.start, unit.stop)
            where = slab_name(image, axis, unit.start, unit.stop)
            stack = reader.get(unit)
            if unit.kind == "final":
                earlier = scratch.get(unit) if earlier_axes else []
                blocks = segment_block(
                    engine,
                    stack,
                    axis,
                    settings.slices_per_batch,
                    unit.index,
                    scan_input.scale,
                    settings.outputs,
                    where,
                    earlier,
                )
                writes = [(arrays[n], _full_key(n, key), b) for n, b in blocks.items()]
            else:
                probs = probabilities_block(
                    engine,
                    stack,
                    axis,
                    settings.slices_per_batch,
                    unit.index,
                    scan_input.scale,
                    where,
                    torch.float16,
                )
                writes = [(arrays[f"scratch_{axis}"], (slice(None), *key), probs)]
            writer.submit(writes, unit, lock)
        except BaseException:
            lock.release()
            raise
        return unit.voxels

    def pending(kind: str) -> list[_Unit]:
        axis = _axis_of(kind, final_axis)
        plane = int(np.prod(shape)) // shape[AXIS_INDEX[axis]]
        return [
            _Unit(scan.id, kind, i, start, stop, (stop - start) * plane)
            for i, (start, stop) in iter_pending(
                record, kind, slabs(shape[AXIS_INDEX[axis]], settings.slab)
            )
        ]

    for kind in [*(f"axis:{a}" for a in earlier_axes), "final"]:
        units = pending(kind)
        if trainer.is_global_zero and units:
            console.print(f"{scan.id}: {kind} — {len(units)} slab(s) of {settings.slab} to do")
        own = units[trainer.global_rank :: trainer.world_size]
        with (
            _progress(console, trainer.is_global_zero) as bar,
            ReadAhead(image, _axis_of(kind, final_axis), scan_input.scale, own) as reader,
            Prefetch(read_earlier, own if kind == "final" and earlier_axes else []) as scratch,
            BackgroundWriter(record, job) as writer,
        ):
            task = bar.add_task(f"{scan.id} {kind}", total=sum(u.voxels for u in own))
            run_units(trainer, units, functools.partial(_tracked, work_on, bar, task))
            writer.wait()
            for unit in pending(kind):  # held by other jobs: wait, or do them if those jobs died
                work_on(unit, trainer.strategy.root_device, wait=True)
        left = pending(kind)
        if left:
            raise RuntimeError(f"{scan.id}: {len(left)} slab(s) of stage {kind} were not done")


def _axis_of(kind: str, final_axis: str) -> str:
    """The slice axis of a stage: "axis:<axis>" (an earlier axis's scratch) or "final"."""
    return final_axis if kind == "final" else kind.removeprefix("axis:")


def _full_key(name: str, key: tuple[slice, slice, slice]) -> tuple[slice, ...]:
    """The selection of a block in an output array (probabilities: every class)."""
    return (slice(None), *key) if name == "probabilities" else key


def _tracked(work: Any, bar: Progress, task: TaskID, unit: _Unit, device: torch.device) -> int:
    """Run one unit and advance the progress bar by the voxels it segmented (a unit another
    job did leaves the bar's total)."""
    voxels = work(unit, device)
    if voxels:
        bar.advance(task, voxels)
    else:
        bar.update(task, total=(bar.tasks[task].total or 0) - unit.voxels)
    return voxels


def _stage_tasks(
    bar: Progress, scan_id: str, voxels: int, began: dict[str, float]
) -> Callable[[str, int], None]:
    """An `advance(stage, voxels done)` that shows each stage as a task of `bar`, out of the
    scan's `voxels`, and notes in `began` the wall-clock time each stage was first heard of."""
    tasks: dict[str, TaskID] = {}

    def advance(stage: str, done: int) -> None:
        if stage not in tasks:
            began[stage] = time.perf_counter()
            tasks[stage] = bar.add_task(f"{scan_id} {stage}", total=voxels)
        bar.advance(tasks[stage], done)

    return advance


def _stage_seconds(began: dict[str, float], finished: float) -> dict[str, float]:
    """Wall seconds of each stage, in order, from the times they `began` (a dict in the order
    they did) to the next one's start, the last one's to `finished`."""
    starts = list(began.values())
    return {
        stage: round(end - start, 3)
        for stage, start, end in zip(began, starts, [*starts[1:], finished], strict=True)
    }


class _VoxelRate(ProgressColumn):
    """Mean throughput of a task: its voxels done over the time since it started (rich's own
    speed, from the last few advances, is meaningless for a task of one or two slabs)."""

    def render(self, task: Task) -> Text:
        seconds = task.finished_time if task.finished else task.elapsed
        if not seconds or not task.completed:
            return Text("-")
        return Text(f"{task.completed / seconds / 1e6:.2f} Mvoxel/s")


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


def _finish_scan(
    series: Series,
    scan_input: ScanInput,
    model: TrainedModel,
    folder: PredictionFolder,
    axes: tuple[str, ...],
    settings: PredictSettings,
    postprocess: PostProcessSettings,
    started: float,
    console: Console,
) -> dict[str, Any]:
    """Post-process, publish by renaming, export, record the scan as finished (rank 0, holding
    the scan's lock exclusively). Finishes a publication that a stopped job began."""
    scan, image = scan_input.scan, scan_input.image
    out, work = folder.out, folder.work(scan.id)
    voxels = int(np.prod(image.shape))
    publishing = work / PUBLISHING
    stages = {"segmentation": started}  # stage: wall-clock time it began
    if not publishing.exists():
        with ThreadPoolExecutor(1, thread_name_prefix="batteryct-ranking") as beside:
            ranking = (  # beside post-processing, which keeps the CPUs only partly busy
                beside.submit(
                    rank_slices,
                    work / "entropy.zarr",
                    out / "uncertainty" / f"{scan.id}_slices.csv",
                    scan.id,
                )
                if settings.outputs.entropy
                else None
            )
            with _progress(console, True) as bar:
                report = postprocess_scan(
                    work / "labels_net.zarr",
                    work / "labels.zarr",
                    model.class_names,
                    series.cell,
                    postprocess,
                    _stage_tasks(bar, scan.id, voxels, stages),
                )
            if ranking is not None:
                ranking.result()
        done_by = CompletionRecord(work / "done").done_by()
        write_json_atomic(publishing, {"postprocess": report, "slabs_by_job": dict(done_by)})
    stages["publication"] = time.perf_counter()
    record = json.loads(publishing.read_text())
    names = ["labels", "labels_net"]
    names += ["probabilities"] if settings.outputs.probabilities else []
    names += ["entropy"] if settings.outputs.entropy else []
    for name in names:
        source, target = work / f"{name}.zarr", out / name / f"{scan.id}.zarr"
        if source.exists():  # not moved yet
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
    finished = time.perf_counter()
    seconds = finished - started
    summary = {
        "scan": scan.id,
        "seconds": seconds,
        "voxels": voxels,
        "voxels_per_s": voxels / seconds if seconds > 0 else None,
        "stage_seconds": _stage_seconds(stages, finished),
        "axes": list(axes),
        "grey_values": {
            "dtype": image.dtype.name,
            "mapped_to_0_1": [scan_input.scale.low, scan_input.scale.high],
        },
        "slabs_by_job": record["slabs_by_job"],
        "postprocess": record["postprocess"],
    }
    folder.summary(scan.id).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder.summary(scan.id), summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _finished_scans(source: Series, folder: PredictionFolder) -> list[Scan]:
    return [s for s in source.scans if folder.finished(s.id)]


def _write_manifest_of_finished(
    source: Series,
    folder: PredictionFolder,
    write: Callable[[list[Scan], dict[str, dict[str, Any]]], Series],
) -> Series:
    """Write (with `write`) the manifest of every finished scan in the folder. Jobs that each
    segment some scans (a SLURM array, Hydra's submitit launcher) fill the same folder and may
    finish at once: a job that finds more finished scans after writing writes again, so the last
    manifest written lists them all (scans only ever become finished)."""
    while True:
        finished = _finished_scans(source, folder)
        summaries = {s.id: json.loads(folder.summary(s.id).read_text()) for s in finished}
        manifest = write(finished, summaries)
        if [s.id for s in _finished_scans(source, folder)] == [s.id for s in finished]:
            return manifest


def _write_manifest(
    source: Series,
    scans: list[Scan],
    folder: PredictionFolder,
    ckpt: str | Path,
    model: TrainedModel,
    inference: InferenceSettings,
    settings: PredictSettings,
    postprocess: PostProcessSettings,
    summaries: dict[str, dict[str, Any]],
) -> Series:
    """The predictions manifest: the input's scans with `labels_gt` = the 7-class predictions,
    the settings every job shared, and each job's own record."""
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
                labels_gt=(folder.out / "labels" / f"{scan.id}.zarr").resolve(),
            )
        )
    manifest = with_scans(source, entries)
    manifest.classes = dict(ANALYSIS_CLASSES)
    manifest.hand_label_values = None
    shared = {k: v for k, v in asdict(settings).items() if k != "scans"}
    manifest.metadata["prediction"] = {
        "checkpoint": str(Path(ckpt).resolve()),
        "model_classes": model.class_names,
        "orientation": model.orientation,
        "grey_values": model.grey_values.to_dict() if model.grey_values else None,
        "inference": asdict(inference),
        "settings": shared,
        "postprocess": asdict(postprocess),
        "jobs": folder.jobs(),
        "scans": summaries,
    }
    save_series(manifest, folder.out / "series.yaml")
    return manifest


def _print_summary(summaries: dict[str, dict[str, Any]], console: Console) -> None:
    table = Table(title="Segmentation time and throughput per scan")
    for column in ("scan", "voxels", "seconds", "voxels/s", "seconds by stage"):
        left = column in ("scan", "seconds by stage")
        table.add_column(column, justify="left" if left else "right")
    for scan_id, s in summaries.items():
        rate = s.get("voxels_per_s")
        stages = ", ".join(f"{k} {v:.1f}" for k, v in s.get("stage_seconds", {}).items())
        table.add_row(
            scan_id,
            f"{s['voxels']:,}",
            f"{s['seconds']:.1f}",
            f"{rate:,.0f}" if rate else "-",
            stages or "-",
        )
    console.print(table)


__all__ = ["BatteryCTError", "PredictSettings", "predict_series"]
