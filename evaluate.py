"""Score predictions against full ground truth on the scans training never saw.

`python evaluate.py predictions=<predictions series.yaml> truth=<series with labels_gt>`
"""

from omegaconf import DictConfig

from batteryct.cli import entry_point
from batteryct.evaluation import evaluate_and_report


@entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate_and_report(cfg.predictions, cfg.truth, cfg.out)


if __name__ == "__main__":
    main()
