"""Segmentation quality against full ground truth, and what it does to the paper's quantities.

A synthetic series (or any series with `labels_gt` on every scan) is the truth; a predictions
manifest written by `predict.py` holds the segmentations. Only scans that were never used for
training are scored: those without hand labels (`labels`) in the truth manifest. Everything is
counted per class over all held-out voxels pooled, in the 7-class analysis scheme and in the
network's 5 classes (the analysis classes merged back, as in the paper's table).

The analysis (`batteryct.analysis`) is run on the predictions and on the truth, and the paper's
key quantities of both are compared as relative errors.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from skimage.filters import threshold_multiotsu

from batteryct.analysis import AnalysisResult, AnalysisSettings, AnalysisWarning, analyze_series
from batteryct.classes import ANALYSIS_CLASSES, ANALYSIS_TO_NETWORK, NETWORK_CLASSES
from batteryct.errors import ConfigError
from batteryct.outfolder import write_json_atomic
from batteryct.series import Scan, Series, load_series

PAPER_IOU_PERCENT: dict[str, float] = {
    "dendrite": 69.4,
    "pit": 86.5,
    "deposited_li": 78.8,
    "electrode": 97.0,
    "total": 95.5,
}
"""The paper's test IoU per network class and its total IoU (Supp. Table 1)."""

TO_NETWORK = np.array(
    [
        list(NETWORK_CLASSES.values()).index(ANALYSIS_TO_NETWORK[ANALYSIS_CLASSES[cid]])
        for cid in sorted(ANALYSIS_CLASSES)
    ],
    np.int64,
)
"""Network class id of each analysis class id."""


@dataclass
class ClassScores:
    """IoU per class (fraction, NaN where a class is absent from truth and prediction), the
    mean over foreground classes, the paper's total IoU and accuracy, from a confusion matrix."""

    names: list[str]
    iou: np.ndarray
    foreground_mean: float
    total_iou: float
    accuracy: float
    confusion: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {
            "iou": {n: json_number(v) for n, v in zip(self.names, self.iou, strict=True)},
            "foreground_mean": json_number(self.foreground_mean),
            "total_iou": json_number(self.total_iou),
            "accuracy": json_number(self.accuracy),
            "confusion": self.confusion.tolist(),
            "confusion_axes": "rows: truth, columns: prediction, in voxels",
        }


def scores(confusion: np.ndarray, names: Sequence[str]) -> ClassScores:
    """Per-class IoU and the pooled scores of a (truth × prediction) confusion matrix; class 0
    is the background. Total IoU is the paper's: Σ foreground TP / (all − background TN)."""
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = confusion.sum()
    background_tn = confusion[0, 0]
    foreground = iou[1:]
    return ClassScores(
        names=list(names),
        iou=iou,
        foreground_mean=float(np.nanmean(foreground))
        if np.any(~np.isnan(foreground))
        else math.nan,
        total_iou=float(tp[1:].sum() / (total - background_tn))
        if total > background_tn
        else math.nan,
        accuracy=float(tp.sum() / total) if total else math.nan,
        confusion=confusion,
    )


def to_network(confusion7: np.ndarray) -> np.ndarray:
    """Merge a 7-class (analysis) confusion matrix into the network's 5 classes."""
    n = len(NETWORK_CLASSES)
    out = np.zeros((n, n), np.int64)
    np.add.at(out, (TO_NETWORK[:, None], TO_NETWORK[None, :]), confusion7)
    return out


def held_out_scans(truth: Series) -> list[Scan]:
    """Scans with full labels that were never hand-labelled, hence never used for training."""
    scans = [s for s in truth.scans if s.labels is None and s.labels_gt is not None]
    if not scans:
        raise ConfigError(
            f"{truth.path}: no scan has full labels (labels_gt) without hand labels; the quality "
            "check needs scans that training never saw"
        )
    return scans


