"""Training data: label maps, labelled slices, splits by slice, patch sampling, the DataModule."""

from batteryct.data.datamodule import PatchDataModule
from batteryct.data.label_map import IGNORE, IGNORE_INDEX, LabelMap
from batteryct.data.patches import PatchDataset
from batteryct.data.slices import (
    ORIENTATIONS,
    LabelledSlice,
    SliceRef,
    find_labelled_slices,
    load_slices,
    to_unit_range,
)
from batteryct.data.splits import load_split, save_split, split_slices

__all__ = [
    "IGNORE",
    "IGNORE_INDEX",
    "ORIENTATIONS",
    "LabelMap",
    "LabelledSlice",
    "PatchDataModule",
    "PatchDataset",
    "SliceRef",
    "find_labelled_slices",
    "load_slices",
    "load_split",
    "save_split",
    "split_slices",
    "to_unit_range",
]
