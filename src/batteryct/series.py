"""The series manifest: the thread between stages.

A manifest (`series.yaml`) holds the cell constants, the class table of its label volumes, the raw
values of its sparse hand labels, and the scans of one operando time series. Every stage reads one;
stages that make volumes write one. The format is documented in `docs/series-format.md`.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from batteryct.classes import UNLABELLED
from batteryct.errors import BatteryCTError
from batteryct.io import Volume, open_volume

FORMAT = "batteryct-series/1"
PHASES = ("pristine", "charge", "discharge")
CANONICAL_AXES = ("depth", "rows", "cols")
PLATING_SIDES = ("start", "end")
LABELLED_SLICE_AXES = ("depth", "rows", "cols")


class ManifestError(BatteryCTError, ValueError):
    """A manifest that cannot be used; the message names the file, the field and the scan."""


@dataclass(frozen=True)
class Cell:
    """Constants of the imaged cell.

    `axes` names what each stored axis of the scans' volumes is (a permutation of depth, rows,
    cols); volumes are presented in canonical (depth, rows, cols) order. `plating_side` says which
    end of the canonical depth axis ("start" = index 0, "end" = last index) holds the plating
    electrode. Constants a stage does not need may be absent (None).
    """

    voxel_size_um: float
    axes: tuple[str, str, str] = CANONICAL_AXES
    active_area_cm2: float | None = None
    current_density_mA_cm2: float | None = None
    plating_side: str | None = None
    segment_min: float | None = None


@dataclass(frozen=True)
class Scan:
    """One CT scan of the series.

    `minutes` counts minutes of applied current only (0 for the pristine scan); `current_mA` is the
    magnitude of the current applied in the segment before the scan, its direction is `phase`.
    `labels` holds sparse hand labels (raw values, 0 = unlabelled), `labels_gt` full labels in the
    manifest's class table. `labelled_slices` optionally lists, per canonical axis, the slice
    indices that carry hand labels, so readers need not scan the label volume.
    """

    id: str
    image: Path
    minutes: float
    phase: str
    current_mA: float = 0.0
    labels: Path | None = None
    labels_gt: Path | None = None
    labelled_slices: dict[str, tuple[int, ...]] | None = None


@dataclass
class Series:
    """A validated manifest. Paths are absolute; `path` is the manifest file it came from."""

    cell: Cell
    classes: dict[int, str]
    scans: list[Scan]
    hand_label_values: dict[int, str] | None = None
    name: str = "series"
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def scan(self, scan_id: str) -> Scan:
        """The scan with this id, or a ManifestError listing the ids there are."""
        for scan in self.scans:
            if scan.id == scan_id:
                return scan
        raise ManifestError(
            f"{self._where()}: no scan with id {scan_id!r}; ids: {[s.id for s in self.scans]}"
        )

    def open_image(self, scan: Scan) -> Volume:
        """The scan's image volume, lazily, in canonical (depth, rows, cols) order."""
        return open_volume(scan.image, axes=self.cell.axes)

    def open_labels(self, scan: Scan) -> Volume:
        """The scan's sparse hand labels (raw values), lazily, in canonical order."""
        if scan.labels is None:
            raise ManifestError(f"{self._where()}: scan {scan.id!r} has no 'labels'")
        return open_volume(scan.labels, axes=self.cell.axes)

    def open_labels_gt(self, scan: Scan) -> Volume:
        """The scan's full labels (class ids of `classes`), lazily, in canonical order."""
        if scan.labels_gt is None:
            raise ManifestError(f"{self._where()}: scan {scan.id!r} has no 'labels_gt'")
        return open_volume(scan.labels_gt, axes=self.cell.axes)

    def _where(self) -> str:
        return str(self.path) if self.path else "series"


def load_series(path: str | os.PathLike[str], check_paths: bool = True) -> Series:
    """Read and validate a manifest; relative paths resolve against the manifest's folder.

    All problems found are reported together in one ManifestError that names the file, each field
    and, for scan fields, the scan.
    """
    path = Path(path)
    if not path.is_file():
        hint = " (a folder was given: point at its series.yaml)" if path.is_dir() else ""
        raise ManifestError(f"series manifest {path} does not exist{hint}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {err}") from err
    return parse_series(raw, base_dir=path.parent.resolve(), source=path, check_paths=check_paths)


