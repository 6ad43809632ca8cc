"""One training run from a composed Hydra config (what `train.py` calls)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

import batteryct.config  # noqa: F401  (registers ${len:} and ${run_folder:})
from batteryct.data import PatchDataModule
from batteryct.errors import ConfigError
from batteryct.greyvalues import GreyValues
from batteryct.models.callbacks import SaveResolvedConfig, SeedEachBatch
from batteryct.models.module import SegmentationModule
from batteryct.models.weights import load_matching_weights
from batteryct.synth import generate_series
from batteryct.training.loggers import ResumableCSVLogger, finish_loggers
from batteryct.training.resume import ResumePoint, check_resume_checkpoint

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def train(cfg: DictConfig) -> float | None:
    """Train (and optionally test) one model; return the value of `cfg.optimized_metric`.

    With `cfg.ckpt_path` the run continues from that checkpoint: checked first (one clear
    error, nothing written), its metrics appended to, and a finished run left as it is.
    """
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    datamodule: PatchDataModule = instantiate(cfg.data, _convert_="all")
    net = instantiate(cfg.model.net, _convert_="all")
    module: SegmentationModule = instantiate(
        cfg.model.module, net=net, class_names=datamodule.class_names, _convert_="all"
    )
    resume = check_resume_checkpoint(cfg.ckpt_path, module) if cfg.get("ckpt_path") else None
    if cfg.get("init_from"):
        load_matching_weights(module.net, cfg.init_from)
    ensure_default_series(Path(cfg.series), Path(cfg.paths.data_dir))

    trainer = _trainer(cfg, run_dir, resume)
    module.run_info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "class_names": datamodule.class_names,
        "orientation": datamodule.orientation,
        "patch_size": list(datamodule.patch_size),
        "label_map": OmegaConf.to_container(cfg.data.label_map, resolve=True),
        "grey_values": GreyValues.of_series(datamodule.series_path).to_dict(),
    }
    module.output_dir = run_dir
    try:
        value = _fit_and_test(cfg, trainer, module, datamodule, run_dir, resume)
    except BaseException:
        finish_loggers(trainer.loggers, failed=True)
        raise
    finish_loggers(trainer.loggers, failed=False)
    return value


def _trainer(cfg: DictConfig, run_dir: Path, resume: ResumePoint | None) -> pl.Trainer:
    """The Trainer of `cfg.trainer` with the configured callbacks and loggers."""
    callbacks = [
        *_instantiate_all(cfg.get("callbacks")),
        SaveResolvedConfig(cfg, str(run_dir / "checkpoints")),
        SeedEachBatch(cfg.seed),
    ]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = _instantiate_all(cfg.get("logger"))
    for logger in loggers:
        if resume is not None and isinstance(logger, ResumableCSVLogger):
            logger.resume_from(resume.global_step)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def _fit_and_test(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: SegmentationModule,
    datamodule: PatchDataModule,
    run_dir: Path,
    resume: ResumePoint | None,
) -> float | None:
    """Fit (from `resume` if given), then test if `cfg.test`; the optimized metric's value."""
    datamodule.setup("fit")
    if trainer.is_global_zero:
        datamodule.save_split(run_dir / "split.json")
        for logger in trainer.loggers:
            logger.log_hyperparams({"split": {k: len(v) for k, v in datamodule.split.items()}})
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume.path if resume else None)
    if resume is not None and trainer.global_step == resume.global_step:
        log.info(
            "%s is the end of a finished run (epoch %d, step %d): nothing left to train; "
            "raise trainer.max_epochs (now %s) or trainer.max_steps to train on",
            resume.path,
            resume.epoch,
            resume.global_step,
            trainer.max_epochs,
        )
    value = _optimized_value(trainer, cfg.get("optimized_metric"))
    if cfg.get("test"):
        trainer.test(
            module, datamodule=datamodule, ckpt_path="best" if _has_best(trainer) else None
        )
    return value


def ensure_default_series(series: Path, data_dir: Path) -> None:
    """Generate the embedded synthetic cell on first use when `series` is its default path."""
    default = data_dir / "synthetic" / "series.yaml"
    if series.exists() or series.resolve() != default.resolve():
        return
    log.info("%s is absent: generating the synthetic cell (synth.py's defaults) first", series)
    generate_series(default.parent, **default_synth_settings())


def default_synth_settings() -> dict[str, Any]:
    """The settings `python synth.py` uses without overrides (conf/synth.yaml), as arguments of
    `generate_series` (its own defaults are a smaller cell that the calibrated layers overflow)."""
    cfg = OmegaConf.load(CONF_DIR / "synth.yaml")
    return {
        "shape": tuple(cfg.shape),
        "voxel_size_um": cfg.voxel_size_um,
        "seed": cfg.seed,
        "plating_side": cfg.plating_side,
        "protocol": instantiate(cfg.protocol),
        "geometry": instantiate(cfg.geometry),
        "ct": instantiate(cfg.ct, _convert_="all"),
        "hand_labels": instantiate(cfg.hand_labels, _convert_="all"),
        "misalign": instantiate(cfg.misalign, _convert_="all"),
        "export_tiffs": cfg.export_tiffs,
    }


def _instantiate_all(group: Mapping[str, Any] | None) -> list[Any]:
    if not group:
        return []
    return [
        instantiate(item, _convert_="all")
        for item in group.values()
        if item is not None and "_target_" in item
    ]


def _print_summary(trainer: pl.Trainer, run_dir: Path, prefix: str) -> None:
    """The last epoch's metrics of `prefix` as a table, and where the run's files are."""
    metrics = {
        k.split("/", 1)[1]: float(v)
        for k, v in sorted(trainer.callback_metrics.items())
        if k.startswith(f"{prefix}/")
    }
    table = Table(title=f"{prefix} metrics (epoch {trainer.current_epoch})", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    console = Console()
    console.print(table)
    console.print(f"run folder: {run_dir}")


def _has_best(trainer: pl.Trainer) -> bool:
    callback = trainer.checkpoint_callback
    return isinstance(callback, ModelCheckpoint) and bool(callback.best_model_path)


def _optimized_value(trainer: pl.Trainer, metric: str | None) -> float | None:
    """The best value of the metric if the checkpoint callback tracks it, else its last value."""
    if not metric:
        return None
    callback = trainer.checkpoint_callback
    if (
        isinstance(callback, ModelCheckpoint)
        and callback.monitor == metric
        and callback.best_model_score is not None
    ):
        return float(callback.best_model_score)
    value = trainer.callback_metrics.get(metric)
    if value is not None:
        return float(value)
    logged = sorted(trainer.callback_metrics)
    if not any(name.startswith("val/") for name in logged):
        log.warning("optimized_metric %r has no value: no validation ran in this run", metric)
        return None
    raise ConfigError(f"optimized_metric {metric!r} was never logged; logged: {logged}")
