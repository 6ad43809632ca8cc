"""Train a segmentation model.

`python train.py [experiment=iter1_inplane] [trainer=ddp] [series=<manifest>] [key=value ...]`
"""

from omegaconf import DictConfig

from batteryct.cli import entry_point
from batteryct.training import train


@entry_point("train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
