"""Run a root entry point (`train.py`, `predict.py`, ...) in the test process, as its command.

The script runs as `__main__` with `sys.argv` set, so Hydra parses the same command line, composes
the same config and runs the same task as `python <script> <args>` would; what differs is only
the process, which saves a new interpreter's imports (about 10 s of torch and Lightning on a
2-core machine). Tests of what only a process shows (a kill, DDP ranks, jobs side by side) start
real subprocesses instead.
"""

from __future__ import annotations

import io
import logging
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Finished:
    """What a finished command left: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_entry_point(script: str, *args: str, cwd: Path) -> Finished:
    """`python <script> <args>` in `cwd` (with BATTERYCT_ROOT there), run in this process.

    The root logger's handlers and level, which Hydra's job logging replaces, are restored after.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    returncode = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("BATTERYCT_ROOT", str(cwd))
        patch.setattr(sys, "argv", [str(ROOT / script), *args])
        try:
            with redirect_stdout(stdout), redirect_stderr(stderr):
                runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code
            returncode = code if isinstance(code, int) else (0 if code is None else 1)
        finally:
            for handler in root_logger.handlers:
                if handler not in handlers:
                    handler.close()
            root_logger.handlers[:] = handlers
            root_logger.setLevel(level)
    return Finished(returncode, stdout.getvalue(), stderr.getvalue())
