"""The paper's iterative training as one resumable loop of steps (what `iterate.py` calls).

start (copy of the hand labels) → iter1 (in-plane, 3 classes) → predict1 (entropy per slice)
→ corrections (simulated from the truth, or exported for a person and imported back) → iter2
binary models (deposited Li, redeposited Li, electrode) → combine (their sure voxels, pits from
iter1, the hand labels on top) → iter3 (multi-class on cross-sections) → iter4 (refined on the
final hand labels, split 72/13/15, test IoU) → evaluate (held-out IoU against full labels).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from batteryct.classes import UNLABELLED
from batteryct.data.slices import SliceRef
from batteryct.errors import ConfigError
from batteryct.evaluation import PAPER_IOU_PERCENT
from batteryct.io import Volume
from batteryct.io.writers import create_zarr
from batteryct.iterate.annotator import (
    CorrectionSettings,
    candidate_scans,
    choose_slices,
    read_rankings,
    simulate_corrections,
)
from batteryct.iterate.labels import CHUNKS, copy_labels, hand_values, labelled_pixels
from batteryct.iterate.labels import write_slices as write_label_slices
from batteryct.iterate.manual import export_slices, import_slices
from batteryct.iterate.scoring import held_out_ids, model_iou
from batteryct.iterate.steps import Step, done_record, run_steps
from batteryct.outfolder import write_json_atomic
from batteryct.predict import (
    CombineSettings,
    InferenceSettings,
    Outputs,
    PostProcessSettings,
    PredictSettings,
    combine_series,
    predict_series,
    single_process_trainer,
)
from batteryct.series import Series, load_series, save_series, with_scans
from batteryct.training import train
from batteryct.training.run import ensure_default_series

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
BINARY_PHASES = ("deposited_li", "redeposited_li", "electrode")
ANNOTATORS = ("simulated", "manual")
LOOP_FILE = "loop.json"


def run_loop(cfg: DictConfig, console: Console | None = None) -> dict[str, Any] | None:
    """Run every step of the loop not done yet; the final scores, or None while a step waits
    for painted corrections."""
    console = console or Console()
    loop = _Loop(cfg, console)
    finished = run_steps(loop.out, loop.steps(), console)
    if not finished:
        return None
    return loop.report()


class _Loop:
    """The steps of one loop folder and the settings they share."""

    def __init__(self, cfg: DictConfig, console: Console) -> None:
        self.cfg = cfg
        self.console = console
        if cfg.annotator not in ANNOTATORS:
            raise ConfigError(f"annotator is {cfg.annotator!r}; expected one of {list(ANNOTATORS)}")
        self.corrections: CorrectionSettings = instantiate(cfg.corrections, _convert_="all")
        self.corrections.check()
        self.out = Path(cfg.out).resolve()
        series = Path(cfg.series)
        ensure_default_series(series, Path(cfg.paths.data_dir))
        self.source = load_series(series)
        if cfg.annotator == "simulated":
            scans = candidate_scans(self.source, self.corrections)
            missing = [s for s in scans if self.source.scan(s).labels_gt is None]
            if missing:
                raise ConfigError(
                    f"annotator=simulated paints from full labels, but scans {missing} of "
                    f"{self.source.path} have no labels_gt; use annotator=manual for real data"
                )
        self.group = self._claim()
        self.inference = InferenceSettings(batch_size=int(cfg.predict.batch_size))

    def _claim(self) -> str:
        """The loop's W&B group, recorded in `loop.json` with the series on first use; a folder
        holding another series' loop is refused."""
        record_path = self.out / LOOP_FILE
        series = str(self.source.path)
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            if record["series"] != series:
                raise ConfigError(
                    f"out={self.out} holds the loop of series {record['series']}, not {series}; "
                    "choose another out="
                )
            return str(record["group"])
        self.out.mkdir(parents=True, exist_ok=True)
        group = self.cfg.tracking.group or f"{self.out.name}-{datetime.now():%Y%m%d-%H%M%S}"
        write_json_atomic(record_path, {"series": series, "group": group})
        return group

    def steps(self) -> list[Step]:
        steps = [
            Step("start", self.start),
            Step("iter1", lambda f: self.train_step(f, "iter1_inplane", self.labels("start"))),
            Step("predict1", self.predict1),
            Step("corrections", self.correct),
        ]
        for phase in BINARY_PHASES:
            steps.append(
                Step(
                    f"iter2_{phase}",
                    lambda f, p=phase: self.train_step(
                        f, f"iter2/{p}", self.labels("corrections"), "iter2"
                    ),
                )
            )
        steps += [
            Step("combine", self.combine),
            Step(
                "iter3",
                lambda f: self.train_step(
                    f, "iter3_multiclass", self.combined(), spent=self.labels("corrections")
                ),
            ),
            Step(
                "iter4",
                lambda f: self.train_step(
                    f,
                    "iter4_refined",
                    self.labels("corrections"),
                    extra=[f"init_from={self.checkpoint('iter3')}"],
                ),
            ),
        ]
        if self.evaluating:
            models = ["iter4"]
            if self.cfg.evaluation.every_iteration:
                models = ["iter1", *(f"iter2_{p}" for p in BINARY_PHASES), "iter3", "iter4"]
            for name in models:
                steps.append(Step(f"eval_{name}", lambda f, m=name: self.evaluate(f, m)))
        return steps

    # -- the steps ---------------------------------------------------------------------------

    def start(self, folder: Path) -> dict[str, Any]:
        """Copy the input's hand labels into the loop's folder (the input stays untouched)."""
        manifest = copy_labels(self.source, folder)
        return {"series": str(manifest.path), "labelled_px": labelled_pixels(manifest)}

    def train_step(
        self,
        folder: Path,
        experiment: str,
        series: Path,
        epochs_key: str | None = None,
        extra: list[str] | None = None,
        spent: Path | None = None,
    ) -> dict[str, Any]:
        """Train `experiment` on `series` in `folder`, resuming from its last.ckpt; record the
        pixels a person painted for it (those of `spent`, default `series`)."""
        key = epochs_key or folder.name
        last = folder / "checkpoints" / "last.ckpt"
        overrides = [
            f"experiment={experiment}",
            f"series={series}",
            f"run_dir={folder}",
            f"paths.root_dir={self.cfg.paths.root_dir}",
            f"seed={self.cfg.seed}",
            f"trainer={self.cfg.training.trainer}",
            f"trainer.max_epochs={self.cfg.training.epochs[key]}",
            f"logger={self.cfg.tracking.logger}",
            f"run_name={folder.name}",
            *(extra or []),
        ]
        if "wandb" in str(self.cfg.tracking.logger):
            overrides.append(f"logger.wandb.group={self.group}")
        if _readable(last, self.console):
            overrides.append(f"ckpt_path={last}")
            self.console.print(f"  resuming from {last}")
        overrides += list(self.cfg.training.overrides)
        train(compose_train(overrides))
        record: dict[str, Any] = {"checkpoint": str(self.checkpoint(folder.name))}
        test = folder / "test_iou.json"
        if test.is_file():
            record["test_iou"] = json.loads(test.read_text())
        record["labelled_px"] = labelled_pixels(load_series(spent or series))
        return record

    def predict1(self, folder: Path) -> dict[str, Any]:
        """Segment the correctable scans with iteration 1: entropy rankings of their slices."""
        scans = candidate_scans(self.source, self.corrections)
        predict_series(
            self.checkpoint("iter1"),
            self.labels("start"),
            folder,
            self.inference,
            PredictSettings(scans=tuple(scans), outputs=Outputs(entropy=True)),
            PostProcessSettings(enabled=False),
            self.predict_trainer(),
            console=self.console,
        )
        return {"scans": scans}

    def correct(self, folder: Path) -> dict[str, Any] | None:
        """One round of corrections of the slices iteration 1 is least sure of."""
        series = load_series(self.labels("start"))
        if self.cfg.annotator == "manual":
            return self._manual(folder, series)
        slices = self._choose(series)
        rng = np.random.default_rng([int(self.cfg.seed), 1])
        painted = simulate_corrections(series, slices, self.corrections, rng)
        return self._write(folder, series, painted, "simulated")

    def _choose(self, series: Series) -> list[SliceRef]:
        scans = candidate_scans(series, self.corrections)
        ranked = read_rankings(self.out / "predict1" / "uncertainty", scans)
        labelled = {
            SliceRef(s.id, axis, index)
            for s in series.scans
            for axis, indices in (s.labelled_slices or {}).items()
            for index in indices
        }
        rng = np.random.default_rng([int(self.cfg.seed), 0])
        slices = choose_slices(ranked, labelled, self.corrections, rng)
        self.console.print(
            f"  {len(slices)} slices to correct ({self.corrections.selection}): "
            + ", ".join(r.name() for r in slices)
        )
        return slices

    def _manual(self, folder: Path, series: Series) -> dict[str, Any] | None:
        """Export the chosen slices for a person, or import what they painted."""
        if not (folder / "export" / "slices.json").is_file():
            export = export_slices(series, self._choose(series), self.out / "predict1", folder)
            self.console.print(
                f"[yellow]  waiting for corrections:[/] paint the *_labels.tif files in {export} "
                f"(Fiji, napari or Dragonfly; values and tools in {export / 'README.txt'}), save "
                f"them under the same names into {folder / 'painted'}, then run the same "
                "command again to continue."
            )
            return None
        painted = import_slices(series, folder)
        self.console.print(f"  imported {len(painted)} painted slices from {folder / 'painted'}")
        return self._write(folder, series, painted, "manual")

    def _write(
        self, folder: Path, series: Series, painted: dict[SliceRef, np.ndarray], how: str
    ) -> dict[str, Any]:
        note = {"step": folder.name, "annotator": how, "slices": [r.name() for r in painted]}
        manifest = write_label_slices(series, painted, folder, note)
        spent = sum(int(np.count_nonzero(v)) for v in painted.values())
        self.console.print(f"  painted {spent} pixels on {len(painted)} slices")
        return {
            "series": str(manifest.path),
            "slices": [r.name() for r in painted],
            "painted_px": spent,
            "labelled_px": labelled_pixels(manifest),
        }

    def combine(self, folder: Path) -> dict[str, Any]:
        """Iteration 2's sure voxels (pits from iteration 1), with the hand labels on top."""
        series = load_series(self.labels("corrections"))
        scans = candidate_scans(self.source, self.corrections)
        settings = CombineSettings(
            checkpoints=tuple(str(self.checkpoint(f"iter2_{p}")) for p in BINARY_PHASES),
            multiclass=str(self.checkpoint("iter1")),
            threshold=float(self.cfg.combine.threshold),
            label_slice_step=int(self.cfg.combine.label_slice_step),
            scans=tuple(scans),
        )
        combined = combine_series(
            settings,
            series.path,
            folder / "combined",
            self.inference,
            self.predict_trainer(),
            self.console,
        )
        assert combined is not None
        merged = merge_hand_labels(combined, series, folder)
        return {"series": str(merged.path)}

    def evaluate(self, folder: Path, model: str) -> dict[str, Any]:
        """Held-out IoU of `model` per class against the full labels."""
        final = load_series(self.labels("corrections"))
        labelled = {s.id for s in final.scans if s.labels is not None}
        scans = held_out_ids(self.source, labelled, self.cfg.evaluation.max_scans)
        scores = model_iou(
            self.checkpoint(model),
            self.source,
            scans,
            folder / "predictions",
            self.predict_trainer(),
            self.inference,
        )
        pixels = done_record(self.out / model).get("labelled_px")
        return {"model": model, "labelled_px": pixels, **scores}

    # -- helpers -----------------------------------------------------------------------------

    @property
    def evaluating(self) -> bool:
        """Held-out scoring runs where the series has full labels."""
        return any(s.labels_gt is not None for s in self.source.scans) and bool(
            self.cfg.evaluation.enabled
        )

    def labels(self, step: str) -> Path:
        return self.out / step / "series.yaml"

    def combined(self) -> Path:
        return self.out / "combine" / "series.yaml"

    def checkpoint(self, step: str | Path) -> Path:
        """The checkpoint a later step uses: best.ckpt (best validation), else last.ckpt."""
        folder = self.out / step
        best = folder / "checkpoints" / "best.ckpt"
        which = self.cfg.training.checkpoint
        return best if which == "best" and best.is_file() else folder / "checkpoints" / "last.ckpt"

    def predict_trainer(self) -> pl.Trainer:
        accelerator = "cpu" if self.cfg.training.trainer == "cpu" else "auto"
        return single_process_trainer(accelerator)

    def report(self) -> dict[str, Any]:
        """Print and return the refined model's test IoU and the held-out IoU per class."""
        iter4 = done_record(self.out / "iter4")
        result: dict[str, Any] = {"group": self.group, "test_iou": iter4.get("test_iou")}
        table = Table(title=f"iterative training, {self.out}")
        table.add_column("class")
        columns: dict[str, dict[str, float | None]] = {}
        if iter4.get("test_iou"):
            columns["iter4 test split"] = _test_iou(iter4["test_iou"])
        if self.evaluating:
            held = done_record(self.out / "eval_iter4")
            result["held_out"] = held
            columns["iter4 held-out"] = {**held["iou"], "total": held["total_iou"]}
        names = list(dict.fromkeys(n for c in columns.values() for n in c))
        for column in [*columns, "paper"]:
            table.add_column(column, justify="right")
        for name in names:
            cells = [_percent(c.get(name)) for c in columns.values()]
            paper = PAPER_IOU_PERCENT.get(name)
            table.add_row(name, *cells, "-" if paper is None else f"{paper:.1f}")
        self.console.print(table)
        self.console.print(f"steps and their times: {self.out / 'progress.csv'}")
        return result