def parse_series(
    raw: Any, base_dir: Path, source: Path | None = None, check_paths: bool = True
) -> Series:
    """Validate a manifest already parsed into Python objects (see `load_series`)."""
    checker = _Checker(source or Path("series"), base_dir, check_paths)
    series = checker.series(raw)
    checker.raise_if_any()
    assert series is not None
    series.path = source.resolve() if source else None
    return series


def save_series(series: Series, path: str | os.PathLike[str]) -> Path:
    """Write a manifest atomically; paths inside the manifest's folder are written relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = series_to_dict(series, base_dir=path.parent.resolve())
    text = yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    series.path = path.resolve()
    return path


def series_to_dict(series: Series, base_dir: Path) -> dict[str, Any]:
    """The manifest as plain YAML-ready data, paths relative to `base_dir` where possible."""
    cell = {
        key: getattr(series.cell, key)
        for key in (
            "voxel_size_um",
            "active_area_cm2",
            "current_density_mA_cm2",
            "plating_side",
            "segment_min",
        )
        if getattr(series.cell, key) is not None
    }
    cell["axes"] = list(series.cell.axes)
    out: dict[str, Any] = {"format": FORMAT, "name": series.name, "cell": cell}
    out["classes"] = {int(k): v for k, v in sorted(series.classes.items())}
    if series.hand_label_values is not None:
        out["hand_labels"] = {
            "unlabelled": UNLABELLED,
            "values": {int(k): v for k, v in sorted(series.hand_label_values.items())},
        }
    scans = []
    for scan in series.scans:
        entry: dict[str, Any] = {
            "id": scan.id,
            "image": _relative(scan.image, base_dir),
            "minutes": _plain_number(scan.minutes),
            "phase": scan.phase,
            "current_mA": _plain_number(scan.current_mA),
        }
        if scan.labels is not None:
            entry["labels"] = _relative(scan.labels, base_dir)
        if scan.labels_gt is not None:
            entry["labels_gt"] = _relative(scan.labels_gt, base_dir)
        if scan.labelled_slices:
            entry["labelled_slices"] = {k: list(v) for k, v in scan.labelled_slices.items()}
        scans.append(entry)
    out["scans"] = scans
    if series.metadata:
        out["metadata"] = series.metadata
    return out


def with_scans(series: Series, scans: list[Scan]) -> Series:
    """A copy of `series` with another list of scans (e.g. predictions filled in)."""
    return replace(series, scans=list(scans), metadata=dict(series.metadata))


class _ManifestDumper(yaml.SafeDumper):
    """Writes short lists of numbers or names on one line, everything else in block style."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = all(isinstance(item, int | float | str) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_ManifestDumper.add_representer(list, _represent_list)


def _relative(path: Path, base_dir: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base_dir).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _plain_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


