"""Score predictions against full ground truth on the scans training never saw.

`python evaluate.py predictions=<predictions series.yaml> truth=<series with labels_gt>`
"""

import hydra
from omegaconf import DictConfig

from batteryct.cli import report_user_errors
from batteryct.evaluation import evaluate_and_report


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate_and_report(cfg.predictions, cfg.truth, cfg.out)


if __name__ == "__main__":
    main()
