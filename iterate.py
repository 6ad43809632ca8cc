"""Run the paper's iterative training loop, resumably.

`python iterate.py [series=<manifest>] [out=<folder>] [annotator=simulated|manual] [key=value ...]`
"""

import sys

from omegaconf import DictConfig

from batteryct.cli import entry_point
from batteryct.iterate import run_loop


@entry_point("iterate")
def main(cfg: DictConfig) -> None:
    if run_loop(cfg) is None:
        sys.exit(3)  # waiting for painted corrections: not an error, but not finished either


if __name__ == "__main__":
    main()
