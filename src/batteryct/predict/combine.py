"""Combine binary models (and optionally a multi-class one) into training labels.

The step between iterations 2 and 3 of the paper: each binary model says where its phase is; in
priority order, the first model that is sure (probability ≥ threshold) claims a voxel; classes
taken from the multi-class model (e.g. pits) come next; a voxel every binary model is sure is
not its phase (and the multi-class model sure is background) becomes background; the rest stays
unlabelled (0), so training ignores it. The result is a series whose `labels` are these volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from rich.console import Console

from batteryct.classes import UNLABELLED
from batteryct.data.slices import ORIENTATIONS
from batteryct.errors import ConfigError
from batteryct.io import Volume
from batteryct.predict.checkpoint import TrainedModel, load_trained_model
from batteryct.predict.engine import InferenceSettings, SlidingWindowEngine
from batteryct.predict.units import run_units
from batteryct.predict.volume import (
    AXIS_INDEX,
    CompletionRecord,
    block_key,
    chunks_for,
    iter_pending,
    open_or_create,
    probabilities_block,
    read_block,
    slab_name,
    slabs,
)
from batteryct.series import Scan, Series, load_series, save_series, with_scans


@dataclass(frozen=True)
class CombineSettings:
    """Which models to combine and how sure they must be."""

    checkpoints: tuple[str, ...] = ()
    """Binary models in priority order (first wins where several are sure)."""
    multiclass: str | None = None
    take_from_multiclass: tuple[str, ...] = ("pit",)
    threshold: float = 0.8
    axis: str | None = None
    """Slice axis; None: the first axis of the first model's orientation."""
    slab: int = 16
    slices_per_batch: int = 4
    label_slice_step: int = 8
    """Record every n-th slice along the training axes as labelled in the manifest."""
    scans: tuple[str, ...] | None = None


def combined_classes(
    binaries: list[TrainedModel], multiclass: TrainedModel | None, take: tuple[str, ...]
) -> list[str]:
    """Class names of the combined labels: background, the binary phases, then the taken ones."""
    names = ["background"]
    for model in binaries:
        if len(model.class_names) != 2:
            raise ConfigError(
                f"combine.checkpoints: {model.path} predicts {model.class_names}; a binary model "
                "(background and one phase) is expected"
            )
        names.append(model.class_names[1])
    if multiclass is not None:
        for name in take:
            if name not in multiclass.class_names:
                raise ConfigError(
                    f"combine.take_from_multiclass: {name!r} is not a class of {multiclass.path} "
                    f"({multiclass.class_names})"
                )
            names.append(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"combine: the models' classes repeat: {names}")
    return names


def combine_probabilities(
    binary_positive: list[np.ndarray],
    multiclass_probs: np.ndarray | None,
    multiclass_take: list[int],
    threshold: float,
) -> np.ndarray:
    """Raw label values (class index + 1; 0 = unsure) from the models' probabilities."""
    shape = binary_positive[0].shape
    out = np.full(shape, UNLABELLED, np.uint8)
    claimed = np.zeros(shape, bool)
    for index, positive in enumerate(binary_positive, start=1):
        sure = (positive >= threshold) & ~claimed
        out[sure] = index + 1
        claimed |= sure
    next_index = len(binary_positive) + 1
    if multiclass_probs is not None:
        for offset, cid in enumerate(multiclass_take):
            sure = (multiclass_probs[cid] >= threshold) & ~claimed
            out[sure] = next_index + offset + 1
            claimed |= sure
    negative = np.all([p <= 1 - threshold for p in binary_positive], axis=0)
    if multiclass_probs is not None:
        negative &= multiclass_probs[0] >= threshold
    out[negative & ~claimed] = 1  # background
    return out


