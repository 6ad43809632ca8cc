"""The analysis output folder: which analysis owns it, and whether that analysis finished.

`analysis.json` names the owner (the manifest and a fingerprint of the settings) and says whether
its outputs are complete: it is written with `"complete": false` before the first output is
replaced and rewritten with `"complete": true` after the last one. A folder of the same analysis,
finished or interrupted, is simply redone; any other non-empty folder is refused unless the user
asks to overwrite it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batteryct.analysis.errors import AnalysisError
from batteryct.outfolder import write_json_atomic

if TYPE_CHECKING:
    from batteryct.analysis.run import AnalysisSettings

RECORD = "analysis.json"
EXECUTION_ONLY = ("workers", "engine")
"""Settings that change how the analysis runs, not what it computes: not in the fingerprint."""


def analysis_record(series_path: Path | None, settings: AnalysisSettings) -> dict[str, Any]:
    """The identity of an analysis: its manifest and a fingerprint of that plus the settings."""
    what = {k: v for k, v in asdict(settings).items() if k not in EXECUTION_ONLY}
    manifest = str(series_path) if series_path else None
    text = json.dumps({"series": manifest, "settings": what}, sort_keys=True, default=str)
    return {"series": manifest, "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16]}


def claim_analysis_folder(
    out: str | os.PathLike[str], record: dict[str, Any], overwrite: bool
) -> Path:
    """Create `out` if needed and check it can hold this analysis, before any long work.

    Refused (AnalysisError): a path that cannot be a writable folder, and unless `overwrite`, a
    non-empty folder that holds no analysis or another one (another manifest or other settings).
    """
    out = Path(out)
    if not overwrite:
        _refuse_foreign(out, record)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise AnalysisError(
            f"cannot write the analysis output folder {out}: {err.strerror or err}; "
            f"choose another 'out=' or fix its permissions"
        ) from None
    return out


def _refuse_foreign(out: Path, record: dict[str, Any]) -> None:
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        owner = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        owner = None
    if isinstance(owner, dict) and owner.get("fingerprint") == record["fingerprint"]:
        return
    if not isinstance(owner, dict):
        held = "files that are not an analysis of batteryct (no readable analysis.json)"
    elif owner.get("series") != record["series"]:
        held = f"the analysis of another series ({owner.get('series')})"
    else:
        held = "an analysis of this series made with other settings"
    raise AnalysisError(
        f"{out} already holds {held}; choose another out= or pass overwrite=true to replace it"
    )


def mark_started(out: Path, record: dict[str, Any]) -> None:
    """Say the folder's outputs are being replaced: until `mark_complete`, it is unfinished."""
    write_json_atomic(out / RECORD, {**record, "complete": False})


def mark_complete(out: Path, record: dict[str, Any], written: dict[str, Path]) -> None:
    """Say every output is written, and list them (paths relative to `out`)."""
    outputs = sorted(str(path.relative_to(out)) for path in written.values())
    write_json_atomic(out / RECORD, {**record, "complete": True, "outputs": outputs})
