"""Held-out segmentation quality against full ground truth, next to the paper and a threshold.

    python bench/bench_quality.py [--out outputs/bench_quality] [--series <manifest>]
                                  [--ckpt NAME=PATH ...] [--no-train]

1. The series: `--series`, or the default synthetic cell (`synth.py` with no overrides) generated
   into `<out>/synthetic`.
2. The default recipe: `train.py series=<series>` with no other override, timed (`--no-train`
   skips it; `--ckpt` adds checkpoints to compare, e.g. `--ckpt paper=runs/x/best.ckpt`).
3. Every model segments every scan with `predict.py ckpt=… series=…` defaults, timed.
4. On the scans never used for training (those without hand labels), 5-class and 7-class IoU per
   class for every model and for multi-Otsu thresholds with the best bins for each class.
5. The analysis of each model's segmentation against the analysis of the truth: relative errors
   of the key quantities, checked against the targets of issue 10.

Prints the tables and writes `<out>/results.json`. Takes about 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from entrypoints import ROOT, run
from rich.console import Console
from rich.table import Table

from batteryct.evaluation import (
    KEY_QUANTITIES,
    PAPER_IOU_PERCENT,
    evaluate_predictions,
    held_out_scans,
    otsu_best_mapping,
    print_scores,
    score_columns,
)
from batteryct.series import load_series

IOU_TARGETS = {
    "dendrite": 0.60,
    "pit": 0.80,
    "deposited_li": 0.75,
    "electrode": 0.95,
    "total": 0.90,
}
ERROR_TARGETS = {
    **{
        f"{name} volume, {which} cycle": 0.15
        for name in ("dendrite", "pit", "deposited_li", "redeposited_li")
        for which in ("half", "full")
    },
    "CT/Faraday ratio, cycle": 0.15,
    "dead Li volume": 0.30,
    "void area, full cycle": 0.10,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_quality")
    parser.add_argument("--series", type=Path, help="a manifest with labels_gt on every scan")
    parser.add_argument("--ckpt", action="append", default=[], help="NAME=PATH, repeatable")
    parser.add_argument("--no-train", action="store_true", help="do not train the default recipe")
    args = parser.parse_args()
    console = Console(width=120)
    out = args.out.resolve()
    root = f"paths.root_dir={out}"
    times: dict[str, float] = {}

    series = args.series
    if series is None:
        series = out / "synthetic" / "series.yaml"
        if not series.exists():
            times["synth"] = run(console, "synth.py", f"out={series.parent}", root)
    series = series.resolve()

    models = dict(item.split("=", 1) for item in args.ckpt)
    if not args.no_train:
        train_dir = out / "default_recipe"
        times["train default_recipe"] = run(
            console, "train.py", f"series={series}", f"hydra.run.dir={train_dir}", root
        )
        models = {"default recipe": str(train_dir / "checkpoints" / "best.ckpt"), **models}
    if not models:
        parser.error("nothing to score: train the default recipe or pass --ckpt NAME=PATH")

    truth = load_series(series)
    scans = held_out_scans(truth)
    console.print(f"held-out scans: {len(scans)} ({', '.join(s.id for s in scans)})")
    evaluations = {}
    for name, ckpt in models.items():
        folder = out / "predictions" / name.replace(" ", "_")
        times[f"predict {name}"] = run(
            console,
            "predict.py",
            f"ckpt={ckpt}",
            f"series={series}",
            f"out={folder}",
            "overwrite=true",
            root,
        )
        evaluations[name] = evaluate_predictions(folder / "series.yaml", truth)
    otsu = otsu_best_mapping(truth, scans)

    network = {name: score_columns(e)[0] for name, e in evaluations.items()}
    analysis = {name: score_columns(e)[1] for name, e in evaluations.items()}
    network["multi-Otsu, best bins"] = otsu["network"]
    analysis["multi-Otsu, best bins"] = otsu["analysis"]
    print_scores(console, "IoU (%), network classes, held-out scans", network, PAPER_IOU_PERCENT)
    print_scores(console, "IoU (%), analysis classes, held-out scans", analysis)
    print_errors(console, evaluations)
    verdicts = {name: check_targets(e) for name, e in evaluations.items()}
    for name, failed in verdicts.items():
        status = "[green]all targets met" if not failed else f"[red]missed: {', '.join(failed)}"
        console.print(f"{name}: {status}")
    for stage, seconds in times.items():
        console.print(f"{stage}: {seconds:.0f} s")

    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {_cores()} cores",
        "series": str(series),
        "times_s": times,
        "models": {
            name: {"checkpoint": models[name], **e.as_dict()} for name, e in evaluations.items()
        },
        "otsu_best_bins": otsu,
        "missed_targets": verdicts,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    console.print(f"wrote {out / 'results.json'}")


def check_targets(evaluation) -> list[str]:
    """Names of the issue's targets this evaluation misses."""
    network, _ = score_columns(evaluation)
    missed = [
        f"{name} IoU {100 * network[name]:.1f} < {100 * floor:.0f}"
        for name, floor in IOU_TARGETS.items()
        if not network[name] >= floor
    ]
    for name, limit in ERROR_TARGETS.items():
        error = evaluation.errors[name]
        if math.isnan(error) or abs(error) > limit:
            missed.append(f"{name} error {error:+.1%} beyond ±{limit:.0%}")
    return missed


def print_errors(console: Console, evaluations: dict) -> None:
    table = Table(title="Analysis from each model's segmentation: relative error against the truth")
    table.add_column("quantity")
    table.add_column("truth", justify="right")
    for name in evaluations:
        table.add_column(name, justify="right")
    table.add_column("allowed", justify="right")
    first = next(iter(evaluations.values()))
    for quantity, (unit, _) in KEY_QUANTITIES.items():
        row = [f"{first.truth_quantities[quantity]:.4g} {unit}"]
        for evaluation in evaluations.values():
            error = evaluation.errors[quantity]
            row.append("-" if math.isnan(error) else f"{error:+.1%}")
        limit = ERROR_TARGETS.get(quantity)
        row.append(f"±{limit:.0%}" if limit else "")
        table.add_row(quantity, *row)
    console.print(table)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