def confusion_7(predictions: Series, truth: Series, scans: Sequence[Scan]) -> np.ndarray:
    """7-class confusion (truth rows, prediction columns) over `scans`, read slab by slab."""
    n = len(ANALYSIS_CLASSES)
    confusion = np.zeros((n, n), np.int64)
    for scan in scans:
        predicted = predictions.open_labels_gt(_matching(predictions, scan))
        true = truth.open_labels_gt(scan)
        if predicted.shape != true.shape:
            raise ConfigError(
                f"scan {scan.id!r}: prediction {predicted.path} has shape {predicted.shape} but "
                f"the truth {true.path} has {true.shape}"
            )
        for start in range(0, true.shape[0], 32):
            t = true[start : start + 32].astype(np.int64)
            p = predicted[start : start + 32].astype(np.int64)
            confusion += np.bincount((t * n + p).ravel(), minlength=n * n).reshape(n, n)
    return confusion


def _matching(predictions: Series, scan: Scan) -> Scan:
    try:
        return predictions.scan(scan.id)
    except Exception as err:
        raise ConfigError(
            f"{predictions.path} has no prediction of scan {scan.id!r}; segment every scan "
            "(predict.py without settings.scans)"
        ) from err


def otsu_best_mapping(
    truth: Series, scans: Sequence[Scan], n_bins: Sequence[int] = (3, 4, 5)
) -> dict[str, dict[str, float]]:
    """The thresholding baseline: multi-Otsu thresholds of each scan's grey values, and for
    every class the best IoU that any set of grey-value bins gives it (the most generous
    mapping of bins to classes), over every bin count tried. Returns {"analysis": {class:
    IoU}, "network": {class: IoU}}."""
    best7 = np.zeros(len(ANALYSIS_CLASSES))
    best5 = np.zeros(len(NETWORK_CLASSES))
    for k in n_bins:
        counts = np.zeros((k, len(ANALYSIS_CLASSES)), np.int64)
        for scan in scans:
            image = truth.open_image(scan).read()
            labels = truth.open_labels_gt(scan).read().astype(np.int64)
            bins = np.digitize(image, threshold_multiotsu(image, classes=k)).astype(np.int64)
            size = len(ANALYSIS_CLASSES)
            counts += np.bincount((bins * size + labels).ravel(), minlength=k * size).reshape(
                k, size
            )
        merged = np.zeros((k, len(NETWORK_CLASSES)), np.int64)
        np.add.at(merged, (slice(None), TO_NETWORK), counts)
        best7 = np.maximum(best7, _best_subset_iou(counts))
        best5 = np.maximum(best5, _best_subset_iou(merged))
    return {
        "analysis": dict(zip(ANALYSIS_CLASSES.values(), best7.tolist(), strict=True)),
        "network": dict(zip(NETWORK_CLASSES.values(), best5.tolist(), strict=True)),
    }


def _best_subset_iou(counts: np.ndarray) -> np.ndarray:
    """For each class (column), the best IoU over every non-empty set of bins (rows)."""
    k = counts.shape[0]
    per_bin = counts.sum(axis=1)
    best = np.zeros(counts.shape[1])
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            rows = list(subset)
            tp = counts[rows].sum(axis=0)
            predicted = per_bin[rows].sum()
            union = predicted + counts.sum(axis=0) - tp
            with np.errstate(invalid="ignore", divide="ignore"):
                best = np.maximum(best, np.where(union > 0, tp / union, 0.0))
    return best


KEY_QUANTITIES: dict[str, tuple[str, Callable[[AnalysisResult], float]]] = {}
"""name -> (unit, how to read it off an analysis result); filled below."""


def _volume(name: str, which: str) -> Callable[[AnalysisResult], float]:
    def read(result: AnalysisResult) -> float:
        scan = result.half_id if which == "half" else result.full_id
        index = [s.id for s in result.scans].index(scan)
        return float(result.volume_um3(name)[index])

    return read


