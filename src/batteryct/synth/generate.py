"""Generate a synthetic operando series: volumes, sparse hand labels, manifest and ground truth.

The output folder holds `series.yaml` (written last: a folder without it is not a finished
series), `truth.json` (true per-scan class voxel counts and volumes, and the Faraday numbers the
generator used), `volumes.csv`, `preview.png`, and per scan `images/`, `labels_gt/`, `labels/`
(labelled scans only) as zarr, plus `tiff/` copies for Fiji when asked. An interrupted generation
continues where it stopped when run again with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from batteryct import __version__
from batteryct.classes import ANALYSIS_CLASSES
from batteryct.electrochem import faraday_segment
from batteryct.errors import ConfigError
from batteryct.io import export_tiff, write_zarr
from batteryct.outfolder import claim_output_folder, write_json_atomic
from batteryct.series import Cell, Scan, Series, load_series, save_series
from batteryct.synth.calibration import calibration_table, scan_measures
from batteryct.synth.ct import CTSettings, simulate_scan
from batteryct.synth.geometry import (
    BACKGROUND,
    PLATING_ELECTRODE,
    STRIPPING_ELECTRODE,
    CellGeometry,
    Material,
    StepCounts,
    SyntheticCell,
)
from batteryct.synth.hand_labels import HandLabelSettings, choose_slices, label_value, paint_volume
from batteryct.synth.misalign import (
    MisalignSettings,
    inclusion_mask,
    misalign_volume,
    scan_map,
)
from batteryct.synth.summary import print_volume_table, write_preview, write_volume_csv

PROGRESS_FILE = ".synth-progress.json"
COMMON_CLASSES = (BACKGROUND, PLATING_ELECTRODE, STRIPPING_ELECTRODE)


@dataclass(frozen=True)
class CycleProtocol:
    """The electrochemical protocol: constant-current segments, each followed by a scan."""

    n_charge: int = 12
    n_discharge: int = 12
    segment_min: float = 10.0
    current_density_mA_cm2: float = 1.5
    active_area_cm2: float = 0.5
    efficiency: float = 0.77
    """Share of Faraday's Li that moves within the imaged region, as dense Li (the rest: side
    reactions, Li moving elsewhere in the cell). 0.77 makes the stripping electrode lose the
    paper's 11.2 µm during charge; porous deposits then look thicker than the Li they hold."""


