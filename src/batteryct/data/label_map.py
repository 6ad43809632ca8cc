"""Label maps: from the raw values stored in label volumes to the class ids a model trains on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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
    """

    classes: Sequence[str]
    mapping: Mapping[str | int, str] = field(default_factory=dict)
    source: str = "labels"

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
        return mapped.astype(np.uint8)


def _is_int(key: object) -> bool:
    if isinstance(key, int):
        return True
    return isinstance(key, str) and key.isdigit()
