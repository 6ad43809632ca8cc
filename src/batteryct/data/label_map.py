"""Label maps: from the raw values stored in label volumes to the class ids a model trains on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from batteryct.classes import UNLABELLED
from batteryct.errors import ConfigError
from batteryct.series import Series

IGNORE_INDEX = 255
"""Target value of pixels that must not reach the loss or the metrics."""
IGNORE = "ignore"
"""Mapping target that turns a labelled class into unlabelled pixels."""
_UNKNOWN = -1
LABEL_SOURCES = ("labels", "labels_gt")


@dataclass(frozen=True)
class LabelMap:
    """Which training class each labelled class becomes.

    `classes` are the training classes (position = class id). `mapping` sends a class name of the
    label volume (from the manifest's `hand_labels.values` for `labels`, or `classes` for
    `labels_gt`), or a raw integer value, to a training class name or to "ignore". `source` says
    which label volume of the scans to train from.

    `margin_classes` are the training classes that annotators leave unpainted for
    `margin_px` pixels next to another phase (the usual care with large phases); the labels of
    the other phases are then also ignored for `margin_px` pixels along such a margin, so that
    every unlabelled band is centred on the phase boundary instead of lying on the large
    phase's side (which teaches a model to widen the small phases).
    """

    classes: Sequence[str]
    mapping: Mapping[str | int, str] = field(default_factory=dict)
    source: str = "labels"
    margin_classes: Sequence[str] = ()
    margin_px: int = 1

    def __post_init__(self) -> None:
        if self.source not in LABEL_SOURCES:
            raise ConfigError(
                f"label_map.source is {self.source!r}; expected one of {list(LABEL_SOURCES)}"
            )
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(
                f"label_map.classes is {list(self.classes)}; expected at least two distinct names"
            )
        if len(self.classes) >= IGNORE_INDEX:
            raise ConfigError(f"label_map.classes: at most {IGNORE_INDEX - 1} classes")
        for key, target in self.mapping.items():
            if target != IGNORE and target not in self.classes:
                raise ConfigError(
                    f"label_map.mapping.{key} is {target!r}; expected one of "
                    f"{[*self.classes, IGNORE]}"
                )
        unknown = [name for name in self.margin_classes if name not in self.classes]
        if unknown:
            raise ConfigError(
                f"label_map.margin_classes has {unknown}; expected names among {list(self.classes)}"
            )
        if self.margin_px < 1:
            raise ConfigError(f"label_map.margin_px is {self.margin_px}; expected 1 or more")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def lookup_table(self, series: Series) -> np.ndarray:
        """A 256-entry table: raw label value -> class id, IGNORE_INDEX, or -1 (not mapped)."""
        table = np.full(256, _UNKNOWN, np.int16)
        if self.source == "labels":
            table[UNLABELLED] = IGNORE_INDEX
            raw_names = series.hand_label_values or {}
        else:
            raw_names = series.classes
        by_name: dict[str, list[int]] = {}
        for value, name in raw_names.items():
            by_name.setdefault(name, []).append(int(value))
        for key, target in self.mapping.items():
            target_id = IGNORE_INDEX if target == IGNORE else list(self.classes).index(target)
            values = [int(key)] if _is_int(key) else by_name.get(str(key), [])
            for value in values:
                table[value] = target_id
        return table

    def apply(self, raw: np.ndarray, table: np.ndarray, where: str) -> np.ndarray:
        """Class ids (uint8, IGNORE_INDEX for unlabelled) of a raw label array.

        Raises ConfigError listing every raw value the map does not cover, naming `where`.
        """
        if raw.dtype.kind not in "ui" or (raw.size and (raw.min() < 0 or raw.max() > 255)):
            raise ConfigError(f"{where}: label values must be integers 0-255, got {raw.dtype}")
        mapped = table[raw.astype(np.intp)]
        if np.any(mapped == _UNKNOWN):
            missing = sorted(int(v) for v in np.unique(raw[mapped == _UNKNOWN]))
            raise ConfigError(
                f"{where}: label values {missing} are missing from the label map; map them "
                f"(by class name or raw value) in data.label_map.mapping, or to '{IGNORE}'"
            )
        mapped = mapped.astype(np.uint8)
        if self.margin_classes and self.source == "labels":
            margin_ids = [list(self.classes).index(name) for name in self.margin_classes]
            mapped[_beside_margins(mapped, margin_ids, self.margin_px)] = IGNORE_INDEX
        return mapped


def _beside_margins(target: np.ndarray, margin_ids: list[int], width_px: int) -> np.ndarray:
    """Labelled pixels of the other classes within `width_px` (4-connected) of an unlabelled
    margin, i.e. of unlabelled pixels within `width_px` of a margin class's label."""
    cross = ndimage.generate_binary_structure(target.ndim, 1)
    margin_labelled = np.isin(target, margin_ids)
    unlabelled = target == IGNORE_INDEX
    margin = unlabelled & ndimage.binary_dilation(margin_labelled, cross, iterations=width_px)
    other = ~unlabelled & ~margin_labelled
    return other & ndimage.binary_dilation(margin, cross, iterations=width_px)


def _is_int(key: object) -> bool:
    if isinstance(key, int):
        return True
    return isinstance(key, str) and key.isdigit()
