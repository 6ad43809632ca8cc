"""The lazy `Volume` interface, its key normalisation, and the axis-reordering view."""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

AXES: tuple[str, str, str] = ("depth", "rows", "cols")

# One item per axis: an in-range int, or a slice with explicit bounds and step >= 1.
AxisIndex = int | slice
VolumeKey = tuple[AxisIndex, AxisIndex, AxisIndex]


class Volume(ABC):
    """A 3D (depth, rows, cols) array on disk that is read only where indexed.

    Indexing follows numpy basic indexing (ints, slices with any step, `...`) and returns a
    new `np.ndarray`. Subclasses implement `_read`, which receives normalised keys only.
    """

    ndim = 3

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        chunks: tuple[int, int, int],
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.chunks = chunks

    @property
    def nbytes(self) -> int:
        """Size of the whole volume in memory, in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __getitem__(self, key: Any) -> np.ndarray:
        normalized, reversed_axes = normalize_key(key, self.shape)
        data = self._read(normalized)
        if reversed_axes:
            data = np.flip(data, axis=reversed_axes)
        return np.asarray(data, dtype=self.dtype, order="C")

    def read(self) -> np.ndarray:
        """Read the whole volume into memory (for volumes that fit)."""
        return self[...]

    @abstractmethod
    def _read(self, key: VolumeKey) -> np.ndarray:
        """Return a new array for `key` (see `normalize_key`), without the int-indexed axes."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.path}', shape={self.shape}, "
            f"dtype={self.dtype.name}, chunks={self.chunks})"
        )


def normalize_key(key: Any, shape: tuple[int, ...]) -> tuple[VolumeKey, tuple[int, ...]]:
    """Turn a numpy basic-indexing key into one item per axis with forward-only slices.

    Returns the key and the output axes that must be reversed afterwards (those indexed
    by a slice with a negative step).
    """
    items = key if isinstance(key, tuple) else (key,)
    ellipses = [position for position, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        position = ellipses[0]
        fill = (slice(None),) * (len(shape) - len(items) + 1)
        items = items[:position] + fill + items[position + 1 :]
    if len(items) > len(shape):
        raise IndexError(f"too many indices for a {len(shape)}D volume: {len(items)} were given")
    items = items + (slice(None),) * (len(shape) - len(items))

    normalized: list[AxisIndex] = []
    reversed_axes: list[int] = []
    output_axis = 0
    for axis, (item, size) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice):
            selected = range(*item.indices(size))
            if selected.step < 0:
                reversed_axes.append(output_axis)
            normalized.append(_forward_slice(selected))
            output_axis += 1
        else:
            normalized.append(_checked_int(item, axis, size))
    return (normalized[0], normalized[1], normalized[2]), tuple(reversed_axes)


def _forward_slice(selected: range) -> slice:
    """The slice with step >= 1 that selects the same positions as `selected`."""
    if not selected:
        return slice(0, 0, 1)
    first, last = sorted((selected[0], selected[-1]))
    return slice(first, last + 1, abs(selected.step))


def _checked_int(item: Any, axis: int, size: int) -> int:
    if isinstance(item, (bool, np.bool_)):
        raise IndexError(f"boolean indices are not supported for volumes, got {item!r}")
    try:
        index = operator.index(item)
    except TypeError:
        raise IndexError(
            f"only integers, slices and '...' are valid volume indices, got {item!r}"
        ) from None
    if not -size <= index < size:
        raise IndexError(f"index {index} is out of bounds for axis {axis} with size {size}")
    return index % size


def check_axes(axes: Sequence[str]) -> tuple[str, str, str]:
    """Validate a stored axis order: a permutation of ("depth", "rows", "cols")."""
    if isinstance(axes, str) or sorted(axes) != sorted(AXES):
        raise ValueError(
            f"axes must name the stored axis order as a permutation of {AXES}, "
            f"e.g. ('rows', 'cols', 'depth'); got {axes!r}"
        )
    return (axes[0], axes[1], axes[2])


class TransposedVolume(Volume):
    """A lazy view presenting a volume stored in another axis order as (depth, rows, cols)."""

    def __init__(self, stored: Volume, axes: Sequence[str]) -> None:
        self.stored = stored
        self.axes = check_axes(axes)
        # Stored axis that holds each canonical axis.
        self._stored_axis = tuple(self.axes.index(name) for name in AXES)
        super().__init__(
            path=stored.path,
            shape=self._to_canonical(stored.shape),
            dtype=stored.dtype,
            chunks=self._to_canonical(stored.chunks),
        )

    def _to_canonical(self, per_stored_axis: tuple[int, int, int]) -> tuple[int, int, int]:
        first, second, third = (per_stored_axis[axis] for axis in self._stored_axis)
        return first, second, third

    def _read(self, key: VolumeKey) -> np.ndarray:
        canonical_of_stored = [AXES.index(name) for name in self.axes]
        stored_key = tuple(key[axis] for axis in canonical_of_stored)
        data = self.stored[stored_key]
        kept = [axis for axis in canonical_of_stored if isinstance(key[axis], slice)]
        return np.transpose(data, np.argsort(kept))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stored!r}, axes={self.axes})"
