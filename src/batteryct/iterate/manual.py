"""Corrections by a person: chosen slices out as TIFF with the model's labels, painted back in.

`export_slices` writes, per chosen slice, `<scan>_<axis>_<index>_image.tif` (grey values) and
`<scan>_<axis>_<index>_labels.tif` (uint8: the model's prediction as class ids of the series'
class table, 255 = unlabelled) into `export/`, with `slices.json` and `README.txt`. A person
paints the labels files in Fiji, napari or Dragonfly and saves them, same names, into `painted/`.
`import_slices` checks every painted file against its slice and returns the raw hand labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from batteryct.classes import ANALYSIS_CLASSES
from batteryct.data.slices import SliceRef
from batteryct.errors import BatteryCTError
from batteryct.io import open_volume
from batteryct.iterate.labels import class_to_hand_value
from batteryct.series import Series

UNPAINTED = 255
"""Value of an unlabelled pixel in the exported and painted label files."""
SLICES_FILE = "slices.json"


class PaintedSliceError(BatteryCTError, ValueError):
    """A painted file that does not fit its slice; the message names the file."""


def slice_name(ref: SliceRef) -> str:
    return f"{ref.scan_id}_{ref.axis}_{ref.index:05d}"


def export_slices(
    series: Series, slices: list[SliceRef], predictions: Path | None, folder: Path
) -> Path:
    """Write the chosen slices and their predicted labels into `folder/export`; make
    `folder/painted`; return the export folder. `predictions`: predict.py's output folder."""
    export = folder / "export"
    export.mkdir(parents=True, exist_ok=True)
    (folder / "painted").mkdir(exist_ok=True)
    to_series = _analysis_to_series(series)
    entries = []
    for ref in slices:
        scan = series.scan(ref.scan_id)
        image = np.asarray(series.open_image(scan)[ref.key()])
        labels = np.full(image.shape, UNPAINTED, np.uint8)
        predicted = predictions / "labels" / f"{ref.scan_id}.zarr" if predictions else None
        if predicted is not None and predicted.exists():
            labels = to_series[np.asarray(open_volume(predicted)[ref.key()])]
        name = slice_name(ref)
        tifffile.imwrite(export / f"{name}_image.tif", image)
        tifffile.imwrite(export / f"{name}_labels.tif", labels)
        entries.append({"scan": ref.scan_id, "axis": ref.axis, "index": ref.index, "name": name})
        entries[-1]["shape"] = list(image.shape)
    record = {"classes": {int(k): v for k, v in series.classes.items()}, "slices": entries}
    (export / SLICES_FILE).write_text(json.dumps(record, indent=1))
    (export / "README.txt").write_text(_readme(series, folder))
    return export


def import_slices(series: Series, folder: Path) -> dict[SliceRef, np.ndarray]:
    """Raw hand labels of every exported slice, read from `folder/painted/<name>_labels.tif`.

    Raises PaintedSliceError naming each painted file that is missing, unreadable, of another
    shape than its slice, or holds values other than the class ids and 255.
    """
    record = json.loads((folder / "export" / SLICES_FILE).read_text())
    valid = sorted(int(k) for k in record["classes"])
    to_hand = class_to_hand_value(series)
    problems: list[str] = []
    painted: dict[SliceRef, np.ndarray] = {}
    for entry in record["slices"]:
        ref = SliceRef(entry["scan"], entry["axis"], int(entry["index"]))
        path = folder / "painted" / f"{entry['name']}_labels.tif"
        values = _read_painted(path, tuple(entry["shape"]), valid, problems)
        if values is None:
            continue
        raw = np.where(values == UNPAINTED, 0, to_hand[np.minimum(values, 255)])
        painted[ref] = raw.astype(np.uint8)
    if problems:
        lines = "\n  - ".join(problems)
        raise PaintedSliceError(
            f"{len(problems)} painted file(s) in {folder / 'painted'} do not fit their slice:"
            f"\n  - {lines}\nFix them and run the same command again."
        )
    return painted


def _read_painted(
    path: Path, shape: tuple[int, ...], valid: list[int], problems: list[str]
) -> np.ndarray | None:
    """The painted label values of one file, or None after adding its problem to `problems`."""
    if not path.is_file():
        problems.append(f"{path}: missing; paint export/{path.name} and save it under this name")
        return None
    try:
        values = np.squeeze(tifffile.imread(path))
    except Exception as err:  # tifffile raises many types for a damaged file
        problems.append(f"{path}: not a readable TIFF ({type(err).__name__}: {err})")
        return None
    if values.shape != shape:
        problems.append(
            f"{path}: shape {list(values.shape)}, but its slice is {list(shape)} "
            "(save one 8-bit single-channel image of the exported size)"
        )
        return None
    if not np.issubdtype(values.dtype, np.integer):
        problems.append(f"{path}: {values.dtype} values; expected integer class ids (8-bit)")
        return None
    found = np.unique(values)
    bad = [int(v) for v in found if int(v) not in valid and int(v) != UNPAINTED]
    if bad:
        problems.append(
            f"{path}: values {bad[:10]} are not class ids; valid values: {valid} (class ids) "
            f"and {UNPAINTED} (unlabelled)"
        )
        return None
    return values.astype(np.int64)


def _analysis_to_series(series: Series) -> np.ndarray:
    """256-entry table: predicted analysis class id -> the series' class id (255 if none)."""
    table = np.full(256, UNPAINTED, np.uint8)
    by_name = {name: cid for cid, name in series.classes.items()}
    for cid, name in ANALYSIS_CLASSES.items():
        if name in by_name:
            table[cid] = by_name[name]
    return table


def _readme(series: Series, folder: Path) -> str:
    classes = "\n".join(f"  {cid}: {name}" for cid, name in sorted(series.classes.items()))
    return (
        "Corrections for the iterative training loop (batteryct iterate.py)\n\n"
        "Each slice has <name>_image.tif (grey values) and <name>_labels.tif (uint8 labels: the\n"
        "model's prediction as a starting point). Open both in Fiji, napari or Dragonfly, correct\n"
        "the labels and save them, under the same name, as 8-bit single-channel TIFF into\n"
        f"{folder / 'painted'}\n\nLabel values:\n{classes}\n  {UNPAINTED}: unlabelled (not used "
        "for training)\n\nThen run the same iterate.py command again.\n"
    )
