"""Output folders of long, resumable jobs (synth.py, prepare.py, predict.py).

A folder is complete when its final record exists with the job's settings fingerprint, in
progress when its progress file has that fingerprint, and anything else is refused unless the
user asks to overwrite it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from batteryct.errors import ConfigError


def claim_output_folder(
    out: Path, fingerprint: str, record: str, progress: str, what: str, overwrite: bool
) -> dict[str, Any] | None:
    """None when `out` already holds this job's finished result (series.yaml and `record` with
    the same fingerprint); the saved progress of an interrupted run with the same settings; or
    a fresh state `{"fingerprint": ...}` for an empty (or, with `overwrite`, emptied) folder."""
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