def merge_hand_labels(combined: Series, hand: Series, folder: Path) -> Series:
    """The combined labels with the hand labels painted over them (hand labels win), as
    `folder/series.yaml` with labels in `folder/labels/`."""
    values = hand_values(hand)
    by_name = {name: value for value, name in values.items()}
    for name in (combined.hand_label_values or {}).values():
        if name not in by_name:
            by_name[name] = max(by_name.values(), default=0) + 1
            values[by_name[name]] = name
    table = np.zeros(256, np.uint8)
    for value, name in (combined.hand_label_values or {}).items():
        table[value] = by_name[name]
    labels_dir = folder / "labels"
    scans = []
    for scan in combined.scans:
        target = labels_dir / f"{scan.id}.zarr"
        hand_scan = hand.scan(scan.id)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            painted = hand.open_labels(hand_scan) if hand_scan.labels else None
            _merge_scan(combined.open_labels(scan), painted, table, target)
        listed = {a: set(v) for a, v in (scan.labelled_slices or {}).items()}
        for axis, indices in (hand_scan.labelled_slices or {}).items():
            listed.setdefault(axis, set()).update(indices)
        scans.append(
            replace(
                scan,
                labels=target.resolve(),
                labelled_slices={a: tuple(sorted(v)) for a, v in listed.items()},
            )
        )
    merged = with_scans(combined, scans)
    merged.hand_label_values = values
    save_series(merged, folder / "series.yaml")
    return merged


