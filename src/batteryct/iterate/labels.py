"""The loop's own copy of a series' hand labels: slices written into new label volumes.

The input series is never modified. Each step that adds labels writes the label volumes of the
scans it changes into its own folder (complete volumes, renamed into place) and a manifest that
points at them; unchanged scans keep pointing at the previous step's volumes.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from batteryct.classes import UNLABELLED
from batteryct.data.slices import AXES, SliceRef, _nonzero_slices
from batteryct.errors import ConfigError
from batteryct.io import open_volume, open_zarr_for_writing, write_zarr
from batteryct.io.writers import create_zarr
from batteryct.series import Scan, Series, save_series, with_scans

CHUNKS = (16, 64, 64)


def hand_values(series: Series) -> dict[int, str]:
    """The series' raw hand-label values; without a table, class id + 1 for each class."""
    if series.hand_label_values:
        return dict(series.hand_label_values)
    return {cid + 1: name for cid, name in sorted(series.classes.items())}


def class_to_hand_value(series: Series) -> np.ndarray:
    """A 256-entry table: class id of `series.classes` -> raw hand-label value (0: none)."""
    values = hand_values(series)
    by_name = {name: value for value, name in values.items()}
    table = np.zeros(256, np.uint8)
    for cid, name in series.classes.items():
        if name not in by_name:
            raise ConfigError(
                f"{series.path}: class {name!r} has no value in hand_labels.values "
                f"({values}); add one so that painted {name} can be stored"
            )
        table[cid] = by_name[name]
    return table


def stored_key(series: Series, ref: SliceRef) -> tuple[tuple[slice | int, ...], bool]:
    """The key of a canonical slice in a volume stored in `series.cell.axes` order, and whether
    the stored plane is the canonical plane transposed."""
    axes = series.cell.axes
    key: list[slice | int] = [slice(None)] * 3
    key[axes.index(ref.axis)] = ref.index
    rest = [a for a in axes if a != ref.axis]
    canonical_rest = [a for a in AXES if a != ref.axis]
    return tuple(key), rest != canonical_rest


def write_slices(
    series: Series,
    painted: dict[SliceRef, np.ndarray],
    step_dir: Path,
    note: dict[str, object],
) -> Series:
    """A manifest (`step_dir/series.yaml`) whose scans carry `series`' labels plus `painted`.

    `painted` holds raw hand-label values per canonical slice (0: keep what was there). Changed
    scans get new volumes in `step_dir/labels/`; `labelled_slices` lists the new slices.
    """
    labels_dir = step_dir / "labels"
    work = step_dir / ".labels.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    by_scan: dict[str, list[SliceRef]] = {}
    for ref in painted:
        by_scan.setdefault(ref.scan_id, []).append(ref)
    scans: list[Scan] = []
    for scan in series.scans:
        refs = by_scan.get(scan.id)
        if not refs:
            scans.append(scan)
            continue
        target = work / f"{scan.id}.zarr"
        if scan.labels is not None:
            write_zarr(target, open_volume(scan.labels), chunks=CHUNKS)
        else:
            stored = open_volume(scan.image)
            create_zarr(target, stored.shape, np.uint8, chunks=CHUNKS)
        array = open_zarr_for_writing(target)
        for ref in refs:
            key, transposed = stored_key(series, ref)
            plane = np.asarray(array[key])
            new = painted[ref].T if transposed else painted[ref]
            plane[new != UNLABELLED] = new[new != UNLABELLED]
            array[key] = plane
        listed = {a: set(v) for a, v in (scan.labelled_slices or _found(series, scan)).items()}
        for ref in refs:
            listed.setdefault(ref.axis, set()).add(ref.index)
        scans.append(
            replace(
                scan,
                labels=(labels_dir / f"{scan.id}.zarr").resolve(),
                labelled_slices={a: tuple(sorted(listed[a])) for a in AXES if listed.get(a)},
            )
        )
    if labels_dir.exists():
        shutil.rmtree(labels_dir)
    work.rename(labels_dir)
    manifest = with_scans(series, scans)
    manifest.hand_label_values = hand_values(series)
    manifest.metadata.setdefault("iterate", []).append(note)
    save_series(manifest, step_dir / "series.yaml")
    return manifest


def copy_labels(series: Series, step_dir: Path) -> Series:
    """The loop's starting manifest: `series` with its label volumes copied into `step_dir`."""
    labels_dir = step_dir / "labels"
    work = step_dir / ".labels.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scans = []
    for scan in series.scans:
        if scan.labels is None:
            scans.append(scan)
            continue
        write_zarr(work / f"{scan.id}.zarr", open_volume(scan.labels), chunks=CHUNKS)
        listed = scan.labelled_slices or _found(series, scan)
        scans.append(
            replace(scan, labels=(labels_dir / f"{scan.id}.zarr").resolve(), labelled_slices=listed)
        )
    if labels_dir.exists():
        shutil.rmtree(labels_dir)
    work.rename(labels_dir)
    manifest = with_scans(series, scans)
    manifest.hand_label_values = hand_values(series)
    manifest.metadata["iterate_source"] = str(series.path)
    save_series(manifest, step_dir / "series.yaml")
    return manifest


def labelled_pixels(series: Series) -> int:
    """Painted pixels over all scans' hand labels (what a person spent)."""
    total = 0
    for scan in series.scans:
        if scan.labels is None:
            continue
        volume = series.open_labels(scan)
        for start in range(0, volume.shape[0], 32):
            total += int(np.count_nonzero(volume[start : start + 32]))
    return total


def _found(series: Series, scan: Scan) -> dict[str, tuple[int, ...]]:
    """The painted slices of a scan without `labelled_slices`, read from its label volume."""
    found = _nonzero_slices(series.open_labels(scan))
    return {a: tuple(int(i) for i in found[a]) for a in AXES if len(found[a])}
