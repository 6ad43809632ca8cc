"""The analysis of one operando series: stream every scan once, then derive, tabulate and plot."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from batteryct.analysis.coloc import colocalize
from batteryct.analysis.components import connected_components
from batteryct.analysis.errors import AnalysisError
from batteryct.analysis.folder import (
    analysis_record,
    claim_analysis_folder,
    mark_complete,
    mark_started,
)
from batteryct.analysis.plausibility import implausibilities
from batteryct.analysis.quantities import inner_edges, linear_rate, occupation
from batteryct.analysis.scanpass import ScanStats, scan_stats
from batteryct.electrochem import faraday_segment
from batteryct.errors import ConfigError
from batteryct.io import open_volume
from batteryct.series import Series, load_series

REQUIRED_CLASSES = (
    "background",
    "dendrite",
    "pit",
    "deposited_li",
    "redeposited_li",
    "plating_electrode",
    "stripping_electrode",
)
LABEL_FIELDS = ("labels_gt", "labels")
CONNECTIVITY = {1: "faces, 6 neighbours", 2: "edges, 18", 3: "corners, 26"}
MESH_FORMATS = ("ply", "stl")


class AnalysisWarning(UserWarning):
    """A quantity was skipped because the manifest lacks what it needs."""


@dataclass
class MeshSettings:
    """Surface meshes to write: scan ids (or "half"/"full"), class names, downsampling step."""

    scans: list[str] = field(default_factory=lambda: ["half", "full"])
    classes: list[str] = field(default_factory=lambda: ["dendrite", "pit"])
    step: int = 1
    format: str = "ply"


@dataclass
class AnalysisSettings:
    """Settings of `analyze_series` (mirrors conf/analyze.yaml)."""

    label_field: str = "labels_gt"
    coloc_pairs: list[list[str]] = field(
        default_factory=lambda: [["pit", "dendrite"], ["pit", "deposited_li"]]
    )
    map_scans: list[str] = field(default_factory=list)
    """Scans shown in the occupation-map figure (ids); empty: five spread over the cycle."""
    half_cycle: str | None = None
    """Id of the half-cycle scan; None: the last charge scan."""
    full_cycle: str | None = None
    """Id of the full-cycle scan; None: the last scan."""
    connectivity: int = 3
    workers: int = 2
    engine: str = "threads"
    meshes: MeshSettings | None = field(default_factory=MeshSettings)
    figures: bool = True
    report: bool = True
    dpi: int = 130


@dataclass
class ScanResult:
    """What the analysis keeps of one scan (no volumes, only numbers)."""

    id: str
    minutes: float
    phase: str
    current_mA: float
    counts: dict[str, int]
    profiles: np.ndarray
    occupation: dict[str, float]
    coloc: dict[str, dict[str, float]]
    edges_um: dict[str, float]
    seconds: float


@dataclass
class AnalysisResult:
    """Everything `analyze_series` computed; tables and figures are made from it."""

    series: Series
    settings: AnalysisSettings
    shape: tuple[int, int, int]
    voxel_um: float
    scans: list[ScanResult]
    maps: dict[str, dict[str, np.ndarray]]
    """scan id -> class name -> sum projection (voxels), for the scans figures need."""
    edge_maps: dict[str, dict[str, np.ndarray]]
    half_id: str
    full_id: str
    derived: dict[str, Any]
    warnings: list[str]
    out: Path | None = None

    @property
    def roi_area_um2(self) -> float:
        return self.shape[1] * self.shape[2] * self.voxel_um**2

    @property
    def minutes(self) -> np.ndarray:
        return np.array([s.minutes for s in self.scans], dtype=float)

    def volume_um3(self, name: str) -> np.ndarray:
        return np.array([s.counts[name] for s in self.scans], float) * self.voxel_um**3

    def thickness_um(self, *names: str) -> np.ndarray:
        return sum(self.volume_um3(n) for n in names) / self.roi_area_um2


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed / 1e6:,.1f} Mvox/s" if speed else "", style="cyan")


class _VoxelColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.completed / 1e6:,.1f}/{(task.total or 0) / 1e6:,.1f} Mvox")


def analyze_series(
    series: Series | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    settings: AnalysisSettings | None = None,
    console: Console | None = None,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> AnalysisResult:
    """Analyse every scan of a series; with `out`, write tables, figures, report and meshes.

    `config` is recorded in summary.json and the report (the entry point passes its Hydra config).
    `out` must be empty or hold this analysis (same manifest and settings; its outputs are
    replaced) unless `overwrite`. Every setting and the folder are checked before the long work.
    """
    settings = settings or AnalysisSettings()
    console = console or Console(stderr=True)
    if not isinstance(series, Series):
        series = load_series(series)
    _check_settings(settings)
    ids = _class_ids(series)
    volumes = _open_label_volumes(series, settings.label_field)
    shape = volumes[0].shape
    scan_ids = [s.id for s in series.scans]
    half_id = settings.half_cycle or _default_half(series)
    full_id = settings.full_cycle or scan_ids[-1]
    for key, value in (("half_cycle", half_id), ("full_cycle", full_id)):
        if value not in scan_ids:
            raise ConfigError(f"{key} is {value!r}, not a scan id of the series; ids: {scan_ids}")
    map_ids = list(settings.map_scans) or _spread(scan_ids, 5)
    unknown = [m for m in map_ids if m not in scan_ids]
    if unknown:
        raise ConfigError(f"map_scans names unknown scans {unknown}; ids: {scan_ids}")
    pairs = [tuple(p) for p in settings.coloc_pairs]
    for pair in pairs:
        if len(pair) != 2 or any(name not in ids for name in pair):
            raise ConfigError(
                f"coloc_pairs entry {list(pair)} must name two classes of {sorted(ids)}"
            )
    if settings.meshes is not None:
        _check_meshes(settings.meshes, scan_ids, ids)
    if out is not None:
        record = analysis_record(series.path, settings)
        out = claim_analysis_folder(out, record, overwrite)

    warned: list[str] = []

    def warn(message: str) -> None:
        warned.append(message)
        warnings.warn(message, AnalysisWarning, stacklevel=3)
        console.print(f"[yellow]warning:[/] {message}")

    cell = series.cell
    voxel = float(cell.voxel_size_um)
    n_ids = max(series.classes) + 1
    map_names = [n for n in REQUIRED_CLASSES if n != "background"]
    map_classes = [ids[n] for n in map_names]
    edge_names = ["plating_electrode", "stripping_electrode"]
    edge_classes = [ids[n] for n in edge_names]
    keep_maps = set(map_ids) | {half_id, full_id}
    if cell.plating_side is None:
        warn(
            "cell.plating_side is missing from the manifest: electrode edges and the "
            "inter-electrode gap are skipped (set it to 'start' or 'end')"
        )

    results: list[ScanResult] = []
    maps: dict[str, dict[str, np.ndarray]] = {}
    edge_maps: dict[str, dict[str, np.ndarray]] = {}
    total = int(np.prod(shape)) * len(volumes)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _VoxelColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("series", total=total)
        for scan, volume in zip(series.scans, volumes, strict=True):
            task = progress.add_task(f"{scan.id}", total=int(np.prod(shape)))

            def advance(n: int, task: Any = task) -> None:
                progress.advance(task, n)
                progress.advance(overall, n)

            start = time.perf_counter()
            stats = scan_stats(
                volume,
                n_ids,
                map_classes,
                edge_classes,
                valid_ids=list(series.classes),
                workers=settings.workers,
                engine=settings.engine,
                on_block=advance,
                name=scan.id,
            )
            seconds = time.perf_counter() - start
            progress.remove_task(task)
            results.append(
                _scan_result(scan, stats, ids, map_names, pairs, cell.plating_side, voxel, seconds)
            )
            if scan.id in keep_maps:
                maps[scan.id] = {n: stats.sum_map(ids[n]).copy() for n in map_names}
            if cell.plating_side is not None:
                edge_maps[scan.id] = _edge_maps(stats, ids, cell.plating_side, voxel)

    result = AnalysisResult(
        series=series,
        settings=settings,
        shape=tuple(shape),  # type: ignore[arg-type]
        voxel_um=voxel,
        scans=results,
        maps=maps,
        edge_maps=edge_maps,
        half_id=half_id,
        full_id=full_id,
        derived={},
        warnings=warned,
    )
    full_index = scan_ids.index(full_id)
    result.derived = _derive(result, ids, volumes[full_index], warn)
    for message in implausibilities(result):
        warn(message)
    if out is not None:
        from batteryct.analysis.outputs import write_outputs

        mark_started(out, record)
        written = write_outputs(result, out, volumes, console, config)
        mark_complete(out, record, written)
    return result


def _check_settings(settings: AnalysisSettings) -> None:
    """ConfigError for a setting that cannot work, whatever the series."""
    if settings.label_field not in LABEL_FIELDS:
        raise ConfigError(
            f"label_field is {settings.label_field!r}; expected one of {', '.join(LABEL_FIELDS)}"
        )
    if settings.engine not in ("threads", "dask"):
        raise ConfigError(f"engine is {settings.engine!r}; expected 'threads' or 'dask'")
    if settings.connectivity not in CONNECTIVITY:
        valid = ", ".join(f"{k} ({v})" for k, v in CONNECTIVITY.items())
        raise ConfigError(f"connectivity is {settings.connectivity!r}; expected {valid}")
    if settings.dpi <= 0:
        raise ConfigError(f"dpi is {settings.dpi!r}; expected a positive number")


def _check_meshes(meshes: MeshSettings, scan_ids: list[str], ids: dict[str, int]) -> None:
    if meshes.format not in MESH_FORMATS:
        raise ConfigError(f"meshes.format is {meshes.format!r}; expected 'ply' or 'stl'")
    if meshes.step < 1:
        raise ConfigError(f"meshes.step is {meshes.step!r}; expected a whole number >= 1")
    unknown = [s for s in meshes.scans if s not in ("half", "full", *scan_ids)]
    if unknown:
        raise ConfigError(
            f"meshes.scans names unknown scans {unknown}; expected half, full or ids {scan_ids}"
        )
    unknown = [c for c in meshes.classes if c not in ids]
    if unknown:
        raise ConfigError(f"meshes.classes names unknown classes {unknown}; {sorted(ids)}")


def _class_ids(series: Series) -> dict[str, int]:
    ids = {name: cid for cid, name in series.classes.items()}
    missing = [n for n in REQUIRED_CLASSES if n not in ids]
    if missing or max(series.classes) > 255:
        raise AnalysisError(
            f"{series.path}: the class table lacks {missing} (the analysis needs the 7-class "
            f"scheme {list(REQUIRED_CLASSES)} with ids 0–255); run the depth split of "
            f"predict.py first or fix 'classes'"
        )
    return ids


def _open_label_volumes(series: Series, label_field: str) -> list[Any]:
    missing = [s.id for s in series.scans if getattr(s, label_field) is None]
    if missing:
        raise AnalysisError(
            f"{series.path}: scans {missing} have no '{label_field}' volume; the analysis reads "
            f"full label volumes (set label_field= or add them to the manifest)"
        )
    volumes = [open_volume(getattr(s, label_field), axes=series.cell.axes) for s in series.scans]
    shapes = {s.id: v.shape for s, v in zip(series.scans, volumes, strict=True)}
    if len(set(shapes.values())) > 1:
        first = series.scans[0].id
        odd = {k: v for k, v in shapes.items() if v != shapes[first]}
        raise AnalysisError(
            f"{series.path}: label volumes differ in shape: {first} is {shapes[first]} but "
            + ", ".join(f"{k} is {v}" for k, v in odd.items())
            + "; register and crop every scan to one ROI first"
        )
    for scan, volume in zip(series.scans, volumes, strict=True):
        if volume.dtype.kind not in "iu":
            raise AnalysisError(
                f"label volume of scan {scan.id!r} ({volume.path}) has dtype {volume.dtype}; "
                f"labels must be integer class ids"
            )
    return volumes


def _default_half(series: Series) -> str:
    charge = [s.id for s in series.scans if s.phase == "charge"]
    return charge[-1] if charge else series.scans[len(series.scans) // 2].id


def _spread(items: Sequence[str], n: int) -> list[str]:
    if len(items) <= n:
        return list(items)
    picks = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def _edge_maps(stats: ScanStats, ids: dict[str, int], side: str, voxel: float) -> dict:
    plating_facing = "up" if side == "end" else "down"
    stripping_facing = "down" if side == "end" else "up"
    p_edge, _, _ = inner_edges(
        stats.first_map(ids["plating_electrode"]),
        stats.last_map(ids["plating_electrode"]),
        plating_facing,
    )
    s_edge, _, _ = inner_edges(
        stats.first_map(ids["stripping_electrode"]),
        stats.last_map(ids["stripping_electrode"]),
        stripping_facing,
    )
    return {"plating_electrode": p_edge * voxel, "stripping_electrode": s_edge * voxel}


def _scan_result(scan, stats, ids, map_names, pairs, side, voxel, seconds) -> ScanResult:
    counts = {name: int(stats.counts[cid]) for name, cid in ids.items()}
    occ = {n: occupation(stats.sum_map(ids[n])) for n in map_names}
    coloc = {}
    for a, b in pairs:
        coloc[f"{a}~{b}"] = colocalize(stats.sum_map(ids[a]), stats.sum_map(ids[b])).as_dict()
    edges: dict[str, float] = {}
    if side is not None:
        for name, facing in (
            ("plating_electrode", "up" if side == "end" else "down"),
            ("stripping_electrode", "down" if side == "end" else "up"),
        ):
            _, mean, _cover = inner_edges(
                stats.first_map(ids[name]), stats.last_map(ids[name]), facing
            )
            edges[f"{name}_edge_um"] = mean * voxel
        gap = edges["plating_electrode_edge_um"] - edges["stripping_electrode_edge_um"]
        edges["gap_um"] = gap if side == "end" else -gap
    return ScanResult(
        id=scan.id,
        minutes=float(scan.minutes),
        phase=scan.phase,
        current_mA=float(scan.current_mA),
        counts=counts,
        profiles=stats.profiles,
        occupation=occ,
        coloc=coloc,
        edges_um=edges,
        seconds=seconds,
    )


THICKNESS_QUANTITIES: dict[str, tuple[str, ...]] = {
    "plating_side": ("plating_electrode", "deposited_li"),
    "stripping_side": ("stripping_electrode", "redeposited_li"),
    "plating_electrode": ("plating_electrode",),
    "stripping_electrode": ("stripping_electrode",),
    "deposited_li": ("deposited_li",),
    "redeposited_li": ("redeposited_li",),
    "dendrite": ("dendrite",),
    "pit": ("pit",),
    "plating_li": ("deposited_li", "dendrite"),
}
"""Effective thicknesses reported over time: name -> classes whose volumes add up."""


def _halves(result: AnalysisResult) -> tuple[list[int], list[int]]:
    phases = [s.phase for s in result.scans]
    charge = [i for i, p in enumerate(phases) if p in ("pristine", "charge")]
    discharge = [i for i, p in enumerate(phases) if p == "discharge"]
    if discharge and charge:
        discharge = [max(charge), *discharge]
    return charge, discharge


def _derive(result: AnalysisResult, ids: dict[str, int], full_volume, warn) -> dict[str, Any]:
    cell = result.series.cell
    minutes = result.minutes
    charge, discharge = _halves(result)
    segment = cell.segment_min or (float(np.median(np.diff(minutes))) if minutes.size > 1 else 0)
    derived: dict[str, Any] = {"segment_min": segment}

    # Thickness rates by linear regression over each half of the cycle.
    rates: dict[str, dict[str, float]] = {}
    for name, classes in THICKNESS_QUANTITIES.items():
        thickness = result.thickness_um(*classes)
        rates[name] = {
            "charge_um_per_segment": linear_rate(minutes[charge], thickness[charge]) * segment,
            "discharge_um_per_segment": linear_rate(minutes[discharge], thickness[discharge])
            * segment,
            "start_um": float(thickness[0]),
            "half_cycle_um": float(thickness[_index(result, result.half_id)]),
            "end_um": float(thickness[-1]),
        }
    derived["rates"] = rates
    if result.edge_maps:
        gap = np.array([s.edges_um["gap_um"] for s in result.scans])
        derived["gap"] = {
            "charge_change_um": float(gap[charge][-1] - gap[charge][0]) if charge else math.nan,
            "discharge_change_um": float(gap[discharge][-1] - gap[discharge][0])
            if discharge
            else math.nan,
        }

    # Faraday's law against the Li the CT sees moving.
    derived["faraday"] = _faraday(result, charge, discharge, segment, warn)

    # Maps between half and full cycle.
    half, full = result.maps[result.half_id], result.maps[result.full_id]
    v = result.voxel_um
    pit_half = half["pit"].astype(float)
    unfilled = np.clip(pit_half - full["redeposited_li"], 0, None)
    pit_area = np.count_nonzero(pit_half)
    derived["pits"] = {
        "pit_area_fraction_half_cycle": occupation(half["pit"]),
        "unfilled_pit_area_fraction": float(np.count_nonzero(unfilled) / pit_area)
        if pit_area
        else math.nan,
        "filled_pit_depth_fraction": float(1 - unfilled.sum() / pit_half.sum())
        if pit_half.sum()
        else math.nan,
        "void_area_fraction": occupation(full["pit"]),
        "contact_area_fraction": 1 - occupation(full["pit"]),
        "mean_void_depth_um": float(full["pit"][full["pit"] > 0].mean() * v)
        if np.any(full["pit"])
        else 0.0,
        "max_void_depth_um": float(full["pit"].max() * v),
    }
    li_loss = np.clip(
        (half["deposited_li"] + half["dendrite"]).astype(float)
        - (full["deposited_li"] + full["dendrite"]),
        0,
        None,
    )
    li_gain = np.clip(full["redeposited_li"].astype(float) - half["redeposited_li"], 0, None)
    traveling = colocalize(li_loss, li_gain).as_dict()
    derived["traveling"] = {
        "loss_area_fraction": occupation(li_loss),
        "gain_area_fraction": occupation(li_gain),
        "loss_volume_um3": float(li_loss.sum() * v**3),
        "gain_volume_um3": float(li_gain.sum() * v**3),
        "pearson_r": traveling["pearson_r"],
        "manders_m1": traveling["manders_m1"],
        "manders_m2": traveling["manders_m2"],
    }
    derived["maps"] = {
        "unfilled_pit_um": unfilled * v,
        "li_loss_um": li_loss * v,
        "li_gain_um": li_gain * v,
    }

    # Dead Li: dendrites left after the full cycle, attached or not to the plating side.
    full_result = result.scans[_index(result, result.full_id)]
    dendrite_profile = full_result.profiles[:, ids["dendrite"]]
    present = np.flatnonzero(dendrite_profile)
    if present.size:
        comps = connected_components(
            full_volume,
            ids["dendrite"],
            anchors=(ids["plating_electrode"], ids["deposited_li"]),
            depth_range=(int(present[0]), int(present[-1]) + 1),
            connectivity=result.settings.connectivity,
        )
        derived["dead_li"] = {
            "volume_um3": float(comps.voxels.sum() * v**3),
            "count": comps.count,
            "attached": comps.attached,
            "detached": comps.detached,
            "detached_volume_um3": float(comps.detached_voxels * v**3),
        }
    else:
        derived["dead_li"] = {
            "volume_um3": 0.0,
            "count": 0,
            "attached": 0,
            "detached": 0,
            "detached_volume_um3": 0.0,
        }
    return derived


def _index(result: AnalysisResult, scan_id: str) -> int:
    return [s.id for s in result.scans].index(scan_id)


def _faraday(result, charge, discharge, segment, warn) -> dict[str, Any] | None:
    cell = result.series.cell
    missing = [
        key for key in ("current_density_mA_cm2", "active_area_cm2") if getattr(cell, key) is None
    ]
    if missing:
        warn(
            f"cell.{' and cell.'.join(missing)} missing from the manifest: the comparison "
            f"with Faraday's law is skipped"
        )
        return None
    minutes = result.minutes
    plating_li = result.thickness_um("deposited_li", "dendrite")
    redeposited = result.thickness_um("redeposited_li")
    per_segment = []
    ct_cum = faraday_cum = 0.0
    for i in range(1, len(result.scans)):
        scan = result.scans[i]
        duration = float(minutes[i] - minutes[i - 1])
        if scan.phase == "charge":
            moved = plating_li[i] - plating_li[i - 1]
        elif scan.phase == "discharge":
            moved = redeposited[i] - redeposited[i - 1]
        else:
            continue
        f = faraday_segment(cell.current_density_mA_cm2, cell.active_area_cm2, duration)
        ct_cum += moved
        faraday_cum += f.thickness_um
        per_segment.append(
            {
                "scan": scan.id,
                "minutes": float(minutes[i]),
                "phase": scan.phase,
                "faraday_capacity_mAh": f.capacity_mAh,
                "faraday_mass_g": f.mass_g,
                "faraday_volume_um3": f.volume_um3,
                "faraday_thickness_um": f.thickness_um,
                "ct_thickness_um": float(moved),
                "ct_volume_um3": float(moved * result.roi_area_um2),
                "ratio": float(moved / f.thickness_um) if f.thickness_um else math.nan,
                "cumulative_faraday_thickness_um": faraday_cum,
                "cumulative_ct_thickness_um": ct_cum,
                "cumulative_ratio": ct_cum / faraday_cum if faraday_cum else math.nan,
            }
        )
    seg = faraday_segment(cell.current_density_mA_cm2, cell.active_area_cm2, segment)
    charge_rate = linear_rate(minutes[charge], plating_li[charge]) * segment
    discharge_rate = linear_rate(minutes[discharge], redeposited[discharge]) * segment
    overall = per_segment[-1]["cumulative_ratio"] if per_segment else math.nan
    out = {
        "segment": {
            "duration_min": segment,
            "capacity_mAh": seg.capacity_mAh,
            "mass_g": seg.mass_g,
            "volume_um3": seg.volume_um3,
            "thickness_um": seg.thickness_um,
            "roi_equivalent_volume_um3": seg.thickness_um * result.roi_area_um2,
        },
        "charge_ct_um_per_segment": charge_rate,
        "discharge_ct_um_per_segment": discharge_rate,
        "charge_ratio": charge_rate / seg.thickness_um,
        "discharge_ratio": discharge_rate / seg.thickness_um,
        "cycle_ratio": overall,
        "electrochemical_capacity_mAh": sum(p["faraday_capacity_mAh"] for p in per_segment),
        "per_segment": per_segment,
    }
    out["ct_capacity_mAh"] = overall * out["electrochemical_capacity_mAh"]
    return out
