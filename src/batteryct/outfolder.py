"""Output folders of long, resumable jobs (synth.py, prepare.py; predict.py has its own).

A folder is complete when its final record exists with the job's settings fingerprint, in
progress when its progress file has that fingerprint, and anything else is refused unless the
user asks to overwrite it - or, when the job says what finished work is, unless it is the
unfinished folder of a run with other settings that finished nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batteryct.errors import ConfigError

log = logging.getLogger(__name__)


def claim_output_folder(
    out: Path,
    fingerprint: str,
    record: str,
    progress: str,
    what: str,
    overwrite: bool,
    finished: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any] | None:
    """None when `out` already holds this job's finished result (series.yaml and `record` with
    the same fingerprint); the saved progress of an interrupted run with the same settings; or
    a fresh state `{"fingerprint": ...}` for an empty (or, with `overwrite`, emptied) folder.

    `finished` tells from a progress state whether its run finished any work; a folder whose
    run with other settings finished none (it failed early) is emptied and claimed afresh.
    """
    progress_file = out / progress
    record_file = out / record
    if not overwrite:
        if (out / "series.yaml").exists() and record_file.exists():
            if json.loads(record_file.read_text()).get("fingerprint") == fingerprint:
                return None
        elif progress_file.exists():
            state = json.loads(progress_file.read_text())
            if state.get("fingerprint") == fingerprint:
                return state
            if finished is not None and not finished(state):
                log.warning(
                    "%s holds %s with other settings that finished nothing; starting afresh",
                    out,
                    what,
                )
                overwrite = True
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{out} already holds other files or {what} made with other settings; "
                "choose another out= or pass overwrite=true to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return {"fingerprint": fingerprint}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file of its own and a rename: readers never see half a
    file, and processes writing the same file at once never mix their contents."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as stream:
            json.dump(data, stream, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
