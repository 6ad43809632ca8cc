"""Training runs: compose data, model, callbacks, loggers and trainer from a Hydra config."""

from batteryct.training.run import train

__all__ = ["train"]
