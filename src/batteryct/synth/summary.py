"""Human-facing summaries of a synthetic series: a volume table, a CSV and a preview figure."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from rich import box
from rich.console import Console
from rich.table import Table

from batteryct.classes import CLASS_COLORS
from batteryct.figures import class_colormap, show_labels
from batteryct.series import Series


def print_volume_table(truth: dict[str, Any], console: Console) -> None:
    """Per-scan class volumes (10³ µm³) as a table on the console."""
    names = list(truth["classes"].values())[1:]
    table = Table(title="True class volumes per scan (10³ µm³)", box=box.SIMPLE_HEAD)
    table.add_column("scan")
    table.add_column("min", justify="right")
    table.add_column("phase")
    for name in names:
        table.add_column(name.replace("_", " "), justify="right", no_wrap=False)
    for scan in truth["scans"]:
        volumes = [f"{scan['volume_um3'][name] / 1e3:,.0f}" for name in names]
        table.add_row(scan["id"], f"{scan['minutes']:g}", scan["phase"], *volumes)
    if not console.is_terminal and console.width < 110:
        console = Console(file=console.file, width=110, quiet=console.quiet)  # logs, pipes
    console.print(table)


def write_volume_csv(path: Path, truth: dict[str, Any]) -> None:
    """Tidy CSV: one row per scan and class, with voxel count and volume in µm³."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scan", "minutes", "phase", "class", "voxels", "volume_um3"])
        for scan in truth["scans"]:
            for name, count in scan["voxels"].items():
                writer.writerow(
                    [
                        scan["id"],
                        scan["minutes"],
                        scan["phase"],
                        name,
                        count,
                        scan["volume_um3"][name],
                    ]
                )


def write_preview(path: Path, series: Series, index_of_interest: int) -> None:
    """One PNG: a cross-section of a scan, its true labels and its hand labels (if any)."""
    scan = series.scans[min(index_of_interest, len(series.scans) - 1)]
    labelled = [s for s in series.scans if s.labels is not None and s.labelled_slices]
    if labelled:
        scan = min(labelled, key=lambda s: abs(series.scans.index(s) - index_of_interest))
    image = series.open_image(scan)
    row = image.shape[1] // 2
    if scan.labelled_slices and scan.labelled_slices.get("rows"):
        row = scan.labelled_slices["rows"][0]
    section = image[:, row, :]
    truth = series.open_labels_gt(scan)[:, row, :]
    panels = [("CT cross-section", None), ("true labels", truth)]
    if scan.labels is not None:
        hand = series.open_labels(scan)[:, row, :].astype(np.int64) - 1
        panels.append(("sparse hand labels", np.ma.masked_less(hand, 0)))
    voxel = series.cell.voxel_size_um
    extent = (0, section.shape[1] * voxel, section.shape[0] * voxel, 0)
    cmap = class_colormap(series.classes)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(8, 2.2 * len(panels) * section.shape[0] / 64 + 1), squeeze=False
    )
    for ax, (title, overlay) in zip(axes[:, 0], panels, strict=True):
        show_labels(ax, section, overlay, cmap, alpha=0.75, extent=extent)
        ax.set_title(f"{title} — {scan.id}, {scan.minutes:g} min, row {row}")
        ax.set_ylabel("depth (µm)")
    axes[-1, 0].set_xlabel("cols (µm)")
    handles = [
        Patch(color=CLASS_COLORS[name], label=name)
        for name in series.classes.values()
        if name != "background"
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
