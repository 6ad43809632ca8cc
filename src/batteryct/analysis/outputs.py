"""Write an analysis: tidy CSV tables, summary.json, figures, report.html and meshes."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from batteryct.analysis.meshes import class_mesh, write_ply, write_stl

CONVENTION = (
    "CT/electrochemical ratios compare thicknesses: CT volume / ROI in-plane area against "
    "Faraday volume / active area (the Faraday volume is for the whole active area), so an ROI "
    "smaller than the active area does not bias the ratio. CT traveling Li per segment: during "
    "charge the gain of deposited Li + dendrites, during discharge the gain of redeposited Li."
)
TABLES = ("volumes", "thickness", "profiles", "colocalization", "edges", "faraday")
OUTPUTS = (
    *(f"{name}.csv" for name in TABLES),
    "summary.json",
    "maps.npz",
    "report.html",
    "figures",
    "meshes",
)
"""Everything `write_outputs` may write into the folder; a run first removes what is there of it."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def tables(result) -> dict[str, list[dict[str, Any]]]:
    """The tidy tables, one row per observation."""
    v = result.voxel_um
    area = result.roi_area_um2
    volumes, profiles, coloc, edges = [], [], [], []
    names = list(result.scans[0].counts)
    for s in result.scans:
        for name in names:
            volumes.append(
                {
                    "scan": s.id,
                    "minutes": s.minutes,
                    "phase": s.phase,
                    "class": name,
                    "voxels": s.counts[name],
                    "volume_um3": s.counts[name] * v**3,
                    "thickness_um": s.counts[name] * v**3 / area,
                    "area_occupation": s.occupation.get(name, math.nan),
                }
            )
        for pair, stats in s.coloc.items():
            a, b = pair.split("~")
            coloc.append({"scan": s.id, "minutes": s.minutes, "map_1": a, "map_2": b, **stats})
        if s.edges_um:
            edges.append({"scan": s.id, "minutes": s.minutes, **s.edges_um})
        ids = dict(result.series.classes)
        for d in range(s.profiles.shape[0]):
            row = {"scan": s.id, "minutes": s.minutes, "depth_index": d, "depth_um": (d + 0.5) * v}
            row.update({name: int(s.profiles[d, cid]) for cid, name in ids.items()})
            profiles.append(row)
    thickness = []
    from batteryct.analysis.run import THICKNESS_QUANTITIES

    for name, classes in THICKNESS_QUANTITIES.items():
        values = result.thickness_um(*classes)
        for s, value in zip(result.scans, values, strict=True):
            thickness.append(
                {
                    "scan": s.id,
                    "minutes": s.minutes,
                    "phase": s.phase,
                    "quantity": name,
                    "classes": "+".join(classes),
                    "thickness_um": float(value),
                }
            )
    out = {
        "volumes": volumes,
        "thickness": thickness,
        "profiles": profiles,
        "colocalization": coloc,
    }
    if edges:
        out["edges"] = edges
    faraday = result.derived.get("faraday")
    if faraday:
        out["faraday"] = faraday["per_segment"]
    return out


