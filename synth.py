"""Generate the synthetic operando cell.

`python synth.py [out=...] [shape=[64,128,128]] [seed=3]`
"""

from hydra.utils import instantiate
from omegaconf import DictConfig

from batteryct.cli import entry_point
from batteryct.synth import generate_series


@entry_point("synth")
def main(cfg: DictConfig) -> None:
    generate_series(
        out=cfg.out,
        shape=tuple(cfg.shape),
        voxel_size_um=cfg.voxel_size_um,
        seed=cfg.seed,
        plating_side=cfg.plating_side,
        protocol=instantiate(cfg.protocol),
        geometry=instantiate(cfg.geometry),
        ct=instantiate(cfg.ct, _convert_="all"),
        hand_labels=instantiate(cfg.hand_labels, _convert_="all"),
        misalign=instantiate(cfg.misalign, _convert_="all"),
        export_tiffs=cfg.export_tiffs,
        overwrite=cfg.overwrite,
    )


if __name__ == "__main__":
    main()