for _name in ("dendrite", "pit", "deposited_li", "redeposited_li"):
    for _which in ("half", "full"):
        KEY_QUANTITIES[f"{_name} volume, {_which} cycle"] = ("µm³", _volume(_name, _which))
KEY_QUANTITIES.update(
    {
        "plating side, charge rate": (
            "µm/segment",
            lambda r: r.derived["rates"]["plating_side"]["charge_um_per_segment"],
        ),
        "stripping side, charge rate": (
            "µm/segment",
            lambda r: r.derived["rates"]["stripping_side"]["charge_um_per_segment"],
        ),
        "stripping side, discharge rate": (
            "µm/segment",
            lambda r: r.derived["rates"]["stripping_side"]["discharge_um_per_segment"],
        ),
        "dead Li volume": ("µm³", lambda r: r.derived["dead_li"]["volume_um3"]),
        "void area, full cycle": ("fraction", lambda r: r.derived["pits"]["void_area_fraction"]),
        "electrode gap change, charge": (
            "µm",
            lambda r: r.derived.get("gap", {}).get("charge_change_um", math.nan),
        ),
        "CT/Faraday ratio, cycle": (
            "1",
            lambda r: (r.derived.get("faraday") or {}).get("cycle_ratio", math.nan),
        ),
    }
)


def key_quantities(result: AnalysisResult) -> dict[str, float]:
    """The quantities that the quality check compares, read off an analysis result."""
    return {name: float(read(result)) for name, (_, read) in KEY_QUANTITIES.items()}


def relative_errors(predicted: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    """(predicted − truth) / |truth| for each quantity. A class volume whose truth is 0 (no
    deposited Li after the full cycle) is compared with the same class's volume at the other
    cycle point instead; other quantities with a truth of 0 or NaN give NaN."""
    out = {}
    for name, true in truth.items():
        value = predicted.get(name, math.nan)
        scale = abs(true)
        if not scale and " volume, " in name:
            other = name.replace("half", "full") if "half" in name else name.replace("full", "half")
            scale = abs(truth.get(other, 0.0))
        out[name] = (value - true) / scale if scale and not math.isnan(scale) else math.nan
    return out


@dataclass
class Evaluation:
    """Held-out scores and quantities of one set of predictions."""

    scans: list[str]
    analysis: ClassScores
    network: ClassScores
    quantities: dict[str, float]
    truth_quantities: dict[str, float]
    errors: dict[str, float]
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "held_out_scans": self.scans,
            "analysis_classes": self.analysis.as_dict(),
            "network_classes": self.network.as_dict(),
            "quantities": {k: json_number(v) for k, v in self.quantities.items()},
            "truth_quantities": {k: json_number(v) for k, v in self.truth_quantities.items()},
            "relative_errors": {k: json_number(v) for k, v in self.errors.items()},
            "analysis_warnings": self.warnings,
        }


def evaluate_predictions(
    predictions: Series | str,
    truth: Series | str,
    truth_result: AnalysisResult | None = None,
    console: Console | None = None,
) -> Evaluation:
    """Score `predictions` on the held-out scans of `truth` and compare their analyses."""
    quiet = Console(quiet=True)
    predictions = predictions if isinstance(predictions, Series) else load_series(predictions)
    truth = truth if isinstance(truth, Series) else load_series(truth)
    scans = held_out_scans(truth)
    confusion = confusion_7(predictions, truth, scans)
    names7 = list(ANALYSIS_CLASSES.values())
    names5 = list(NETWORK_CLASSES.values())
    settings = AnalysisSettings(meshes=None, figures=False, report=False)
    with warnings.catch_warnings():  # kept in the results and reported with them
        warnings.simplefilter("ignore", AnalysisWarning)
        predicted_result = analyze_series(predictions, None, settings, console=console or quiet)
        truth_result = truth_result or analyze_series(truth, None, settings, console=quiet)
    predicted = key_quantities(predicted_result)
    true = key_quantities(truth_result)
    return Evaluation(
        scans=[s.id for s in scans],
        analysis=scores(confusion, names7),
        network=scores(to_network(confusion), names5),
        quantities=predicted,
        truth_quantities=true,
        errors=relative_errors(predicted, true),
        warnings=list(predicted_result.warnings),
    )


