"""The preparation stage: raw scans -> levelled, registered, cropped scans and their manifest.

Output folder:
```
series.yaml          prepared manifest (written last: a folder without it is unfinished)
prepare.json         settings, intensity mapping, tilt, per-scan transforms, ROI
level.json           the measured electrode tilt (suggested levelling angles)
registration.json    per-scan registration: mean, spread and every sub-volume's result
images/<id>.zarr     prepared grey values (uint8/uint16), chunked zarr in (depth, rows, cols)
labels/, labels_gt/  label volumes of the raw manifest, carried through (nearest neighbour)
quicklook/<id>.png   a cross-section before/after registration and differences to the reference
```
Running again continues an interrupted run (finished steps and scans are skipped); a folder made
with other settings is refused unless `overwrite`, or unless its run wrote no scan (it failed
before: its level.json and registration.json are replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from batteryct import __version__
from batteryct.errors import ConfigError
from batteryct.io import Volume, create_zarr
from batteryct.outfolder import claim_output_folder, write_json_atomic
from batteryct.prepare.intensity import (
    IntensitySettings,
    Normaliser,
    percentiles,
    sample_values,
)
from batteryct.prepare.level import LevelSettings, level_map, suggest_tilt
from batteryct.prepare.quicklook import write_quicklook
from batteryct.prepare.register import (
    RegisterSettings,
    ScanRegistration,
    describe,
    register_scan,
    subvolume_boxes,
)
from batteryct.prepare.resample import (
    Box,
    box_corners,
    box_shape,
    chunk_boxes,
    inside_mask,
    resample_box,
)
from batteryct.prepare.rigid import EulerParams, Rigid
from batteryct.prepare.roi import RoiSettings, auto_roi, check_box
from batteryct.series import CANONICAL_AXES, Cell, Series, load_series, save_series

PROGRESS_FILE = ".prepare-progress.json"
DEFAULT_CHUNKS = (64, 256, 256)


@dataclass(frozen=True)
class OutputSettings:
    """What is written besides the images."""

    chunks: tuple[int, int, int] = DEFAULT_CHUNKS
    carry_labels: bool = True
    quicklooks: bool = True


def prepare_series(
    series: str | os.PathLike[str],
    out: str | os.PathLike[str],
    intensity: IntensitySettings | None = None,
    level: LevelSettings | None = None,
    register: RegisterSettings | None = None,
    roi: RoiSettings | None = None,
    output: OutputSettings | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> Series:
    """Level, register and crop the scans of the raw manifest `series` into `out`."""
    intensity = intensity or IntensitySettings()
    level = level or LevelSettings()
    register = register or RegisterSettings()
    roi = roi or RoiSettings()
    output = output or OutputSettings()
    console = console or Console()
    for part in (intensity, level, register):
        part.check()
    raw = load_series(series)
    out = Path(out)
    if out.resolve() == Path(raw.path).parent:
        raise ConfigError(f"out={out} is the raw series' own folder; choose another folder")
    volumes = [raw.open_image(scan) for scan in raw.scans]
    ref_index = _reference_index(raw, register.reference)
    frame = volumes[ref_index].shape
    boxes = subvolume_boxes(register, frame)  # checks the sub-volume size early
    if roi.box_vox is not None:
        check_box(roi.box_vox, frame)

    settings = {
        "source": str(raw.path),
        "source_manifest_sha256": hashlib.sha256(Path(raw.path).read_bytes()).hexdigest(),
        "intensity": asdict(intensity),
        "level": asdict(level),
        "register": _plain(asdict(register)),
        "roi": _plain(asdict(roi)),
        "output": _plain(asdict(output)),
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    # level.json and registration.json alone are no finished work: a run with other settings
    # that failed before writing a scan does not block this one
    state = claim_output_folder(
        out,
        fingerprint,
        "prepare.json",
        PROGRESS_FILE,
        "a preparation",
        overwrite,
        finished=lambda progress: bool(progress.get("written")),
    )
    if state is not None and not (out / PROGRESS_FILE).exists():
        write_json_atomic(out / PROGRESS_FILE, state)
    if state is None:
        console.print(
            f"[green]{out / 'series.yaml'} is complete for these settings; nothing to do."
        )
        return load_series(out / "series.yaml")

    normalisers = _normalisers(raw, volumes, intensity, state, out, console)
    tilt = _levelling(volumes[ref_index], raw.scans[ref_index].id, level, state, out, console)
    levels = [level_map(tilt, v.shape) for v in volumes]

    def sampler(index: int):
        def sample(box: Box) -> tuple[np.ndarray, np.ndarray]:
            values = resample_box(
                volumes[index], levels[index], box, order=1, convert=normalisers[index].to_float
            )
            margin = register.edge_margin_vox
            return values, inside_mask(levels[index], box, volumes[index].shape, margin)

        return sample

    centre = (np.asarray(frame, float) - 1) / 2
    _registrations(raw, ref_index, boxes, frame, centre, sampler, register, state, out, console)
    registrations = {
        sid: _registration_from(state["registrations"][sid]) for sid in state["registrations"]
    }
    maps = [levels[i].then(registrations[scan.id].rigid()) for i, scan in enumerate(raw.scans)]
    if "roi" not in state:
        if roi.box_vox is not None:
            box = check_box(roi.box_vox, frame)
            _warn_outside(box, maps, volumes, console)
        else:
            box = auto_roi([(m, v.shape) for m, v in zip(maps, volumes, strict=True)], frame, roi)
        state["roi"] = [list(b) for b in box]
        _write_json(out / PROGRESS_FILE, state)
    box = tuple(tuple(b) for b in state["roi"])
    console.print(
        f"ROI (reference frame, [start, stop) per depth, rows, cols): {state['roi']}"
        f" -> {list(box_shape(box))} voxels"  # type: ignore[arg-type]
    )
    _write_scans(
        raw, volumes, normalisers, maps, levels, ref_index, box, output, state, out, console
    )

    prepared = _prepared_series(raw, out, box, maps, normalisers, tilt, state, settings)
    _write_json(out / "prepare.json", {**prepared.metadata["prepare"], "fingerprint": fingerprint})
    save_series(prepared, out / "series.yaml")
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    console.print(f"[green]wrote {out / 'series.yaml'}")
    return prepared


def _registration_from(data: dict[str, Any]) -> ScanRegistration:
    """A ScanRegistration rebuilt from its saved record (only what later steps need)."""
    mean = EulerParams.from_dict(data["mean"])
    return ScanRegistration(
        mean, [], float(data["spread_vox"]), float(data["spread_deg"]), data["within_tolerance"]
    )


def _reference_index(raw: Series, reference: str | int) -> int:
    ids = [scan.id for scan in raw.scans]
    if isinstance(reference, int) and not isinstance(reference, bool):
        if -len(ids) <= reference < len(ids):
            return reference % len(ids)
        raise ConfigError(
            f"register.reference is {reference}; the series {raw.path} has {len(ids)} scans"
            f" (indices 0 to {len(ids) - 1}, or negative from the end)"
        )
    if str(reference) in ids:
        return ids.index(str(reference))
    raise ConfigError(f"register.reference {reference!r} is not a scan of {raw.path}; ids: {ids}")


def _normalisers(
    raw: Series,
    volumes: list[Volume],
    settings: IntensitySettings,
    state: dict[str, Any],
    out: Path,
    console: Console,
) -> list[Normaliser]:
    saved = state.setdefault("intensity", {})
    missing = [i for i, scan in enumerate(raw.scans) if scan.id not in saved]
    if missing:
        samples: dict[int, np.ndarray] = {}
        with _bar(console, "sampling intensities", "scans") as bar:
            task = bar.add_task("", total=len(raw.scans))
            for i, (scan, volume) in enumerate(zip(raw.scans, volumes, strict=True)):
                if settings.scope == "series" or i in missing:
                    per_scan = max(settings.max_samples // len(volumes), 1000)
                    samples[i] = sample_values(
                        volume, settings.max_samples if settings.scope == "scan" else per_scan
                    )
                    if settings.scope == "scan":
                        saved[scan.id] = percentiles(samples.pop(i), settings)
                bar.advance(task)
        if settings.scope == "series":
            pooled = percentiles(np.concatenate(list(samples.values())), settings)
            for scan in raw.scans:
                saved[scan.id] = pooled
        _write_json(out / PROGRESS_FILE, state)
    return [
        Normaliser(*saved[scan.id], dtype=settings.dtype, invert=settings.invert)
        for scan in raw.scans
    ]


def _levelling(
    reference: Volume,
    reference_id: str,
    settings: LevelSettings,
    state: dict[str, Any],
    out: Path,
    console: Console,
) -> tuple[float, float]:
    if "level" not in state:
        with console.status(f"measuring the electrode tilt of {reference_id}"):
            suggestion = suggest_tilt(reference, settings)
        record = {"scan": reference_id, **suggestion.to_dict()}
        _write_json(out / "level.json", record)
        state["level"] = record
        _write_json(out / PROGRESS_FILE, state)
    suggested = tuple(state["level"]["tilt_deg_rows_cols"])
    console.print(
        f"suggested levelling angles (electrode tilt along rows, cols) of {reference_id}:"
        f" [bold]level.tilt_deg=[{suggested[0]:.3f},{suggested[1]:.3f}][/bold]"
        f" (plane fit residual {state['level']['residual_rms_vox']:.2f} vox)"
    )
    tilt = suggested if settings.use_suggestion else tuple(float(a) for a in settings.tilt_deg)
    console.print(
        f"levelling with tilt_deg=[{tilt[0]:.3f},{tilt[1]:.3f}]"
        + (" (the suggestion)" if settings.use_suggestion else " (from the config)")
    )
    return float(tilt[0]), float(tilt[1])


def _registrations(
    raw: Series,
    ref_index: int,
    boxes: list[Box],
    frame: tuple[int, int, int],
    centre: np.ndarray,
    sampler: Any,
    settings: RegisterSettings,
    state: dict[str, Any],
    out: Path,
    console: Console,
) -> None:
    done = state.setdefault("registrations", {})
    ref_id = raw.scans[ref_index].id
    done.setdefault(ref_id, ScanRegistration.identity(centre, boxes).to_dict())
    todo = [i for i, scan in enumerate(raw.scans) if scan.id not in done]
    console.print(
        f"registering {len(todo)} scan(s) to {ref_id} on {len(boxes)} sub-volume(s) of"
        f" {list(box_shape(boxes[0]))} voxels"
    )
    reference = _cached(sampler(ref_index))
    with _bar(console, "registering", "scans") as bar:
        task = bar.add_task("", total=len(todo))
        for i in todo:
            scan_id = raw.scans[i].id
            result = register_scan(reference, sampler(i), boxes, frame, centre, settings)
            done[scan_id] = result.to_dict()
            _write_json(out / PROGRESS_FILE, state)
            _write_json(out / "registration.json", {"reference": ref_id, "scans": done})
            line = f"{scan_id}: {describe(result.mean)}; spread {result.spread_vox:.2f} vox"
            if not result.agrees:
                console.print(
                    f"[yellow]warning: {line}, {result.spread_deg:.3f}° exceeds the tolerance"
                    f" ({settings.tolerance_vox} vox, {settings.tolerance_deg}°): the sub-volumes"
                    " disagree (non-rigid deformation or too few features); see"
                    " registration.json"
                )
            else:
                bar.console.print(line)
            bar.advance(task)
    _write_json(out / "registration.json", {"reference": ref_id, "scans": done})


def _cached(sample: Any) -> Any:
    memo: dict[Any, Any] = {}

    def cached(box: Box) -> Any:
        if box not in memo:
            memo[box] = sample(box)
        return memo[box]

    return cached


def _warn_outside(box: Box, maps: list[Rigid], volumes: list[Volume], console: Console) -> None:
    corners = box_corners(box)
    for transform, volume in zip(maps, volumes, strict=True):
        mapped = transform(corners)
        if np.any(mapped < -1e-6) or np.any(mapped > np.asarray(volume.shape) - 1 + 1e-6):
            console.print(
                "[yellow]warning: roi.box_vox reaches beyond the data of some registered scans;"
                " those voxels are filled with 0 (leave roi.box_vox null for the automatic ROI)"
            )
            return


def _write_scans(
    raw: Series,
    volumes: list[Volume],
    normalisers: list[Normaliser],
    maps: list[Rigid],
    levels: list[Rigid],
    ref_index: int,
    box: Box,
    output: OutputSettings,
    state: dict[str, Any],
    out: Path,
    console: Console,
) -> None:
    written = state.setdefault("written", [])
    shape = box_shape(box)
    chunks = tuple(min(c, n) for c, n in zip(output.chunks, shape, strict=True))
    todo = [i for i, scan in enumerate(raw.scans) if scan.id not in written]
    pieces = list(chunk_boxes(box, chunks))  # type: ignore[arg-type]
    with _bar(console, "resampling", "chunks") as bar:
        task = bar.add_task("", total=len(todo) * len(pieces))
        for i in todo:
            scan = raw.scans[i]
            jobs: list[tuple[str, Volume, int, Any]] = [("images", volumes[i], 1, normalisers[i])]
            if output.carry_labels:
                if scan.labels is not None:
                    jobs.append(("labels", raw.open_labels(scan), 0, None))
                if scan.labels_gt is not None:
                    jobs.append(("labels_gt", raw.open_labels_gt(scan), 0, None))
            for folder, source, order, normaliser in jobs:
                dtype = normaliser.dtype if normaliser is not None else source.dtype
                target = out / folder / f"{scan.id}.zarr"
                tmp = target.with_name(f".{target.name}.partial")
                array = create_zarr(tmp, shape, dtype, chunks=chunks, overwrite=True)  # type: ignore[arg-type]
                for piece in pieces:
                    values = resample_box(
                        source,
                        maps[i],
                        piece,
                        order=order,
                        convert=normaliser.to_float if normaliser is not None else None,
                    )
                    if normaliser is not None:
                        values = normaliser.quantise(values)
                    local = tuple(
                        slice(a - b[0], z - b[0]) for (a, z), b in zip(piece, box, strict=True)
                    )
                    array[local] = values
                    if folder == "images":
                        bar.advance(task)
                if target.exists():
                    shutil.rmtree(target)
                tmp.rename(target)
            if output.quicklooks:
                _quicklook(out, scan.id, volumes, normalisers, maps, levels, i, ref_index, box)
            written.append(scan.id)
            _write_json(out / PROGRESS_FILE, state)


def _quicklook(
    out: Path,
    scan_id: str,
    volumes: list[Volume],
    normalisers: list[Normaliser],
    maps: list[Rigid],
    levels: list[Rigid],
    index: int,
    ref_index: int,
    box: Box,
) -> None:
    row = (box[1][0] + box[1][1]) // 2
    section: Box = (box[0], (row, row + 1), box[2])

    def cut(transform: Rigid, i: int) -> np.ndarray:
        return resample_box(volumes[i], transform, section, convert=normalisers[i].to_float)[:, 0]

    write_quicklook(
        out / "quicklook" / f"{scan_id}.png",
        scan_id,
        before=cut(levels[index], index),  # levelled only, not registered
        after=cut(maps[index], index),
        reference=cut(maps[ref_index], ref_index),
        top=normalisers[index].top,
    )


def _prepared_series(
    raw: Series,
    out: Path,
    box: Box,
    maps: list[Rigid],
    normalisers: list[Normaliser],
    tilt: tuple[float, float],
    state: dict[str, Any],
    settings: dict[str, Any],
) -> Series:
    start = np.array([b[0] for b in box], float)
    crop = Rigid(np.eye(3), start)
    scans = []
    transforms = {}
    for scan, transform, normaliser in zip(raw.scans, maps, normalisers, strict=True):
        labels = out / "labels" / f"{scan.id}.zarr"
        labels_gt = out / "labels_gt" / f"{scan.id}.zarr"
        scans.append(
            replace(
                scan,
                image=(out / "images" / f"{scan.id}.zarr").resolve(),
                labels=labels.resolve() if scan.labels is not None and labels.exists() else None,
                labels_gt=(
                    labels_gt.resolve()
                    if scan.labels_gt is not None and labels_gt.exists()
                    else None
                ),
                # Painted slices are no longer planar after a rotation: readers find them.
                labelled_slices=None,
            )
        )
        transforms[scan.id] = {
            "prepared_to_raw": transform.then(crop).to_dict(),
            "registration": state["registrations"][scan.id]["mean"],
            "spread_vox": state["registrations"][scan.id]["spread_vox"],
            "spread_deg": state["registrations"][scan.id]["spread_deg"],
            "intensity": normaliser.to_dict(),
        }
    cell: Cell = replace(raw.cell, axes=CANONICAL_AXES)
    metadata = dict(raw.metadata)
    metadata["prepare"] = {
        "generator": f"batteryct.prepare {__version__}",
        "source": str(raw.path),
        "raw_axes": list(raw.cell.axes),
        "reference": state["level"]["scan"],
        "tilt_deg_rows_cols": [float(a) for a in tilt],
        "suggested_tilt_deg_rows_cols": state["level"]["tilt_deg_rows_cols"],
        "roi_vox": [list(b) for b in box],
        "transform_convention": (
            "prepared voxel u (depth, rows, cols) shows raw voxel position matrix @ u + offset"
            " (raw indices in canonical depth, rows, cols order)"
        ),
        "scans": transforms,
        "settings": settings,
    }
    return Series(
        cell=cell,
        classes=dict(raw.classes),
        scans=scans,
        hand_label_values=raw.hand_label_values,
        name=raw.name,
        metadata=metadata,
    )


def _bar(console: Console, what: str, unit: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _plain(value: Any) -> Any:
    """Tuples and numpy scalars as JSON-ready lists and numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, _plain(data))