def _merge_scan(combined: Volume, hand: Volume | None, table: np.ndarray, target: Path) -> None:
    """Write the combined labels (renumbered by `table`) with the hand labels on top, slab by
    slab, into a temporary sibling renamed onto `target` once complete."""
    partial = target.with_name(f".{target.name}.partial")
    array = create_zarr(partial, combined.shape, np.uint8, chunks=CHUNKS, overwrite=True)
    for start in range(0, combined.shape[0], CHUNKS[0]):
        block = table[np.asarray(combined[start : start + CHUNKS[0]])]
        if hand is not None:
            painted = np.asarray(hand[start : start + CHUNKS[0]])
            block[painted != UNLABELLED] = painted[painted != UNLABELLED]
        array[start : start + CHUNKS[0]] = block
    partial.rename(target)


def compose_train(overrides: list[str]) -> DictConfig:
    """The train config (conf/train.yaml) with `overrides`, as `train.py` would compose it."""
    if GlobalHydra.instance().is_initialized():
        cfg = compose("train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    return cfg


def _readable(path: Path, console: Console) -> bool:
    """Whether a step's last.ckpt can be resumed from; a damaged one (killed while it was
    written) is set aside and the step starts afresh."""
    if not path.is_file():
        return False
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        console.print(f"  {path} is damaged ({type(err).__name__}); starting the step afresh")
        shutil.move(path, path.with_suffix(".damaged"))
        return False
    return True


def _test_iou(record: dict[str, Any]) -> dict[str, float | None]:
    """Class -> IoU of a run's test_iou.json, with the total IoU."""
    return {**record["per_class_iou"], "total": record["iou_total"]}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