def combine_series(
    settings: CombineSettings,
    series: str | Path,
    out: str | Path,
    inference: InferenceSettings,
    trainer: pl.Trainer,
    console: Console | None = None,
) -> Series | None:
    """Write combined label volumes and a manifest that trains iteration 3 (rank 0 returns it)."""
    console = console or Console()
    if not settings.checkpoints:
        raise ConfigError("combine.checkpoints is empty: list the binary models in priority order")
    if not 0.5 < settings.threshold <= 1:
        raise ConfigError(
            f"combine.threshold is {settings.threshold}; expected a value in (0.5, 1]"
        )
    binaries = [load_trained_model(c) for c in settings.checkpoints]
    multiclass = load_trained_model(settings.multiclass) if settings.multiclass else None
    names = combined_classes(binaries, multiclass, tuple(settings.take_from_multiclass))
    take_ids = (
        [multiclass.class_names.index(n) for n in settings.take_from_multiclass]
        if multiclass
        else []
    )
    axis = settings.axis or ORIENTATIONS[binaries[0].orientation][0]
    if axis not in AXIS_INDEX:
        raise ConfigError(f"combine.axis is {axis!r}; expected one of {list(AXIS_INDEX)}")
    source = load_series(series)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scans = [s for s in source.scans if not settings.scans or s.id in settings.scans]
    models = [*binaries, *([multiclass] if multiclass else [])]
    written: list[Scan] = []
    for scan in scans:
        image = source.open_image(scan)
        target = out / "labels" / f"{scan.id}.zarr"
        if not target.exists():
            _combine_scan(
                scan,
                image,
                models,
                len(binaries),
                take_ids,
                axis,
                settings,
                inference,
                out,
                trainer,
            )
        labelled = {
            a: tuple(range(0, image.shape[AXIS_INDEX[a]], settings.label_slice_step))
            for a in ("rows", "cols")
        }
        written.append(
            Scan(
                scan.id,
                scan.image,
                scan.minutes,
                scan.phase,
                scan.current_mA,
                labels=target.resolve(),
                labels_gt=scan.labels_gt,
                labelled_slices=labelled,
            )
        )
    if not trainer.is_global_zero:
        return None
    manifest = with_scans(source, written)
    manifest.hand_label_values = {i + 1: name for i, name in enumerate(names)}
    manifest.metadata["combine"] = {
        "checkpoints": [str(Path(c).resolve()) for c in settings.checkpoints],
        "multiclass": str(Path(settings.multiclass).resolve()) if settings.multiclass else None,
        "classes": names,
        "threshold": settings.threshold,
        "axis": axis,
    }
    save_series(manifest, out / "series.yaml")
    console.print(
        f"combined labels of {len(written)} scan(s): {out / 'series.yaml'} (classes {names})"
    )
    return manifest


def _combine_scan(
    scan: Scan,
    image: Volume,
    models: list[TrainedModel],
    n_binary: int,
    take_ids: list[int],
    axis: str,
    settings: CombineSettings,
    inference: InferenceSettings,
    out: Path,
    trainer: pl.Trainer,
) -> None:
    work = out / ".work" / scan.id
    record = CompletionRecord(work / "done")
    shape = image.shape
    labels = open_or_create(
        work / "labels.zarr", shape, chunks_for(shape, axis, settings.slab), "uint8"
    )
    engines: dict[tuple[int, str], SlidingWindowEngine] = {}
    scales = [model.grey_scale(image, f"scan {scan.id!r} ({image.path})") for model in models]

    def work_on(unit: tuple[int, int, int], device: torch.device) -> int:
        index, start, stop = unit
        where = slab_name(image, axis, start, stop)
        stack = read_block(image, axis, start, stop, scales[0])  # read once for every model
        for scale in scales[1:]:
            scale.check(stack, where)
        probs = []
        for m, model in enumerate(models):
            key = (m, str(device))
            if key not in engines:
                engines[key] = SlidingWindowEngine(model.net, model.patch_size, inference, device)
            probs.append(
                probabilities_block(
                    engines[key], stack, axis, settings.slices_per_batch, index, scales[m], where
                )
            )
        positive = [p[1] for p in probs[:n_binary]]
        multi = probs[n_binary] if len(probs) > n_binary else None
        labels[block_key(axis, start, stop)] = combine_probabilities(
            positive, multi, take_ids, settings.threshold
        )
        record.mark(f"combine_{index:05d}")
        return stop - start

    units = [
        (i, a, b)
        for i, (a, b) in iter_pending(
            record, "combine", slabs(shape[AXIS_INDEX[axis]], settings.slab)
        )
    ]
    run_units(trainer, units, work_on)
    if trainer.is_global_zero:
        target = out / "labels" / f"{scan.id}.zarr"
        target.parent.mkdir(parents=True, exist_ok=True)
        (work / "labels.zarr").rename(target)
    trainer.strategy.barrier("batteryct-combine")
