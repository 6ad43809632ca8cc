"""Is the iterative loop worth it? Held-out IoU after each iteration vs labelled pixels spent.

    python bench/bench_iterate.py [--out outputs/bench_iterate] [--series <manifest>]
                                  [--baseline-epochs N] [--tiny] [-- iterate overrides …]

1. The series: `--series`, or the default synthetic cell (`synth.py` with no overrides) generated
   into `<out>/synthetic` (`--tiny`: a 5-scan 82 × 32 × 32 cell, to check the script in a minute).
2. The loop: `iterate.py series=… out=<out>/loop evaluation.every_iteration=true`, which scores
   every model it trains (iter1, the three iter2 binary models, iter3, iter4) on held-out scans
   (full labels, never labelled) in the model's own classes, and records the pixels painted.
3. The baseline: the same starting hand labels plus the loop's correction budget (as many slices,
   as many painted pixels) placed on random cross-sections of the same scans by the same
   simulated annotator; one 5-class model (iter3_multiclass on cross-sections) trained from scratch
   for `--baseline-epochs` (default: the loop's iter3 + iter4 epochs), scored on the same scans.
4. A table (`<out>/results.md`, `results.json`) and a plot (`<out>/iou_vs_labels.png`): IoU per
   class against labelled pixels, the baseline beside, the paper's final numbers as lines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import numpy as np
from entrypoints import ROOT, run
from hydra import compose, initialize_config_dir
from rich.console import Console

from batteryct.data.slices import SliceRef
from batteryct.evaluation import PAPER_IOU_PERCENT
from batteryct.iterate.annotator import (
    CorrectionSettings,
    candidate_scans,
    choose_slices,
    simulate_corrections,
)
from batteryct.iterate.labels import copy_labels, labelled_pixels, write_slices
from batteryct.iterate.loop import compose_train
from batteryct.iterate.scoring import model_iou
from batteryct.iterate.steps import done_record
from batteryct.predict import InferenceSettings
from batteryct.series import load_series
from batteryct.training import train

MODELS = (
    "iter1",
    "iter2_deposited_li",
    "iter2_redeposited_li",
    "iter2_electrode",
    "iter3",
    "iter4",
)
TINY_SYNTH = (
    "shape=[82,32,32]",
    "voxel_size_um=5.32",
    "seed=7",
    "protocol.n_charge=2",
    "protocol.n_discharge=2",
    "hand_labels.scans=[0,2,4]",
    "hand_labels.in_plane_per_scan=2",
    "export_tiffs=false",
)
TINY_TRAINING = (
    "scale=laptop",
    "data.patch_size=[32,32]",
    "data.batch_size=4",
    "data.train_patches_per_epoch=8",
    "data.val_patches=4",
    "data.test_patches=4",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
)
TINY_LOOP = (
    "corrections.slices=2",
    "corrections.budget_px=300",
    "corrections.min_spacing=2",
    "training.epochs.iter1=1",
    "training.epochs.iter2=1",
    "training.epochs.iter3=1",
    "training.epochs.iter4=1",
    "evaluation.max_scans=1",
    "training.overrides=[" + ",".join(f"'{o}'" for o in TINY_TRAINING) + "]",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_iterate")
    parser.add_argument("--series", type=Path, help="a manifest with labels_gt on every scan")
    parser.add_argument("--baseline-epochs", type=int, help="default: iter3 + iter4 epochs")
    parser.add_argument("--tiny", action="store_true", help="a tiny cell and 1-epoch steps")
    parser.add_argument("overrides", nargs="*", help="more iterate.py overrides")
    args = parser.parse_args()
    console = Console(width=120)
    out = args.out.resolve()
    root = f"paths.root_dir={out}"
    times: dict[str, float] = {}

    series = args.series
    if series is None:
        series = out / "synthetic" / "series.yaml"
        if not series.exists():
            tiny = TINY_SYNTH if args.tiny else ()
            times["synth"] = run(console, "synth.py", f"out={series.parent}", root, *tiny)
    series = series.resolve()

    overrides = [*(TINY_LOOP if args.tiny else ()), *args.overrides]
    loop = out / "loop"
    loop_args = [f"series={series}", f"out={loop}", root, "evaluation.every_iteration=true"]
    times["loop"] = run(console, "iterate.py", *loop_args, *overrides)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("iterate", overrides=[*loop_args, *overrides])
        epochs = args.baseline_epochs or cfg.training.epochs.iter3 + cfg.training.epochs.iter4
        started = time.perf_counter()
        baseline = random_baseline(cfg, loop, out / "random_baseline", epochs, console)
        times["random baseline"] = time.perf_counter() - started

    rows = {name: done_record(loop / f"eval_{name}") for name in MODELS}
    rows["random slices, one model"] = baseline
    results = {"series": str(series), "times_s": times, "rows": rows, "paper": PAPER_IOU_PERCENT}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(rows)
    (out / "results.md").write_text(table)
    plot(rows, out / "iou_vs_labels.png")
    console.print(table)
    console.print(f"wrote {out / 'results.md'}, results.json and iou_vs_labels.png")


def random_baseline(
    cfg: Any, loop: Path, folder: Path, epochs: int, console: Console
) -> dict[str, Any]:
    """The loop's correction budget on random slices, one 5-class model, scored like the loop."""
    corrections = done_record(loop / "corrections")
    source = load_series(cfg.series)
    start = folder / "start"
    labels = load_series(start / "series.yaml") if start.exists() else copy_labels(source, start)
    settings = CorrectionSettings(
        **{
            **{k: v for k, v in cfg.corrections.items() if k != "_target_"},
            "selection": "random",
            "slices": len(corrections["slices"]),
            "budget_px": max(1, corrections["painted_px"]),
        }
    )
    scans = candidate_scans(labels, settings)
    pool = []
    for scan_id in scans:
        shape = labels.open_image(labels.scan(scan_id)).shape
        pool += [
            (0.0, SliceRef(scan_id, axis, i))
            for axis in settings.axes
            for i in range(shape[("depth", "rows", "cols").index(axis)])
        ]
    listed = {
        SliceRef(s.id, a, i)
        for s in labels.scans
        for a, indices in (s.labelled_slices or {}).items()
        for i in indices
    }
    rng = np.random.default_rng([int(cfg.seed), 7])
    slices = choose_slices(pool, listed, settings, rng)
    painted = simulate_corrections(labels, slices, settings, rng)
    manifest = write_slices(labels, painted, folder / "labels", {"step": "random baseline"})
    run_dir = folder / "train"
    overrides = [
        "experiment=iter3_multiclass",
        f"series={manifest.path}",
        f"run_dir={run_dir}",
        f"paths.root_dir={cfg.paths.root_dir}",
        f"seed={cfg.seed}",
        f"trainer={cfg.training.trainer}",
        f"trainer.max_epochs={epochs}",
        "run_name=random_baseline",
        *cfg.training.overrides,
    ]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        overrides.append(f"ckpt_path={last}")
    train(compose_train(overrides))
    best = run_dir / "checkpoints" / "best.ckpt"
    scans_scored = done_record(loop / "eval_iter4")["scans"]
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    scores = model_iou(
        best if best.is_file() else last,
        source,
        scans_scored,
        folder / "predictions",
        trainer,
        InferenceSettings(),
    )
    console.print(f"random baseline: {len(slices)} slices, {labelled_pixels(manifest)} px")
    return {"model": "random", "labelled_px": labelled_pixels(manifest), **scores}


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """Rows: models; columns: labelled pixels, IoU (%) per class, total IoU."""
    classes = list(dict.fromkeys(c for r in rows.values() for c in r["iou"]))
    head = ["model", "labelled px", *classes, "total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [name, str(row["labelled_px"])]
        cells += [_percent(row["iou"].get(c)) for c in classes]
        cells.append(_percent(row["total_iou"]))
        lines.append("| " + " | ".join(cells) + " |")
    paper = ["paper (final)", "-", *(_paper(c) for c in classes), _paper("total")]
    lines.append("| " + " | ".join(paper) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """IoU per class against labelled pixels: one point per model, the paper as lines."""
    classes = ["dendrite", "pit", "deposited_li", "electrode"]
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = dict(zip(classes, ("#e6194b", "#ffe119", "#3cb44b", "#4363d8"), strict=True))
    for name, row in rows.items():
        for cls in classes:
            value = row["iou"].get(cls)
            if value is None:
                continue
            marker = "s" if name.startswith("random") else "o"
            ax.scatter(row["labelled_px"], 100 * value, color=colours[cls], marker=marker)
            ax.annotate(name, (row["labelled_px"], 100 * value), fontsize=6)
    for cls in classes:
        ax.axhline(PAPER_IOU_PERCENT[cls], color=colours[cls], ls="--", lw=0.8, label=cls)
    ax.set_xlabel("labelled pixels (hand labels + corrections)")
    ax.set_ylabel("held-out IoU (%)")
    ax.set_title("iterative loop (o) vs random slices (□); dashed: the paper's final IoU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _paper(name: str) -> str:
    value = PAPER_IOU_PERCENT.get(name)
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
