"""Train a segmentation model.

`python train.py [experiment=iter1_inplane] [trainer=ddp] [series=<manifest>] [key=value ...]`
"""

import hydra
from omegaconf import DictConfig

from batteryct.cli import report_user_errors
from batteryct.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