def summary(result, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every number of the analysis as {"value": ..., "unit": ...} where it has a unit."""
    d = result.derived

    def q(value: Any, unit: str) -> dict[str, Any]:
        return {"value": _plain(value), "unit": unit}

    rates = {
        name: {
            "start": q(r["start_um"], "µm"),
            "half_cycle": q(r["half_cycle_um"], "µm"),
            "end": q(r["end_um"], "µm"),
            "charge_rate": q(r["charge_um_per_segment"], "µm/segment"),
            "discharge_rate": q(r["discharge_um_per_segment"], "µm/segment"),
        }
        for name, r in d["rates"].items()
    }
    out: dict[str, Any] = {
        "series": str(result.series.path),
        "name": result.series.name,
        "scans": len(result.scans),
        "shape_voxels": list(result.shape),
        "voxel_size": q(result.voxel_um, "µm"),
        "roi_area": q(result.roi_area_um2, "µm²"),
        "segment_duration": q(d["segment_min"], "min"),
        "half_cycle_scan": result.half_id,
        "full_cycle_scan": result.full_id,
        "label_field": result.settings.label_field,
        "effective_thickness": rates,
        "volumes_full_cycle": {
            name: q(result.volume_um3(name)[-1], "µm³") for name in result.scans[-1].counts
        },
        "area_occupation": {
            sid: {n: q(v, "fraction") for n, v in s.occupation.items()}
            for sid, s in ((s.id, s) for s in result.scans)
            if sid in (result.half_id, result.full_id)
        },
        "pits": {
            "pit_area_fraction_half_cycle": q(
                d["pits"]["pit_area_fraction_half_cycle"], "fraction"
            ),
            "unfilled_pit_area_fraction": q(
                d["pits"]["unfilled_pit_area_fraction"], "fraction of half-cycle pit area"
            ),
            "filled_pit_depth_fraction": q(
                d["pits"]["filled_pit_depth_fraction"], "fraction of half-cycle pit volume"
            ),
            "void_area_fraction": q(d["pits"]["void_area_fraction"], "fraction of ROI area"),
            "contact_area_fraction": q(d["pits"]["contact_area_fraction"], "fraction of ROI area"),
            "mean_void_depth": q(d["pits"]["mean_void_depth_um"], "µm"),
            "max_void_depth": q(d["pits"]["max_void_depth_um"], "µm"),
        },
        "traveling_li": {
            "loss_area_fraction": q(d["traveling"]["loss_area_fraction"], "fraction"),
            "gain_area_fraction": q(d["traveling"]["gain_area_fraction"], "fraction"),
            "loss_volume": q(d["traveling"]["loss_volume_um3"], "µm³"),
            "gain_volume": q(d["traveling"]["gain_volume_um3"], "µm³"),
            "pearson_r": q(d["traveling"]["pearson_r"], "1"),
            "manders_m1": q(d["traveling"]["manders_m1"], "1"),
            "manders_m2": q(d["traveling"]["manders_m2"], "1"),
        },
        "dead_li": {
            "volume": q(d["dead_li"]["volume_um3"], "µm³"),
            "count": q(d["dead_li"]["count"], "components"),
            "attached": q(d["dead_li"]["attached"], "components"),
            "detached": q(d["dead_li"]["detached"], "components"),
            "detached_volume": q(d["dead_li"]["detached_volume_um3"], "µm³"),
            "connectivity": result.settings.connectivity,
        },
        "colocalization": {
            s.id: {pair: {k: q(v, "1") for k, v in st.items()} for pair, st in s.coloc.items()}
            for s in result.scans
        },
        "warnings": list(result.warnings),
    }
    if "gap" in d:
        out["electrode_gap"] = {
            "start": q(result.scans[0].edges_um["gap_um"], "µm"),
            "end": q(result.scans[-1].edges_um["gap_um"], "µm"),
            "charge_change": q(d["gap"]["charge_change_um"], "µm"),
            "discharge_change": q(d["gap"]["discharge_change_um"], "µm"),
        }
    f = d.get("faraday")
    if f:
        seg = f["segment"]
        out["faraday"] = {
            "convention": CONVENTION,
            "segment": {
                "duration": q(seg["duration_min"], "min"),
                "capacity": q(seg["capacity_mAh"], "mAh"),
                "mass": q(seg["mass_g"], "g"),
                "volume_active_area": q(seg["volume_um3"], "µm³"),
                "thickness": q(seg["thickness_um"], "µm"),
                "volume_roi_equivalent": q(seg["roi_equivalent_volume_um3"], "µm³"),
            },
            "charge_ct_rate": q(f["charge_ct_um_per_segment"], "µm/segment"),
            "discharge_ct_rate": q(f["discharge_ct_um_per_segment"], "µm/segment"),
            "charge_ratio": q(f["charge_ratio"], "CT/electrochemical"),
            "discharge_ratio": q(f["discharge_ratio"], "CT/electrochemical"),
            "cycle_ratio": q(f["cycle_ratio"], "CT/electrochemical"),
            "missing_fraction": q(1 - f["cycle_ratio"], "fraction"),
            "electrochemical_capacity": q(f["electrochemical_capacity_mAh"], "mAh"),
            "ct_capacity": q(f["ct_capacity_mAh"], "mAh"),
        }
    if config is not None:
        out["config"] = config
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


def write_outputs(result, out: Path, volumes, console: Console, config=None) -> dict[str, Path]:
    """Replace the outputs of any earlier run in `out` with this one's; returns name -> path."""
    remove_outputs(out)
    written: dict[str, Path] = {}
    for name, rows in tables(result).items():
        path = out / f"{name}.csv"
        _write_csv(path, rows)
        written[name] = path
    if config is None:
        config = _settings_dict(result.settings)
    path = out / "summary.json"
    _atomic_write(path, json.dumps(summary(result, config), indent=2, ensure_ascii=False))
    written["summary"] = path
    depth = result.shape[0]
    projections = {}
    for sid, ms in result.maps.items():
        for name, m in ms.items():
            projections[f"{sid}/{name}"] = m  # sum projection, voxels
            projections[f"{sid}/{name}/thickness_um"] = m * result.voxel_um  # local thickness
            projections[f"{sid}/{name}/mean"] = m / depth  # mean projection: density
    path = out / "maps.npz"
    np.savez_compressed(path, **projections, **{k: v for k, v in result.derived["maps"].items()})
    written["maps"] = path
    meshes = result.settings.meshes
    if meshes is not None and meshes.scans and meshes.classes:
        written.update(_write_meshes(result, out, volumes, console))
    if result.settings.figures:
        from batteryct.analysis.figures import make_figures

        figures = make_figures(result, out / "figures", dpi=result.settings.dpi)
        written.update({f"figure:{k}": v for k, v in figures.items()})
        if result.settings.report:
            from batteryct.analysis.report import write_report

            written["report"] = write_report(result, out / "report.html", figures, config)
    console.print(f"analysis written to [bold]{out}[/]")
    return written


def remove_outputs(out: Path) -> None:
    """Remove every output of an earlier analysis (and its temporary files) from `out`; other
    files stay."""
    for name in OUTPUTS:
        for path in (out / name, out / f".{name}.tmp"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def _settings_dict(settings) -> dict[str, Any]:
    return asdict(settings) if is_dataclass(settings) else dict(settings)


def _write_meshes(result, out: Path, volumes, console: Console) -> dict[str, Path]:
    settings = result.settings.meshes
    ids = {name: cid for cid, name in result.series.classes.items()}
    scan_ids = [s.id for s in result.scans]
    alias = {"half": result.half_id, "full": result.full_id}
    folder = out / "meshes"
    folder.mkdir(exist_ok=True)
    written: dict[str, Path] = {}
    for requested in settings.scans:
        sid = alias.get(requested, requested)
        volume = volumes[scan_ids.index(sid)]
        for name in settings.classes:
            verts, faces = class_mesh(volume, ids[name], result.voxel_um, settings.step)
            if len(faces) == 0:
                console.print(f"[yellow]no {name} in {sid}: no mesh written[/]")
                continue
            path = folder / f"{sid}_{name}.{settings.format}"
            (write_ply if settings.format == "ply" else write_stl)(path, verts, faces)
            written[f"mesh:{sid}:{name}"] = path
    return written
