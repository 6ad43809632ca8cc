"""What prediction reads, checked for every scan before the first one is segmented."""

from __future__ import annotations

from dataclasses import dataclass

from batteryct.errors import BatteryCTError, ConfigError
from batteryct.greyvalues import GreyScale
from batteryct.io import Volume
from batteryct.predict.checkpoint import TrainedModel
from batteryct.predict.engine import InferenceSettings, check_window_fits
from batteryct.predict.postprocess import PostProcessSettings, check_postprocess
from batteryct.predict.volume import AXIS_INDEX
from batteryct.series import Scan, Series


@dataclass(frozen=True)
class ScanInput:
    """A scan's image, opened, and how its grey values map to the model's 0-1."""

    scan: Scan
    image: Volume
    scale: GreyScale


def check_inputs(
    series: Series,
    scans: list[Scan],
    model: TrainedModel,
    axes: tuple[str, ...],
    inference: InferenceSettings,
    postprocess: PostProcessSettings,
) -> dict[str, ScanInput]:
    """Open every scan and check that it can be segmented: a readable 3D volume, slices at
    least one window large along `axes`, grey values on the model's scale; and that the model's
    classes can be post-processed. All problems are reported together in one ConfigError."""
    check_postprocess(model.class_names, series.cell, postprocess)
    window = (inference.window[0], inference.window[1]) if inference.window else model.patch_size
    inputs: dict[str, ScanInput] = {}
    problems: list[str] = []
    for scan in scans:
        try:
            inputs[scan.id] = _check_scan(series, scan, model, axes, window)
        except BatteryCTError as err:
            problems.append(str(err))
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} scans cannot be segmented:\n  " + "\n  ".join(problems))
    return inputs


def _check_scan(
    series: Series,
    scan: Scan,
    model: TrainedModel,
    axes: tuple[str, ...],
    window: tuple[int, int],
) -> ScanInput:
    try:
        image = series.open_image(scan)
    except BatteryCTError as err:
        raise ConfigError(f"scan {scan.id!r}: {err}") from err
    where = f"scan {scan.id!r} ({image.path})"
    if 1 in image.shape:
        raise ConfigError(
            f"{where} is 2D ({' × '.join(map(str, image.shape))} voxels); a scan must be a 3D "
            "volume: a TIFF stack, a folder of TIFF slices or a 3D zarr array"
        )
    for axis in axes:
        height, width = (s for i, s in enumerate(image.shape) if i != AXIS_INDEX[axis])
        check_window_fits(window, height, width, f"{where} along {axis}")
    return ScanInput(scan, image, model.grey_scale(image, where))
