"""Training runs through `batteryct.training.train` with the real configs (in-process, CPU)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import wandb
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from monai.networks.nets import UNet

from batteryct.errors import ConfigError
from batteryct.models import CHECKPOINT_KEY, CheckpointMismatchError, load_matching_weights
from batteryct.training import train
from tests.training.helpers import LAPTOP_EXPERIMENT, ROOT, KilledError, train_config


def _epochs(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


@pytest.fixture(scope="module")
def series(small_series_dir: Path) -> Path:
    return small_series_dir / "series.yaml"


def test_fast_dev_run(series: Path, tmp_path: Path) -> None:
    value = train(train_config(series, tmp_path, "trainer.fast_dev_run=true"))
    assert value is not None and 0.0 <= value <= 1.0


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
@pytest.mark.parametrize(
    ("limits", "steps"),
    [
        (["trainer.max_steps=2"], 2),  # shorter than one epoch
        (["trainer.max_epochs=1", "trainer.limit_val_batches=0"], 4),  # validation off
    ],
)
def test_a_run_without_validation_ends_normally(
    series: Path, tmp_path: Path, scheduler: str, limits: list[str], steps: int
) -> None:
    cfg = train_config(
        series, tmp_path, *limits, f"model/scheduler@model.module.scheduler={scheduler}"
    )
    assert cfg.callbacks.early_stopping is not None
    assert train(cfg) is None  # early stopping and the plateau schedule wait for validation
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == steps


def test_trainer_limits_batches_per_epoch(series: Path, tmp_path: Path) -> None:
    train(
        train_config(
            series,
            tmp_path,
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
        )
    )
    assert len(_epochs(tmp_path, "train/loss_step")) == 2
    with (tmp_path / "val_confusion.csv").open() as handle:
        scored = sum(int(v) for row in list(csv.reader(handle))[1:] for v in row[1:])
    assert 0 < scored <= 8 * 32 * 32  # one validation batch of 8 patches


def test_the_progress_bar_is_left_out_when_the_trainer_switches_it_off(
    series: Path, tmp_path: Path
) -> None:
    cfg = train_config(series, tmp_path, "trainer.max_epochs=1")
    assert not cfg.trainer.enable_progress_bar
    assert cfg.callbacks.progress_bar._target_.endswith("RichProgressBar")
    train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_short_fit_improves_validation_iou_and_leaves_its_records(
    series: Path, tmp_path: Path
) -> None:
    cfg = train_config(
        series, tmp_path, "trainer.max_epochs=6", "data.train_patches_per_epoch=96", "seed=1"
    )
    best = train(cfg)
    ious = _epochs(tmp_path, "val/iou_mean")
    assert len(ious) == 6
    assert max(ious[1:]) > ious[0]
    assert best == pytest.approx(max(ious), abs=1e-6) or best == pytest.approx(ious[-1])
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "checkpoints" / "config.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "overlays").glob("*.png"))[:1] == ["epoch_0000.png"]
    split = json.loads((tmp_path / "split.json").read_text())
    assert set(split) == {"train", "val"} and split["val"]
    assert (tmp_path / "val_confusion.csv").exists()
    names = set(_read_header(tmp_path / "csv" / "metrics.csv"))
    expected = {"val/acc", "val/iou_total", "val/iou_mean", "val/loss"}
    expected |= {
        f"val/iou_{c}" for c in ("background", "dendrite", "pit", "deposited_li", "electrode")
    }
    assert expected <= names
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    info = checkpoint[CHECKPOINT_KEY]
    assert info["class_names"] == ["background", "dendrite", "pit", "deposited_li", "electrode"]
    assert info["orientation"] == "both" and info["patch_size"] == [32, 32]


def _read_header(path: Path) -> list[str]:
    with path.open() as handle:
        return next(csv.reader(handle))


def test_resume_from_last_checkpoint_continues_the_run(series: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(train_config(series, first, "trainer.max_epochs=2"))
    last = first / "checkpoints" / "last.ckpt"
    steps_per_epoch = torch.load(last, weights_only=False)["global_step"] // 2
    second = tmp_path / "second"
    train(train_config(series, second, "trainer.max_epochs=3", f"ckpt_path={last}"))
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == 2
    assert resumed["global_step"] == 3 * steps_per_epoch
    assert (
        _epochs(second, "epoch")
        and set(_epochs(second, "val/acc"))
        and min(_epochs(second, "epoch")) == 2
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def finished_run(series: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished one-epoch run (read-only: copy it to change it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(train_config(series, run_dir, "trainer.max_epochs=1"))
    return run_dir


def test_two_runs_with_the_same_seed_log_the_same_metrics(series: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        train(train_config(series, tmp_path / name, "trainer.max_epochs=1"))
    assert (tmp_path / "a" / "csv" / "metrics.csv").read_text() == (
        tmp_path / "b" / "csv" / "metrics.csv"
    ).read_text()


def test_a_killed_and_resumed_run_ends_like_an_uninterrupted_one(
    series: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    train(train_config(series, whole))  # 2 epochs of 4 batches
    killed = tmp_path / "killed"
    kill = "+callbacks.kill={_target_:tests.training.helpers.KillAt,epoch:1,batch:2}"
    with pytest.raises(KilledError):
        train(train_config(series, killed, kill))
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    train(train_config(series, killed, f"ckpt_path={last}"))
    theirs, ours = _weights(whole), _weights(killed)
    assert theirs.keys() == ours.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, msg=name)
    # the metrics continue the first epoch's rows, without the rows of the killed epoch
    assert (killed / "csv" / "metrics.csv").read_text() == (
        whole / "csv" / "metrics.csv"
    ).read_text()


def test_resuming_a_finished_run_says_so_and_keeps_its_records(
    series: Path, finished_run: Path, tmp_path: Path, caplog
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = _files(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    with caplog.at_level(logging.INFO, logger="batteryct.training.run"):
        train(train_config(series, run_dir, "trainer.max_epochs=1", f"ckpt_path={last}"))
    assert "finished run" in caplog.text and "nothing left to train" in caplog.text
    assert _files(run_dir) == before


def test_a_resumed_run_continues_in_its_own_folder(tmp_path: Path) -> None:
    """With ckpt_path=<run>/checkpoints/<name>.ckpt, run_dir is <run> (else Hydra's folder)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for ckpt, expected in (
            (tmp_path / "old" / "checkpoints" / "last.ckpt", "old"),
            (None, "new"),
        ):
            cfg = compose(
                "train",
                overrides=[f"ckpt_path={ckpt}" if ckpt else "ckpt_path=null"],
                return_hydra_config=True,
            )
            cfg.hydra.runtime.output_dir = str(tmp_path / "new")
            HydraConfig.instance().set_config(cfg)
            assert cfg.run_dir == str(tmp_path / expected)