def generate_series(
    out: str | os.PathLike[str],
    shape: tuple[int, int, int] = (64, 128, 128),
    voxel_size_um: float = 2.5,
    seed: int = 0,
    plating_side: str = "end",
    protocol: CycleProtocol | None = None,
    geometry: CellGeometry | None = None,
    ct: CTSettings | None = None,
    hand_labels: HandLabelSettings | None = None,
    export_tiffs: bool = True,
    overwrite: bool = False,
    console: Console | None = None,
    misalign: MisalignSettings | None = None,
) -> Series:
    """Write a complete synthetic series to `out` and return its manifest.

    With `misalign`, every scan is tilted and moved by a known rigid map before the CT simulation
    (labels too), for the preparation stage to undo; the maps go to `misalignment.json`.
    """
    misalign = misalign or MisalignSettings()
    misalign.check()
    protocol = protocol or CycleProtocol()
    geometry = geometry or CellGeometry()
    ct = ct or CTSettings()
    hand_labels = hand_labels or HandLabelSettings()
    console = console or Console()
    shape = _check_settings(shape, voxel_size_um, plating_side, protocol, hand_labels)
    out = Path(out)
    _check_out_folder(out)
    settings = {
        "shape": list(shape),
        "voxel_size_um": voxel_size_um,
        "seed": seed,
        "plating_side": plating_side,
        "protocol": asdict(protocol),
        "geometry": asdict(geometry),
        "ct": asdict(ct),
        "hand_labels": asdict(hand_labels),
        "export_tiffs": export_tiffs,
    }
    if misalign.active:  # only then, so that aligned series stay exactly as they were
        settings["misalign"] = asdict(misalign)
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    progress_state = claim_output_folder(
        out, fingerprint, "truth.json", PROGRESS_FILE, "a series", overwrite
    )
    manifest = out / "series.yaml"
    if progress_state is None:
        print_volume_table(json.loads((out / "truth.json").read_text()), console)
        console.print(f"[green]{manifest} is complete for these settings; nothing to do.")
        return load_series(manifest)
    progress_state.setdefault("scans", {})

    cell = SyntheticCell(geometry, shape, voxel_size_um, seed)
    segment = faraday_segment(
        protocol.current_density_mA_cm2, protocol.active_area_cm2, protocol.segment_min
    )
    roi_area_um2 = shape[1] * shape[2] * voxel_size_um**2
    moved_um3_per_segment = protocol.efficiency * segment.thickness_um * roi_area_um2
    steps = cell.schedule(*moved_li_voxels(protocol, shape, voxel_size_um))
    scans = _scan_table(protocol)
    labelled = set(hand_labels.scans)

    with Progress(
        TextColumn("[bold]synthesising"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("scans"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("scans", total=len(steps))
        for index, (scan, counts) in enumerate(zip(scans, steps, strict=True)):
            if scan["id"] not in progress_state["scans"]:
                record = _write_scan(
                    out,
                    index,
                    scan["id"],
                    cell,
                    counts,
                    voxel_size_um,
                    seed,
                    plating_side,
                    ct,
                    hand_labels if index in labelled else None,
                    export_tiffs,
                    misalign=misalign if misalign.active else None,
                    n_scans=len(steps),
                )
                progress_state["scans"][scan["id"]] = record
                write_json_atomic(out / PROGRESS_FILE, progress_state)
            bar.advance(task)

    records = [progress_state["scans"][s["id"]] for s in scans]
    truth = _truth(
        fingerprint,
        settings,
        protocol,
        segment,
        moved_um3_per_segment,
        roi_area_um2,
        scans,
        records,
        steps,
        cell,
        voxel_size_um,
    )
    write_json_atomic(out / "truth.json", truth)
    if misalign.active:
        write_json_atomic(
            out / "misalignment.json",
            {
                "settings": asdict(misalign),
                "axes": ["depth", "rows", "cols"],
                "scans": {s["id"]: r["misalignment"] for s, r in zip(scans, records, strict=True)},
            },
        )
    write_volume_csv(out / "volumes.csv", truth)
    series = _series(out, scans, records, protocol, voxel_size_um, plating_side, settings)
    write_preview(out / "preview.png", series, index_of_interest=protocol.n_charge)
    save_series(series, manifest)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    print_volume_table(truth, console)
    console.print(f"[green]wrote {manifest}")
    return series


def moved_li_voxels(
    protocol: CycleProtocol, shape: tuple[int, int, int], voxel_size_um: float
) -> tuple[list[float], list[float]]:
    """Cumulative Li (voxels of dense Li) moved within the volume after each charge and each
    discharge segment: Faraday's law for the volume's in-plane area, times the efficiency."""
    segment = faraday_segment(
        protocol.current_density_mA_cm2, protocol.active_area_cm2, protocol.segment_min
    )
    area_um2 = shape[1] * shape[2] * voxel_size_um**2
    per_segment = protocol.efficiency * segment.thickness_um * area_um2 / voxel_size_um**3
    return (
        [k * per_segment for k in range(protocol.n_charge + 1)],
        [j * per_segment for j in range(protocol.n_discharge + 1)],
    )


def _check_settings(
    shape: Any,
    voxel_size_um: float,
    plating_side: str,
    protocol: CycleProtocol,
    hand_labels: HandLabelSettings,
) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ConfigError(f"shape is {list(shape)}; expected [depth, rows, cols], each >= 8 voxels")
    if voxel_size_um <= 0:
        raise ConfigError(f"voxel_size_um is {voxel_size_um}; expected a size > 0 µm")
    if plating_side not in ("start", "end"):
        raise ConfigError(f"plating_side is {plating_side!r}; expected 'start' or 'end'")
    if protocol.n_charge < 1 or protocol.n_discharge < 0:
        raise ConfigError("protocol needs n_charge >= 1 and n_discharge >= 0 segments")
    if not 0 <= protocol.efficiency <= 1:
        raise ConfigError(f"protocol.efficiency is {protocol.efficiency}; expected 0 to 1")
    n_scans = protocol.n_charge + protocol.n_discharge + 1
    bad = [i for i in hand_labels.scans if not 0 <= i < n_scans]
    if bad:
        raise ConfigError(
            f"hand_labels.scans {bad} are outside the {n_scans} scans (0-{n_scans - 1})"
        )
    return shape  # type: ignore[return-value]


def _check_out_folder(out: Path) -> None:
    """A ConfigError when `out`, or the closest of its parents that exists, is not a folder."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(
                    f"out={out}: {path} is a file, not a folder; choose a folder for the series "
                    "(it is created if missing)"
                )
            return


def _scan_table(protocol: CycleProtocol) -> list[dict[str, Any]]:
    current_mA = protocol.current_density_mA_cm2 * protocol.active_area_cm2
    scans = [{"id": "scan_00", "minutes": 0.0, "phase": "pristine", "current_mA": 0.0}]
    for k in range(1, protocol.n_charge + protocol.n_discharge + 1):
        phase = "charge" if k <= protocol.n_charge else "discharge"
        scans.append(
            {
                "id": f"scan_{k:02d}",
                "minutes": k * protocol.segment_min,
                "phase": phase,
                "current_mA": current_mA,
            }
        )
    return scans


def _write_scan(
    out: Path,
    index: int,
    scan_id: str,
    cell: SyntheticCell,
    counts: StepCounts,
    voxel_size_um: float,
    seed: int,
    plating_side: str,
    ct: CTSettings,
    hand_labels: HandLabelSettings | None,
    export_tiffs: bool,
    misalign: MisalignSettings | None = None,
    n_scans: int = 1,
) -> dict[str, Any]:
    """Compose, image and label one scan; write its volumes atomically; return its record."""
    labels, material = cell.compose(counts)
    li_fraction = cell.li_fraction(material, counts)
    measures = scan_measures(labels, voxel_size_um, plating_at_end=True)
    if misalign is not None and misalign.inclusions_per_pixel:
        # Static inclusions (same for every scan): dense grains in the top pouch and the
        # stripping electrode, kept whatever the Li around them does; the labels stay as they are.
        lay = cell.layout
        depth_range = (float(lay.top_pouch[0]), float(lay.strip_iface.min()) - 1.0)
        grains = inclusion_mask(
            misalign, labels.shape, depth_range, np.random.default_rng([seed, 3])
        )
        material[grains] = Material.POUCH
    if plating_side == "start":
        labels, material = labels[::-1].copy(), material[::-1].copy()
        li_fraction = li_fraction[::-1].copy()
    moved: dict[str, Any] | None = None
    move = None
    if misalign is not None:
        matrix, offset, moved = scan_map(
            misalign, labels.shape, index, n_scans, np.random.default_rng([seed, index, 2])
        )
        labels = misalign_volume(labels, matrix, offset)

        def move(mu: np.ndarray) -> np.ndarray:
            return misalign_volume(mu, matrix, offset, order=1)

    image = simulate_scan(
        material,
        voxel_size_um,
        ct,
        np.random.default_rng([seed, index, 0]),
        move=move,
        li_fraction=li_fraction,
    )
    volumes = {"images": image, "labels_gt": labels}
    record: dict[str, Any] = {
        "voxels": {
            name: int(n)
            for name, n in zip(
                ANALYSIS_CLASSES.values(),
                np.bincount(labels.ravel(), minlength=len(ANALYSIS_CLASSES)),
                strict=False,
            )
        },
        "measures": measures,
    }
    if hand_labels is not None:
        rng = np.random.default_rng([seed, index, 1])
        slices = choose_slices(labels, hand_labels, rng, COMMON_CLASSES)
        volumes["labels"] = paint_volume(labels, slices, hand_labels, rng, COMMON_CLASSES)
        record["labelled_slices"] = slices
    if moved is not None:
        record["misalignment"] = moved
    for folder, volume in volumes.items():
        write_zarr(out / folder / f"{scan_id}.zarr", volume, overwrite=True)
        if export_tiffs:
            name = {"images": "image"}.get(folder, folder)
            export_tiff(volume, out / "tiff" / f"{scan_id}_{name}.tif", voxel_size_um=voxel_size_um)
    return record


def _truth(
    fingerprint: str,
    settings: dict[str, Any],
    protocol: CycleProtocol,
    segment: Any,
    moved_um3_per_segment: float,
    roi_area_um2: float,
    scans: list[dict[str, Any]],
    records: list[dict[str, Any]],
    steps: list[StepCounts],
    cell: SyntheticCell,
    voxel_size_um: float,
) -> dict[str, Any]:
    voxel_um3 = voxel_size_um**3
    geometry = cell.geometry
    entries = []
    for scan, record, counts in zip(scans, records, steps, strict=True):
        voxels = record["voxels"]
        li_voxels = {
            "dendrite": voxels["dendrite"] * geometry.dendrite_solid_fraction,
            "deposited_li": voxels["deposited_li"] * counts.deposited_solid_fraction,
            "redeposited_li": counts.pit_filled * geometry.pit_fill_solid_fraction
            + counts.porous_layer * geometry.redeposited_solid_fraction,
            "plating_electrode": voxels["plating_electrode"],
            "stripping_electrode": voxels["stripping_electrode"],
        }
        entries.append(
            {
                **scan,
                "voxels": voxels,
                "volume_um3": {k: v * voxel_um3 for k, v in voxels.items()},
                "li_volume_um3": {k: v * voxel_um3 for k, v in li_voxels.items()},
                "swelling_um": counts.swelling_vox * voxel_size_um,
                "process_voxels": asdict(counts),
                "measures": record["measures"],
            }
        )
    return {
        "generator": f"batteryct.synth {__version__}",
        "fingerprint": fingerprint,
        "settings": settings,
        "classes": {str(k): v for k, v in ANALYSIS_CLASSES.items()},
        "units": {"volume": "µm³", "length": "µm", "time": "min", "current": "mA"},
        "voxel_size_um": voxel_size_um,
        "voxel_volume_um3": voxel_um3,
        "roi_area_um2": roi_area_um2,
        "efficiency": protocol.efficiency,
        "faraday_segment_active_area": asdict(segment),
        "moved_li_per_segment_roi_um3": moved_um3_per_segment,
        "moved_li_per_segment_roi_voxels": moved_um3_per_segment / voxel_um3,
        "dendrites_dead": int(cell.dendrite_dead.sum()),
        "dendrites_total": int(cell.dendrite_dead.size),
        "calibration": calibration_table([r["measures"] for r in records], half=protocol.n_charge),
        "scans": entries,
    }


def _series(
    out: Path,
    scans: list[dict[str, Any]],
    records: list[dict[str, Any]],
    protocol: CycleProtocol,
    voxel_size_um: float,
    plating_side: str,
    settings: dict[str, Any],
) -> Series:
    entries = []
    for scan, record in zip(scans, records, strict=True):
        sid = scan["id"]
        has_labels = "labelled_slices" in record
        entries.append(
            Scan(
                id=sid,
                image=(out / "images" / f"{sid}.zarr").resolve(),
                minutes=scan["minutes"],
                phase=scan["phase"],
                current_mA=scan["current_mA"],
                labels=(out / "labels" / f"{sid}.zarr").resolve() if has_labels else None,
                labels_gt=(out / "labels_gt" / f"{sid}.zarr").resolve(),
                labelled_slices=(
                    {k: tuple(v) for k, v in record["labelled_slices"].items()}
                    if has_labels
                    else None
                ),
            )
        )
    cell = Cell(
        voxel_size_um=voxel_size_um,
        active_area_cm2=protocol.active_area_cm2,
        current_density_mA_cm2=protocol.current_density_mA_cm2,
        plating_side=plating_side,
        segment_min=protocol.segment_min,
    )
    return Series(
        cell=cell,
        classes=dict(ANALYSIS_CLASSES),
        scans=entries,
        hand_label_values={label_value(k): v for k, v in ANALYSIS_CLASSES.items()},
        name="synthetic-cell",
        metadata={"generator": f"batteryct.synth {__version__}", "synth": settings},
    )