class _Checker:
    """Collects every validation problem of one manifest, then raises them as one error."""

    def __init__(self, source: Path, base_dir: Path, check_paths: bool) -> None:
        self.source = source
        self.base_dir = base_dir
        self.check_paths = check_paths
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.problems:
            lines = "\n  - ".join(self.problems)
            raise ManifestError(f"invalid series manifest {self.source}:\n  - {lines}")

    def series(self, raw: Any) -> Series | None:
        if not isinstance(raw, dict):
            self.fail("manifest", "must be a mapping with keys format, cell, classes, scans")
            self.raise_if_any()
        self.unknown_keys(
            raw,
            "manifest",
            {"format", "name", "cell", "classes", "hand_labels", "scans", "metadata"},
        )
        if raw.get("format", FORMAT) != FORMAT:
            self.fail("format", f"is {raw.get('format')!r}; this version reads {FORMAT!r}")
        cell = self.cell(raw.get("cell"))
        classes = self.class_table(raw.get("classes"), "classes")
        hand = self.hand_labels(raw.get("hand_labels"))
        scans = self.scans(raw.get("scans"))
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            self.fail("metadata", "must be a mapping")
            metadata = {}
        name = str(raw.get("name", "series"))
        if self.problems or cell is None or classes is None:
            return None
        return Series(cell, classes, scans, hand, name=name, metadata=metadata)

    def unknown_keys(self, raw: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.fail(f"{where}.{key}", f"unknown field; valid fields: {sorted(allowed)}")

    def number(
        self, raw: dict[str, Any], key: str, where: str, required: bool, positive: bool = True
    ) -> float | None:
        """A finite number > 0 (or >= 0 when not `positive`); None when absent."""
        value = raw.get(key)
        if value is None:
            if required:
                self.fail(f"{where}.{key}", "is required")
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.fail(f"{where}.{key}", f"is {value!r}; expected a finite number")
            return None
        if value < 0 or (positive and value == 0):
            self.fail(
                f"{where}.{key}", f"is {value!r}; expected a number {'>' if positive else '>='} 0"
            )
            return None
        return float(value)

    def cell(self, raw: Any) -> Cell | None:
        if not isinstance(raw, dict):
            self.fail("cell", "is required: a mapping with voxel_size_um and the cell constants")
            return None
        fields = {
            "voxel_size_um",
            "axes",
            "active_area_cm2",
            "current_density_mA_cm2",
            "plating_side",
            "segment_min",
        }
        self.unknown_keys(raw, "cell", fields)
        voxel = self.number(raw, "voxel_size_um", "cell", required=True)
        area = self.number(raw, "active_area_cm2", "cell", required=False)
        density = self.number(raw, "current_density_mA_cm2", "cell", required=False)
        segment = self.number(raw, "segment_min", "cell", required=False)
        axes_raw = raw.get("axes", list(CANONICAL_AXES))
        axes: tuple[str, str, str] = CANONICAL_AXES
        if (
            not isinstance(axes_raw, list | tuple)
            or sorted(map(str, axes_raw)) != sorted(CANONICAL_AXES)
            or len(axes_raw) != 3
        ):
            self.fail(
                "cell.axes", f"is {axes_raw!r}; expected a permutation of {list(CANONICAL_AXES)}"
            )
        else:
            axes = (str(axes_raw[0]), str(axes_raw[1]), str(axes_raw[2]))
        side = raw.get("plating_side")
        if side is not None and side not in PLATING_SIDES:
            self.fail(
                "cell.plating_side",
                f"is {side!r}; expected 'start' (depth index 0) or 'end' (last depth index)",
            )
        if voxel is None:
            return None
        return Cell(voxel, axes, area, density, side, segment)

    def class_table(self, raw: Any, where: str) -> dict[int, str] | None:
        if not isinstance(raw, dict) or not raw:
            self.fail(where, "is required: a mapping of class id (integer) to class name")
            return None
        table: dict[int, str] = {}
        for key, name in raw.items():
            try:
                cid = int(key)
            except (TypeError, ValueError):
                self.fail(f"{where}.{key}", "class ids must be integers 0-255")
                continue
            if not 0 <= cid <= 255:
                self.fail(f"{where}.{key}", "class ids must be integers 0-255")
            if not isinstance(name, str) or not name:
                self.fail(f"{where}.{key}", f"is {name!r}; expected a class name")
                continue
            if name in table.values():
                self.fail(f"{where}.{key}", f"class name {name!r} appears twice")
            table[cid] = name
        return table

    def hand_labels(self, raw: Any) -> dict[int, str] | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.fail("hand_labels", "must be a mapping with 'unlabelled' and 'values'")
            return None
        self.unknown_keys(raw, "hand_labels", {"unlabelled", "values"})
        if raw.get("unlabelled", UNLABELLED) != UNLABELLED:
            self.fail("hand_labels.unlabelled", f"must be {UNLABELLED} (0 = not painted)")
        values = self.class_table(raw.get("values"), "hand_labels.values")
        if values and UNLABELLED in values:
            self.fail(f"hand_labels.values.{UNLABELLED}", "0 is reserved for unlabelled pixels")
        return values

    def scans(self, raw: Any) -> list[Scan]:
        if not isinstance(raw, list) or not raw:
            self.fail("scans", "is required: a non-empty list of scans")
            return []
        scans: list[tuple[int, Scan]] = []
        seen: set[str] = set()
        for index, entry in enumerate(raw):
            raw_id = entry.get("id") if isinstance(entry, dict) else None
            if raw_id is not None:
                if str(raw_id) in seen:
                    self.fail(
                        f"scans[{index}] (scan {raw_id!r}).id", "appears twice; ids must be unique"
                    )
                seen.add(str(raw_id))
            scan = self.scan(entry, index)
            if scan is not None:
                scans.append((index, scan))
        for (_, before), (index, after) in pairwise(scans):
            if after.minutes < before.minutes:
                self.fail(
                    f"scans[{index}] (scan {after.id!r}).minutes",
                    f"{after.minutes:g} comes after {before.minutes:g} of scan {before.id!r};"
                    " list scans in time order",
                )
        return [scan for _, scan in scans]

    def scan(self, raw: Any, index: int) -> Scan | None:
        where = f"scans[{index}]"
        if not isinstance(raw, dict):
            self.fail(where, "must be a mapping with id, image, minutes, phase")
            return None
        if "id" in raw:
            where = f"scans[{index}] (scan {raw['id']!r})"
        allowed = {
            "id",
            "image",
            "labels",
            "labels_gt",
            "minutes",
            "phase",
            "current_mA",
            "labelled_slices",
        }
        self.unknown_keys(raw, where, allowed)
        scan_id = raw.get("id")
        if not isinstance(scan_id, str | int) or str(scan_id) == "":
            self.fail(f"{where}.id", "is required: a non-empty name")
        minutes = self.number(raw, "minutes", where, required=True, positive=False)
        current = self.number(raw, "current_mA", where, required=False, positive=False)
        phase = raw.get("phase")
        if phase not in PHASES:
            self.fail(f"{where}.phase", f"is {phase!r}; expected one of {', '.join(PHASES)}")
        image = self.volume_path(raw, "image", where, required=True)
        labels = self.volume_path(raw, "labels", where, required=False)
        labels_gt = self.volume_path(raw, "labels_gt", where, required=False)
        slices = self.labelled_slices(raw.get("labelled_slices"), where)
        if scan_id is None or minutes is None or image is None or phase not in PHASES:
            return None
        return Scan(
            id=str(scan_id),
            image=image,
            minutes=minutes,
            phase=str(phase),
            current_mA=current or 0.0,
            labels=labels,
            labels_gt=labels_gt,
            labelled_slices=slices,
        )

    def volume_path(self, raw: dict[str, Any], key: str, where: str, required: bool) -> Path | None:
        value = raw.get(key)
        if value is None:
            if required:
                self.fail(f"{where}.{key}", "is required: a path to a volume")
            return None
        if not isinstance(value, str) or not value:
            self.fail(f"{where}.{key}", f"is {value!r}; expected a path")
            return None
        path = Path(value).expanduser()
        path = path if path.is_absolute() else (self.base_dir / path)
        if self.check_paths and not path.exists():
            self.fail(f"{where}.{key}", f"{path} does not exist")
        return path

    def labelled_slices(self, raw: Any, where: str) -> dict[str, tuple[int, ...]] | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.fail(f"{where}.labelled_slices", "must map an axis (depth/rows/cols) to indices")
            return None
        out: dict[str, tuple[int, ...]] = {}
        for axis, indices in raw.items():
            if axis not in LABELLED_SLICE_AXES:
                self.fail(
                    f"{where}.labelled_slices.{axis}",
                    f"unknown axis; expected one of {list(LABELLED_SLICE_AXES)}",
                )
                continue
            if not isinstance(indices, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices
            ):
                self.fail(
                    f"{where}.labelled_slices.{axis}",
                    f"is {indices!r}; expected a list of slice indices",
                )
                continue
            out[axis] = tuple(indices)
        return out
