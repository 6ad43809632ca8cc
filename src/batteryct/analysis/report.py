"""A self-contained HTML report: the paper's story for one series, figures embedded."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

SECTIONS = [
    ("Volumes and thicknesses", ["volumes", "side_thickness", "electrode_thickness", "profiles"]),
    ("Electrochemistry", ["traveling_li", "capacity_ratio"]),
    ("Projections and occupation", ["occupation_maps", "occupation", "pearson"]),
    ("Pits, voids and traveling Li", ["unfilled_pits", "void_depth", "traveling_maps"]),
    ("Electrode edges", ["electrode_edges"]),
]


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def write_report(result, path: Path, figures: dict[str, Path], config: Any) -> Path:
    """Write report.html next to the figures, with the PNGs embedded as base64."""
    d = result.derived
    rows = []
    rates = d["rates"]
    for name in ("plating_side", "stripping_side", "plating_electrode", "stripping_electrode"):
        r = rates[name]
        rows.append(
            f"<tr><td>{name.replace('_', ' ')}</td><td>{_fmt(r['start_um'])}</td>"
            f"<td>{_fmt(r['half_cycle_um'])}</td><td>{_fmt(r['end_um'])}</td>"
            f"<td>{_fmt(r['charge_um_per_segment'])}</td>"
            f"<td>{_fmt(r['discharge_um_per_segment'])}</td></tr>"
        )
    facts = [
        ("scans", len(result.scans)),
        ("volume (voxels)", " × ".join(map(str, result.shape))),
        ("voxel size", f"{result.voxel_um:g} µm"),
        ("ROI area", f"{result.roi_area_um2:.4g} µm²"),
        (
            "dead Li after the full cycle",
            f"{d['dead_li']['volume_um3']:.4g} µm³ in {d['dead_li']['count']} pieces, "
            f"{d['dead_li']['detached']} detached from the plating side",
        ),
        (
            "void / contact area after the cycle",
            f"{100 * d['pits']['void_area_fraction']:.1f} % / "
            f"{100 * d['pits']['contact_area_fraction']:.1f} %",
        ),
        (
            "unfilled share of the half-cycle pit area",
            f"{100 * d['pits']['unfilled_pit_area_fraction']:.1f} %",
        ),
        ("traveling Li maps, Pearson r", _fmt(d["traveling"]["pearson_r"], 3)),
    ]
    if d.get("faraday"):
        f = d["faraday"]
        facts += [
            (
                "Faraday Li per segment",
                f"{f['segment']['capacity_mAh']:.4g} mAh, {f['segment']['volume_um3']:.4g} µm³, "
                f"{f['segment']['thickness_um']:.4g} µm over the active area",
            ),
            (
                "CT / electrochemical (charge, discharge, cycle)",
                f"{f['charge_ratio']:.3f}, {f['discharge_ratio']:.3f}, {f['cycle_ratio']:.3f}",
            ),
            ("Li not seen by the CT after the cycle", f"{100 * (1 - f['cycle_ratio']):.1f} %"),
        ]
    if "gap" in d:
        facts.append(
            (
                "inter-electrode gap change (charge, discharge)",
                f"{d['gap']['charge_change_um']:.3g} µm, {d['gap']['discharge_change_um']:.3g} µm",
            )
        )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>batteryct analysis: {html.escape(result.series.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%;margin:.5em 0}pre{background:#f5f5f5;padding:1em;overflow:auto}"
        ".warn{color:#a60}</style></head><body>",
        f"<h1>Operando CT analysis: {html.escape(result.series.name)}</h1>",
        f"<p>Series <code>{html.escape(str(result.series.path))}</code>, labels from "
        f"<code>{html.escape(result.settings.label_field)}</code>. Half cycle "
        f"{result.half_id}, full cycle {result.full_id}. Times are minutes of applied "
        "current.</p>",
    ]
    for warning in result.warnings:
        parts.append(f"<p class='warn'>warning: {html.escape(warning)}</p>")
    parts.append("<h2>Key numbers</h2><table>")
    parts += [f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in facts]
    parts.append(
        "</table><h2>Thicknesses (µm; rates in µm per segment)</h2><table>"
        "<tr><th></th><th>start</th><th>half cycle</th><th>end</th><th>charge rate</th>"
        "<th>discharge rate</th></tr>" + "".join(rows) + "</table>"
    )
    if d.get("faraday"):
        from batteryct.analysis.outputs import CONVENTION

        parts.append(f"<p><em>{html.escape(CONVENTION)}</em></p>")
    for title, keys in SECTIONS:
        present = [k for k in keys if k in figures]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for key in present:
            data = base64.b64encode(Path(figures[key]).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{key}' src='data:image/png;base64,{data}'>")
    parts.append(
        "<h2>Tables</h2><p>volumes.csv, thickness.csv, profiles.csv, "
        "colocalization.csv, faraday.csv, edges.csv, summary.json, maps.npz and meshes/ "
        "in this folder.</p>"
    )
    parts.append(
        "<h2>Configuration of this run</h2><pre>"
        + html.escape(json.dumps(config, indent=2, default=str))
        + "</pre>"
    )
    parts.append("</body></html>")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path
