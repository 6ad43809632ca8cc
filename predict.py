"""Segment whole volumes with a trained model.

`python predict.py ckpt=<checkpoint> series=<manifest> out=<folder> [trainer=ddp]`
"""

from hydra.utils import instantiate
from omegaconf import DictConfig

from batteryct.cli import entry_point
from batteryct.errors import ConfigError
from batteryct.predict import combine_series, export_onnx, predict_series


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    if cfg.onnx:
        print(f"wrote {export_onnx(cfg.ckpt, cfg.onnx)}")
        return
    combine = instantiate(cfg.combine, _convert_="all")
    if not combine.checkpoints and not cfg.ckpt:
        raise ConfigError("pass ckpt=<checkpoint> (or combine.checkpoints=[...] to combine models)")
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="32-true",
        use_distributed_sampler=False,  # ranks pick their own disjoint units of work
    )
    if combine.checkpoints:
        combine_series(
            combine, cfg.series, cfg.out, instantiate(cfg.inference, _convert_="all"), trainer
        )
        return
    predict_series(
        ckpt=cfg.ckpt,
        series=cfg.series,
        out=cfg.out,
        inference=instantiate(cfg.inference, _convert_="all"),
        settings=instantiate(cfg.settings, _convert_="all"),
        postprocess=instantiate(cfg.postprocess),
        trainer=trainer,
        overwrite=cfg.overwrite,
    )


if __name__ == "__main__":
    main()
