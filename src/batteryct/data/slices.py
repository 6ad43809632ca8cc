"""Labelled 2D slices of a series: finding them, reading them lazily, keeping only those."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batteryct.data.label_map import IGNORE_INDEX, LabelMap
from batteryct.errors import ConfigError
from batteryct.io import Volume
from batteryct.series import Scan, Series

AXES = ("depth", "rows", "cols")
ORIENTATIONS: dict[str, tuple[str, ...]] = {
    "in_plane": ("depth",),
    "cross_section": ("rows", "cols"),
    "both": ("depth", "rows", "cols"),
}
"""Slice axes of each orientation: in-plane slices are vol[d], cross-sections vol[:, r, :] and
vol[:, :, c] (they hold the whole depth, electrode to electrode)."""


@dataclass(frozen=True, order=True)
class SliceRef:
    """One 2D slice of one scan: `axis` is the canonical axis it is perpendicular to."""

    scan_id: str
    axis: str
    index: int

    def key(self) -> tuple[slice | int, ...]:
        """The numpy key that cuts this slice out of a canonical (depth, rows, cols) volume."""
        items: list[slice | int] = [slice(None)] * 3
        items[AXES.index(self.axis)] = self.index
        return tuple(items)

    def name(self) -> str:
        return f"{self.scan_id}/{self.axis}[{self.index}]"


@dataclass
class LabelledSlice:
    """A slice's grey values (float32, 0-1) and class ids (uint8, IGNORE_INDEX = unlabelled)."""

    ref: SliceRef
    image: np.ndarray
    target: np.ndarray

    @property
    def labelled_fraction(self) -> float:
        return float((self.target != IGNORE_INDEX).mean())


def orientation_axes(orientation: str) -> tuple[str, ...]:
    try:
        return ORIENTATIONS[orientation]
    except KeyError as err:
        raise ConfigError(
            f"data.orientation is {orientation!r}; expected one of {list(ORIENTATIONS)}"
        ) from err


def label_volume(series: Series, scan: Scan, source: str) -> Volume | None:
    """The scan's label volume for this source, or None when the scan has none."""
    if source == "labels":
        return series.open_labels(scan) if scan.labels is not None else None
    return series.open_labels_gt(scan) if scan.labels_gt is not None else None


def find_labelled_slices(
    series: Series, source: str, axes: tuple[str, ...], slice_step: int = 1
) -> list[SliceRef]:
    """Every slice along `axes` that carries labels, in every scan.

    Uses the manifest's `labelled_slices` when given; otherwise scans the label volume slab by
    slab (sparse labels: the slices that explain the painted voxels; full labels: every
    `slice_step`-th slice, since all of them are labelled).
    """
    refs: list[SliceRef] = []
    for scan in series.scans:
        volume = label_volume(series, scan, source)
        if volume is None:
            continue
        if source == "labels" and scan.labelled_slices is not None:
            listed = scan.labelled_slices
            refs += [SliceRef(scan.id, a, i) for a in axes for i in listed.get(a, ())]
        elif source == "labels":
            found = _nonzero_slices(volume)
            refs += [SliceRef(scan.id, a, int(i)) for a in axes for i in found[a]]
        else:
            for axis in axes:
                size = volume.shape[AXES.index(axis)]
                refs += [SliceRef(scan.id, axis, i) for i in range(0, size, slice_step)]
    return sorted(set(refs))


def _nonzero_slices(volume: Volume, min_pixels: int = 10) -> dict[str, np.ndarray]:
    """Indices of the painted slices along each axis of a sparse label volume.

    Painted slices cross each other, so a slice can hold labels painted on others. The labelled
    voxels are read slab by slab; then, greedily, the slice that holds the most not yet
    explained labelled voxels is taken as painted, until none holds `min_pixels` more.
    """
    found: list[np.ndarray] = []
    step = max(1, volume.chunks[0])
    for start in range(0, volume.shape[0], step):
        slab = np.argwhere(np.asarray(volume[start : start + step]) != 0).astype(np.int32)
        slab[:, 0] += start
        found.append(slab)
    coords = np.concatenate(found) if found else np.zeros((0, 3), np.int32)
    unexplained = np.ones(len(coords), bool)
    painted: dict[str, list[int]] = {axis: [] for axis in AXES}
    while unexplained.any():
        best_axis, best_index, best_count = 0, 0, 0
        for axis in range(3):
            counts = np.bincount(coords[unexplained, axis], minlength=volume.shape[axis])
            index = int(counts.argmax())
            if counts[index] > best_count:
                best_axis, best_index, best_count = axis, index, int(counts[index])
        if best_count < min_pixels:
            break
        painted[AXES[best_axis]].append(best_index)
        unexplained &= coords[:, best_axis] != best_index
    return {axis: np.array(sorted(indices), int) for axis, indices in painted.items()}


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Grey values as float32 in 0-1: integers by their type's range, floats as they are.

    Training and prediction both use this, so a model sees the same scale in both.
    """
    if image.dtype.kind == "u":
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if image.dtype.kind == "i":
        info = np.iinfo(image.dtype)
        return (image.astype(np.float32) - info.min) / np.float32(info.max - info.min)
    return image.astype(np.float32)


def load_slices(series: Series, refs: list[SliceRef], label_map: LabelMap) -> list[LabelledSlice]:
    """Read the image and label of each slice (only these), mapping labels to class ids."""
    table = label_map.lookup_table(series)
    slices = []
    images: dict[str, Volume] = {}
    labels: dict[str, Volume] = {}
    for ref in refs:
        scan = series.scan(ref.scan_id)
        if ref.scan_id not in images:
            images[ref.scan_id] = series.open_image(scan)
            labels[ref.scan_id] = label_volume(series, scan, label_map.source)  # type: ignore[assignment]
        image, label = images[ref.scan_id], labels[ref.scan_id]
        if image.shape != label.shape:
            raise ConfigError(
                f"scan {scan.id!r}: image {image.path} has shape {image.shape} but its "
                f"{label_map.source} {label.path} has {label.shape}"
            )
        where = f"scan {scan.id!r} {label_map.source} ({label.path}), slice {ref.name()}"
        target = label_map.apply(np.asarray(label[ref.key()]), table, where)
        slices.append(LabelledSlice(ref, to_unit_range(np.asarray(image[ref.key()])), target))
    return slices
