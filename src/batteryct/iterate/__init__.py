"""The paper's iterative training as one resumable loop (`iterate.py`)."""

from batteryct.iterate.annotator import CorrectionSettings
from batteryct.iterate.loop import run_loop

__all__ = ["CorrectionSettings", "run_loop"]