@pytest.mark.parametrize("case", ["missing", "damaged", "other classes"])
def test_a_bad_ckpt_path_gets_one_clear_message_and_writes_nothing(
    series: Path, finished_run: Path, tmp_path: Path, case: str
) -> None:
    good = finished_run / "checkpoints" / "last.ckpt"
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    ckpt, overrides, message = {
        "missing": (tmp_path / "nope.ckpt", [], "does not exist"),
        "damaged": (damaged, [], "is not a readable checkpoint"),
        "other classes": (
            good,
            ["experiment=iter2/deposited_li", *LAPTOP_EXPERIMENT],
            "trained for 5 classes",
        ),
    }[case]
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message) as raised:
        train(train_config(series, run_dir, *overrides, f"ckpt_path={ckpt}"))
    assert str(ckpt) in str(raised.value)
    if case == "other classes":
        assert f"init_from={ckpt}" in str(raised.value)
    assert not run_dir.exists()


def test_start_from_a_checkpoint_with_another_number_of_classes(
    series: Path, tmp_path: Path, caplog
) -> None:
    five = tmp_path / "five"
    train(train_config(series, five, "trainer.max_epochs=1"))
    source = torch.load(five / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    binary = tmp_path / "binary"
    cfg = train_config(
        series,
        binary,
        "experiment=iter2/deposited_li",
        *LAPTOP_EXPERIMENT,
        f"init_from={five / 'checkpoints' / 'last.ckpt'}",
    )
    net = instantiate(cfg.model.net)
    with caplog.at_level(logging.INFO, logger="batteryct.models.weights"):
        transfer = load_matching_weights(net, cfg.init_from)
    assert transfer.loaded and transfer.skipped
    # the skipped tensors are exactly those whose shape depends on the number of classes
    for name in transfer.skipped:
        assert source[f"net.{name}"].shape != net.state_dict()[name].shape
    for name in transfer.loaded:
        assert torch.equal(net.state_dict()[name], source[f"net.{name}"])
    assert "not loaded" in caplog.text
    assert train(cfg) is not None  # and the run itself goes through


def test_a_checkpoint_of_another_network_is_refused(series: Path, tmp_path: Path) -> None:
    train(train_config(series, tmp_path, "trainer.max_epochs=1"))
    other = UNet(2, 1, 5, channels=(8, 16, 32), strides=(2, 2), num_res_units=0)
    with pytest.raises(CheckpointMismatchError, match="does not fit the network"):
        load_matching_weights(other, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointMismatchError, match="does not exist"):
        load_matching_weights(other, tmp_path / "nope.ckpt")


def test_resunet7_is_monais_unet_with_the_papers_arguments(series: Path, tmp_path: Path) -> None:
    cfg = train_config(series, tmp_path, "model/net=resunet7")
    ours = instantiate(cfg.model.net)
    theirs = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=5,
        channels=(32, 64, 128, 256, 512, 512, 512),
        strides=(2, 2, 2, 2, 2, 2),
        kernel_size=3,
        up_kernel_size=3,
        num_res_units=2,
        act="PRELU",
        norm="BATCH",
        dropout=0.2,
    )
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    assert count > 10_000_000
    with torch.no_grad():
        assert ours.eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 5, 64, 64)