def print_scores(
    console: Console,
    title: str,
    columns: dict[str, dict[str, float]],
    paper: dict[str, float] | None = None,
) -> None:
    """A table of IoU (%) per class: one column per model or baseline, the paper's last."""
    names = list(next(iter(columns.values())))
    table = Table(title=title)
    table.add_column("class")
    for column in columns:
        table.add_column(column, justify="right")
    if paper is not None:
        table.add_column("paper", justify="right")
    for name in names:
        row = [_percent(values.get(name)) for values in columns.values()]
        if paper is not None:
            row.append(_percent(paper.get(name), already_percent=True))
        table.add_row(name, *row)
    console.print(table)


def print_quantities(console: Console, evaluation: Evaluation) -> None:
    """Key quantities from the predictions next to the truth, with the relative error."""
    table = Table(title="Analysis from the predictions vs the truth")
    for column in ("quantity", "unit", "predicted", "truth", "error"):
        table.add_column(column, justify="left" if column in ("quantity", "unit") else "right")
    for name, (unit, _) in KEY_QUANTITIES.items():
        error = evaluation.errors[name]
        table.add_row(
            name,
            unit,
            f"{evaluation.quantities[name]:.4g}",
            f"{evaluation.truth_quantities[name]:.4g}",
            "-" if math.isnan(error) else f"{error:+.1%}",
        )
    console.print(table)


def score_columns(evaluation: Evaluation) -> tuple[dict[str, float], dict[str, float]]:
    """(network-class IoU with "total" and "mean fg", analysis-class IoU with "mean fg")."""
    network = dict(zip(evaluation.network.names, evaluation.network.iou.tolist(), strict=True))
    network["total"] = evaluation.network.total_iou
    network["mean fg"] = evaluation.network.foreground_mean
    analysis = dict(zip(evaluation.analysis.names, evaluation.analysis.iou.tolist(), strict=True))
    analysis["mean fg"] = evaluation.analysis.foreground_mean
    return network, analysis


def _percent(value: float | None, already_percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value if already_percent else 100 * value:.1f}"


def json_number(value: Any) -> float | None:
    """A float for JSON; None for NaN or infinity (a class absent from truth and prediction)."""
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def evaluate_and_report(
    predictions: str, truth: str, out: str | None = None, console: Console | None = None
) -> Evaluation:
    """What `evaluate.py` does: score, print the tables, and write `evaluation.json` and the
    printed tables as `evaluation.txt` (into the folder `out`, default: the predictions')."""
    shown = console or Console()
    record = Console(record=True, width=max(shown.width, 100), file=shown.file)
    evaluation = evaluate_predictions(predictions, truth)
    network, analysis = score_columns(evaluation)
    record.print(f"held-out scans (never hand-labelled): {', '.join(evaluation.scans)}")
    print_scores(
        record, "IoU (%) per network class, held-out scans", {"model": network}, PAPER_IOU_PERCENT
    )
    print_scores(record, "IoU (%) per analysis class, held-out scans", {"model": analysis})
    print_quantities(record, evaluation)
    for warning in evaluation.warnings:
        record.print(f"[yellow]analysis warning:[/] {warning}")
    folder = Path(out) if out else Path(predictions).parent
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "evaluation.json", evaluation.as_dict())
    text = folder / "evaluation.txt"
    partial = text.with_name(f".{text.name}.partial")
    partial.write_text(record.export_text())
    partial.replace(text)
    shown.print(f"wrote {folder / 'evaluation.json'} and {text.name}")
    return evaluation
