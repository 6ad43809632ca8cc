"""Which slices to correct next, and a simulated annotator that paints them from the truth."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batteryct.classes import UNLABELLED
from batteryct.data.slices import AXES, SliceRef
from batteryct.errors import ConfigError
from batteryct.iterate.labels import class_to_hand_value
from batteryct.series import Series
from batteryct.synth.hand_labels import HandLabelSettings, paint_slice

COMMON_CLASS_NAMES = ("background", "plating_electrode", "stripping_electrode", "electrode")
"""Large phases: painted roughly, away from their edges."""
SELECTIONS = ("entropy", "random")


@dataclass(frozen=True)
class CorrectionSettings:
    """One round of corrections: how many slices, along which axes, and the pixel budget."""

    scans: tuple[str, ...] | None = None
    """Scans whose slices may be chosen; None: the scans that already have hand labels."""
    axes: tuple[str, ...] = ("rows", "cols")
    slices: int = 8
    min_spacing: int = 4
    """Chosen slices of one scan and axis lie at least this many slices apart."""
    budget_px: int = 20000
    """Labelled pixels the simulated annotator may paint in the round (all slices)."""
    selection: str = "entropy"
    """entropy: the most uncertain slices first; random: slices drawn at random (a baseline)."""
    coverage: float = 0.45
    brush_radius_px: tuple[int, int] = (2, 7)
    rare_stroke_share: float = 0.6
    edge_margin_px: int = 1

    def check(self) -> None:
        """A ConfigError naming the first setting that cannot work."""
        bad_axes = [a for a in self.axes if a not in AXES]
        if bad_axes or not self.axes:
            raise ConfigError(
                f"corrections.axes is {list(self.axes)}; expected a non-empty list of {list(AXES)}"
            )
        if self.slices < 1:
            raise ConfigError(f"corrections.slices is {self.slices}; expected at least 1")
        if self.budget_px < 1:
            raise ConfigError(f"corrections.budget_px is {self.budget_px}; expected at least 1")
        if self.selection not in SELECTIONS:
            raise ConfigError(
                f"corrections.selection is {self.selection!r}; expected one of {list(SELECTIONS)}"
            )
        if self.min_spacing < 1:
            raise ConfigError(f"corrections.min_spacing is {self.min_spacing}; expected >= 1")


def candidate_scans(series: Series, settings: CorrectionSettings) -> list[str]:
    """Ids of the scans whose slices may be corrected."""
    if settings.scans is None:
        ids = [s.id for s in series.scans if s.labels is not None]
        if not ids:
            raise ConfigError(
                f"{series.path}: no scan has hand labels; list the scans to label in "
                "corrections.scans"
            )
        return ids
    known = [s.id for s in series.scans]
    unknown = [s for s in settings.scans if s not in known]
    if unknown:
        raise ConfigError(f"corrections.scans: {unknown} are not scans of {series.path}: {known}")
    return list(settings.scans)


def read_rankings(folder: Path, scans: list[str]) -> list[tuple[float, SliceRef]]:
    """(mean entropy, slice) of every slice of `scans` from predict.py's uncertainty CSVs."""
    ranked = []
    for scan_id in scans:
        path = folder / f"{scan_id}_slices.csv"
        if not path.is_file():
            raise ConfigError(f"{path} is missing: the prediction step did not rank {scan_id}")
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                ref = SliceRef(row["scan"], row["axis"], int(row["index"]))
                ranked.append((float(row["mean_entropy"]), ref))
    return ranked


def choose_slices(
    ranked: list[tuple[float, SliceRef]],
    labelled: set[SliceRef],
    settings: CorrectionSettings,
    rng: np.random.Generator,
) -> list[SliceRef]:
    """The slices to correct: by decreasing entropy (or at random), along `settings.axes`,
    never one already labelled, and apart by `settings.min_spacing` within a scan and axis."""
    pool = [(value, ref) for value, ref in ranked if ref.axis in settings.axes]
    if settings.selection == "random":
        order = rng.permutation(len(pool))
        pool = [pool[i] for i in order]
    else:
        pool.sort(key=lambda item: (-item[0], item[1]))
    taken: list[SliceRef] = []
    for _, ref in pool:
        if len(taken) == settings.slices:
            break
        near = any(
            t.scan_id == ref.scan_id
            and t.axis == ref.axis
            and abs(t.index - ref.index) < settings.min_spacing
            for t in [*taken, *labelled]
        )
        if ref not in labelled and not near:
            taken.append(ref)
    return sorted(taken)


def simulate_corrections(
    series: Series,
    slices: list[SliceRef],
    settings: CorrectionSettings,
    rng: np.random.Generator,
) -> dict[SliceRef, np.ndarray]:
    """Raw hand-label values painted on `slices` from the series' full labels (`labels_gt`),
    with brush strokes and edge margins, at most `settings.budget_px` pixels in all."""
    missing = [r.scan_id for r in slices if series.scan(r.scan_id).labels_gt is None]
    if missing:
        raise ConfigError(
            f"annotator=simulated paints from full labels, but scans {sorted(set(missing))} of "
            f"{series.path} have no labels_gt; use annotator=manual for real data"
        )
    to_hand = class_to_hand_value(series)
    common = tuple(cid for cid, name in series.classes.items() if name in COMMON_CLASS_NAMES)
    paint = HandLabelSettings(
        coverage=settings.coverage,
        brush_radius_px=tuple(settings.brush_radius_px),  # type: ignore[arg-type]
        rare_stroke_share=settings.rare_stroke_share,
        edge_margin_px=settings.edge_margin_px,
    )
    painted: dict[SliceRef, np.ndarray] = {}
    left = settings.budget_px
    for k, ref in enumerate(slices):
        truth = np.asarray(series.open_labels_gt(series.scan(ref.scan_id))[ref.key()])
        share = left // (len(slices) - k)
        values = paint_slice(truth, paint, rng, common, max_pixels=share)
        raw = np.where(values != UNLABELLED, to_hand[np.maximum(values, 1) - 1], UNLABELLED)
        painted[ref] = raw.astype(np.uint8)
        left -= int(np.count_nonzero(raw))
    return painted