def test_each_run_of_a_sweep_is_its_own_wandb_run(
    series: Path, tmp_path: Path, monkeypatch
) -> None:
    """Hydra's multirun calls train() once per setting in one process, as here."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for seed in (1, 2):
        cfg = train_config(
            series,
            tmp_path / str(seed),
            "logger=wandb",
            "logger.wandb.offline=true",
            f"seed={seed}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
        )
        train(cfg)
        assert wandb.run is None  # finished: the next run starts its own
    runs = [list((tmp_path / str(seed) / "wandb").glob("offline-run-*")) for seed in (1, 2)]
    assert [len(found) for found in runs] == [1, 1]
    assert all(any(found[0].rglob("*.wandb")) for found in runs)
    assert runs[0][0].name.split("-")[-1] != runs[1][0].name.split("-")[-1]


@pytest.mark.parametrize(
    "experiment",
    [
        "iter1_inplane",
        "iter2/deposited_li",
        "iter2/redeposited_li",
        "iter2/electrode",
        "iter3_multiclass",
    ],
)
def test_iteration_experiments_run_end_to_end(
    series: Path, tmp_path: Path, experiment: str
) -> None:
    cfg = train_config(
        series,
        tmp_path,
        f"experiment={experiment}",
        *LAPTOP_EXPERIMENT,
    )
    assert train(cfg) is not None
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_refined_iteration_fine_tunes_and_reports_test_iou(series: Path, tmp_path: Path) -> None:
    base = [*LAPTOP_EXPERIMENT, "data.test_patches=16"]
    iter3 = tmp_path / "iter3"
    train(train_config(series, iter3, "experiment=iter3_multiclass", *base))
    refined = tmp_path / "iter4"
    cfg = train_config(
        series,
        refined,
        "experiment=iter4_refined",
        *base,
        f"init_from={iter3 / 'checkpoints' / 'last.ckpt'}",
    )
    assert list(cfg.data.split) == [0.72, 0.13, 0.15] and cfg.test
    train(cfg)
    table = json.loads((refined / "test_iou.json").read_text())
    assert set(table["per_class_iou"]) == {
        "background",
        "dendrite",
        "pit",
        "deposited_li",
        "electrode",
    }
    with (refined / "test_iou.csv").open() as handle:
        rows = {row["class"]: row["iou"] for row in csv.DictReader(handle)}
    assert {"background", "electrode", "mean", "total", "accuracy"} <= set(rows)
    split = json.loads((refined / "split.json").read_text())
    assert split["test"] and not set(map(str, split["test"])) & set(map(str, split["train"]))


def test_tensorboard_logger_receives_metrics_and_overlays(series: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(train_config(series, tmp_path, "logger=tensorboard", "trainer.max_epochs=1"))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "val/iou_total" in events.Tags()["scalars"]
    assert "val/overlays" in events.Tags()["images"]
