"""train.py as a user runs it: DDP with 2 CPU processes (real processes), multirun sweeps, Optuna
and user errors (its command run in the test process, see tests.entry_point)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from hydra.utils import instantiate

import batteryct.training.run as run_module
from batteryct.data import IGNORE_INDEX
from tests.entry_point import run_entry_point
from tests.training.helpers import ROOT, SMALL_RUN, train_config


def _train_py(*overrides: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BATTERYCT_ROOT": str(root),
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ddp_with_two_cpu_processes_syncs_metrics(small_series_dir: Path, tmp_path: Path) -> None:
    series = small_series_dir / "series.yaml"
    run_dir = tmp_path / "ddp"
    overrides = [
        f"series={series}",
        *SMALL_RUN,
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
    ]
    done = _train_py(*overrides, root=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0 wrote the confusion matrix of the whole validation set: both ranks' halves summed.
    with (run_dir / "val_confusion.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    total = sum(int(v) for row in rows for v in row[1:])
    cfg = train_config(series, tmp_path / "unused")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    val = datamodule.datasets["val"]
    expected = sum(int((val[i]["label"] != IGNORE_INDEX).sum()) for i in range(len(val)))
    assert total == expected
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_multirun_trains_one_model_per_setting_each_its_own_wandb_run(
    small_series_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    done = run_entry_point(
        "train.py",
        "-m",
        f"series={small_series_dir / 'series.yaml'}",
        *SMALL_RUN,
        "trainer.max_epochs=1",
        "logger=wandb",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reuse" not in done.stdout + done.stderr
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").exists()
        assert (sweep / job / "split.json").exists()
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1


def test_optuna_sweep_returns_the_best_validation_iou(
    small_series_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "optuna"
    done = run_entry_point(
        "train.py",
        "-m",
        "hparams_search=optuna",
        f"series={small_series_dir / 'series.yaml'}",
        *SMALL_RUN,
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0.0 <= results["best_value"] <= 1.0
    # data.batch_size is fixed by the command line, so Optuna searches the other two
    assert {"model.module.optimizer.lr", "model.net.dropout"} <= set(results["best_params"])
    values = []
    for job in ("0", "1"):
        with (sweep / job / "csv" / "metrics.csv").open() as handle:
            values += [
                float(r["val/iou_mean"]) for r in csv.DictReader(handle) if r.get("val/iou_mean")
            ]
    assert np.isclose(results["best_value"], max(values))


def test_default_series_is_generated_on_first_use(tmp_path: Path, monkeypatch) -> None:
    calls: list[Path] = []
    shapes: list[tuple[int, ...]] = []

    def generate(out: Path, shape: tuple[int, ...], **_: object) -> None:
        calls.append(Path(out))
        shapes.append(shape)

    monkeypatch.setattr(run_module, "generate_series", generate)
    data_dir = tmp_path / "data"
    run_module.ensure_default_series(data_dir / "synthetic" / "series.yaml", data_dir)
    assert calls == [data_dir / "synthetic"]
    assert shapes == [(164, 128, 128)]  # synth.py's default cell, not generate_series' own
    run_module.ensure_default_series(tmp_path / "mine" / "series.yaml", data_dir)
    assert calls == [data_dir / "synthetic"]  # another path is never generated


def test_user_errors_exit_with_a_message(small_series_dir: Path, tmp_path: Path) -> None:
    done = run_entry_point(
        "train.py",
        f"series={small_series_dir / 'series.yaml'}",
        *SMALL_RUN,
        "data.patch_size=[512,512]",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "patch_size [512, 512] is larger than slice" in done.stderr
    assert "Traceback" not in done.stderr


def test_slurm_launcher_preset_composes_to_submitit(tmp_path: Path) -> None:
    done = run_entry_point(
        "train.py",
        "hydra/launcher=slurm",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    launcher = yaml.safe_load(done.stdout)
    launcher = launcher.get("hydra", launcher).get("launcher", launcher)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == 4 and launcher["tasks_per_node"] == 4
