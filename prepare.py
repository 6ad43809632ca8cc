"""Level, register and crop raw scans into a prepared series.

`python prepare.py series=<raw manifest> out=<folder>`
"""

from hydra.utils import instantiate
from omegaconf import DictConfig

from batteryct.cli import entry_point
from batteryct.prepare import prepare_series


@entry_point("prepare")
def main(cfg: DictConfig) -> None:
    prepare_series(
        series=cfg.series,
        out=cfg.out,
        intensity=instantiate(cfg.intensity),
        level=instantiate(cfg.level, _convert_="all"),
        register=instantiate(cfg.register, _convert_="all"),
        roi=instantiate(cfg.roi, _convert_="all"),
        output=instantiate(cfg.output, _convert_="all"),
        overwrite=cfg.overwrite,
    )


if __name__ == "__main__":
    main()
