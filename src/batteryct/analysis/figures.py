"""The paper's figures for one analysis, as PNG files (axes in µm and minutes, scale bars)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from batteryct.classes import CLASS_COLORS

LI_CLASSES = ("dendrite", "pit", "deposited_li", "redeposited_li")
LABELS = {
    "dendrite": "dendrites",
    "pit": "pits",
    "deposited_li": "deposited Li",
    "redeposited_li": "redeposited Li",
    "plating_electrode": "plating electrode",
    "stripping_electrode": "stripping electrode",
    "plating_li": "deposited Li + dendrites",
}


def _color(name: str) -> str:
    c = CLASS_COLORS.get(name, "#555555")
    return c[:7]


def _half_line(ax, result) -> None:
    half = result.scans[[s.id for s in result.scans].index(result.half_id)].minutes
    ax.axvline(half, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("time of applied current (min)")


def _scale_bar(ax, result) -> None:
    width_um = result.shape[2] * result.voxel_um
    target = width_um / 4
    nice = 10 ** math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * nice <= target:
            length = m * nice
            break
    bar = AnchoredSizeBar(
        ax.transData,
        length,
        f"{length:g} µm",
        "lower right",
        pad=0.3,
        color="white",
        frameon=False,
        size_vertical=width_um / 150,
    )
    ax.add_artist(bar)


def _map(ax, image, result, title, cmap="magma", vmax=None, label="µm"):
    extent = (0, result.shape[2] * result.voxel_um, result.shape[1] * result.voxel_um, 0)
    im = ax.imshow(image, cmap=cmap, extent=extent, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    _scale_bar(ax, result)
    return im


def make_figures(result, folder: Path, dpi: int = 130) -> dict[str, Path]:
    """Draw every figure into `folder`; returns name -> PNG path."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    t = result.minutes
    name = result.series.name

    def save(fig, key: str) -> None:
        path = folder / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        made[key] = path

    # Volumes of the Li phases over time.
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in LI_CLASSES:
        ax.plot(t, result.volume_um3(c), "o-", ms=3, color=_color(c), label=LABELS[c])
    _half_line(ax, result)
    ax.set_ylabel("volume (µm³)")
    ax.set_title(f"{name}: volumes of the Li phases")
    ax.legend(fontsize=8)
    save(fig, "volumes")

    # Side thicknesses with the Faraday line.
    faraday = result.derived.get("faraday")
    fig, ax = plt.subplots(figsize=(6, 4))
    for side, classes in (
        ("plating_side", ("plating_electrode", "deposited_li")),
        ("stripping_side", ("stripping_electrode", "redeposited_li")),
    ):
        th = result.thickness_um(*classes)
        color = _color(classes[0])
        ax.plot(t, th, "o-", ms=3, color=color, label=f"{side.replace('_', ' ')} (CT)")
        if faraday:
            seg = faraday["segment"]["thickness_um"] / faraday["segment"]["duration_min"]
            sign = 1 if side == "plating_side" else -1
            half_t = t[[s.id for s in result.scans].index(result.half_id)]
            expected = th[0] + sign * seg * np.where(t <= half_t, t, 2 * half_t - t)
            ax.plot(
                t,
                expected,
                "--",
                color=color,
                lw=1,
                label=f"{side.replace('_', ' ')}, Faraday (100 %)",
            )
    _half_line(ax, result)
    ax.set_ylabel("effective thickness (µm)")
    ax.set_title("electrode + Li layer thickness per side")
    ax.legend(fontsize=7)
    save(fig, "side_thickness")

    # Electrode-only thickness.
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in ("plating_electrode", "stripping_electrode"):
        ax.plot(t, result.thickness_um(c), "o-", ms=3, color=_color(c), label=LABELS[c])
    _half_line(ax, result)
    ax.set_ylabel("effective thickness (µm)")
    ax.set_title("electrode-only thickness")
    ax.legend(fontsize=8)
    save(fig, "electrode_thickness")

    if faraday:
        rows = faraday["per_segment"]
        tm = np.array([r["minutes"] for r in rows])
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.bar(
            tm,
            [r["ct_thickness_um"] for r in rows],
            width=6,
            color="#3cb44b",
            label="CT, per segment",
        )
        a1.plot(tm, [r["faraday_thickness_um"] for r in rows], "k--", label="Faraday, per segment")
        a1.set_ylabel("traveling Li thickness (µm)")
        a1.set_xlabel("time of applied current (min)")
        a1.legend(fontsize=8)
        a2.plot(tm, [r["cumulative_ct_thickness_um"] for r in rows], "o-", ms=3, label="CT")
        a2.plot(tm, [r["cumulative_faraday_thickness_um"] for r in rows], "k--", label="Faraday")
        a2.set_ylabel("cumulative traveling Li (µm)")
        a2.set_xlabel("time of applied current (min)")
        a2.legend(fontsize=8)
        fig.suptitle("traveling Li: CT vs Faraday's law (area-normalised)")
        save(fig, "traveling_li")

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(tm, [r["ratio"] for r in rows], "o", ms=3, label="per segment")
        ax.plot(tm, [r["cumulative_ratio"] for r in rows], "-", label="cumulative")
        ax.axhline(1, color="k", lw=0.8, ls="--")
        _half_line(ax, result)
        ax.set_ylabel("CT / electrochemical capacity")
        ax.set_title(f"cycle ratio {faraday['cycle_ratio']:.2f}")
        ax.legend(fontsize=8)
        save(fig, "capacity_ratio")

    # Occupation maps over time.
    ids = sorted(result.maps, key=[s.id for s in result.scans].index)
    classes = ("dendrite", "deposited_li", "redeposited_li", "pit")
    fig, axes = plt.subplots(
        len(classes), len(ids), figsize=(2.2 * len(ids) + 1, 2.2 * 4), squeeze=False
    )
    minutes = {s.id: s.minutes for s in result.scans}
    for i, c in enumerate(classes):
        vmax = max(float(result.maps[s][c].max()) for s in ids) * result.voxel_um or 1
        for j, sid in enumerate(ids):
            im = _map(
                axes[i, j],
                result.maps[sid][c] * result.voxel_um,
                result,
                f"{LABELS[c]}, {minutes[sid]:g} min",
                vmax=vmax,
            )
        fig.colorbar(im, ax=axes[i, :].tolist(), label="local thickness (µm)", shrink=0.8)
    save_plain = folder / "occupation_maps.png"
    fig.savefig(save_plain, dpi=dpi)
    plt.close(fig)
    made["occupation_maps"] = save_plain

    # Occupation fractions over time.
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in LI_CLASSES:
        ax.plot(
            t,
            [100 * s.occupation[c] for s in result.scans],
            "o-",
            ms=3,
            color=_color(c),
            label=LABELS[c],
        )
    _half_line(ax, result)
    ax.set_ylabel("area occupation (% of ROI)")
    ax.legend(fontsize=8)
    save(fig, "occupation")

    # Unfilled pits and voids.
    maps = result.derived["maps"]
    half, full = result.maps[result.half_id], result.maps[result.full_id]
    v = result.voxel_um
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    vmax = float(half["pit"].max() * v) or 1
    _map(axes[0], half["pit"] * v, result, f"pits at half cycle ({result.half_id})", vmax=vmax)
    _map(
        axes[1],
        full["redeposited_li"] * v,
        result,
        f"redeposited Li ({result.full_id})",
        cmap="viridis",
    )
    im = _map(axes[2], maps["unfilled_pit_um"], result, "unfilled pits", vmax=vmax)
    fig.colorbar(im, ax=axes.tolist(), label="depth (µm)", shrink=0.8)
    fig.savefig(folder / "unfilled_pits.png", dpi=dpi)
    plt.close(fig)
    made["unfilled_pits"] = folder / "unfilled_pits.png"

    pits = result.derived["pits"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = _map(
        ax,
        full["pit"] * v,
        result,
        f"void depth after the full cycle: void {100 * pits['void_area_fraction']:.1f} %, "
        f"contact {100 * pits['contact_area_fraction']:.1f} %",
        cmap="cividis",
    )
    fig.colorbar(im, ax=ax, label="void depth (µm)")
    save(fig, "void_depth")

    # Traveling-Li maps.
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    tr = result.derived["traveling"]
    _map(axes[0], maps["li_loss_um"], result, "deposited Li + dendrites decreased", cmap="Reds")
    _map(axes[1], maps["li_gain_um"], result, "redeposited Li increased", cmap="Blues")
    fig.suptitle(f"Li traveling between half and full cycle (Pearson r = {tr['pearson_r']:.2f})")
    save(fig, "traveling_maps")

    # Electrode edges and gap.
    if result.edge_maps:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for c in ("plating_electrode", "stripping_electrode"):
            a1.plot(
                t,
                [s.edges_um[f"{c}_edge_um"] for s in result.scans],
                "o-",
                ms=3,
                color=_color(c),
                label=LABELS[c],
            )
        a1.set_ylabel("mean surface position along depth (µm)")
        a1.legend(fontsize=8)
        _half_line(a1, result)
        a2.plot(t, [s.edges_um["gap_um"] for s in result.scans], "o-", ms=3, color="k")
        a2.set_ylabel("inter-electrode gap (µm)")
        _half_line(a2, result)
        fig.suptitle("projected electrode edges")
        save(fig, "electrode_edges")

    # Pearson r over time.
    pairs = list(result.scans[0].coloc)
    if pairs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for pair in pairs:
            a, b = pair.split("~")
            ax.plot(
                t,
                [s.coloc[pair]["pearson_r"] for s in result.scans],
                "o-",
                ms=3,
                label=f"{LABELS.get(a, a)} vs {LABELS.get(b, b)}",
            )
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(-1, 1)
        _half_line(ax, result)
        ax.set_ylabel("Pearson's r of the projections")
        ax.legend(fontsize=8)
        save(fig, "pearson")

    # Depth profiles at half and full cycle.
    fig, ax = plt.subplots(figsize=(6, 4))
    names = {name: cid for cid, name in result.series.classes.items()}
    depth_um = (np.arange(result.shape[0]) + 0.5) * v
    plane = result.shape[1] * result.shape[2]
    for sid, style in ((result.half_id, "-"), (result.full_id, "--")):
        s = result.scans[[x.id for x in result.scans].index(sid)]
        for c in LI_CLASSES:
            ax.plot(
                depth_um,
                s.profiles[:, names[c]] / plane,
                style,
                color=_color(c),
                label=f"{LABELS[c]} ({sid})",
            )
    ax.set_xlabel("depth (µm)")
    ax.set_ylabel("area fraction per slice")
    ax.legend(fontsize=6, ncol=2)
    save(fig, "profiles")
    return made
