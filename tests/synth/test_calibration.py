"""The default synthetic cell is calibrated to the paper: its truth gives the paper's numbers,
and its structures are large enough to be seen (measured without the CT simulation)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import ndimage

from batteryct.synth import CellGeometry, CycleProtocol, SyntheticCell
from batteryct.synth.calibration import PAPER_VALUES, calibration_table, scan_measures
from batteryct.synth.generate import moved_li_voxels
from batteryct.synth.geometry import DENDRITE, DEPOSITED, PIT
from tests.training.helpers import ROOT

DEFAULTS = OmegaConf.load(ROOT / "conf" / "synth.yaml")
SHAPE = tuple(DEFAULTS.shape)
VOXEL_UM = float(DEFAULTS.voxel_size_um)
TOLERANCE = {  # absolute, in each quantity's unit
    "plating side, pristine (µm)": 1.5,
    "plating side, half cycle (µm)": 2.0,
    "stripping side, pristine (µm)": 1.5,
    "stripping side, half cycle (µm)": 2.0,
    "stripping side, full cycle (µm)": 2.5,
    "dendrite area, half cycle (%)": 5.0,
    "dendrite area, full cycle (%)": 4.0,
    "deposited Li area, half cycle (%)": 3.0,
    "deposited Li area, full cycle (%)": 1.0,
    "void area, full cycle (%)": 6.0,
    "gap growth during charge (µm)": 4.0,
}


@pytest.fixture(scope="module")
def cycle() -> dict[str, np.ndarray]:
    """True labels of the default cell (conf/synth.yaml) at pristine, half and full cycle."""
    protocol_settings = {k: v for k, v in DEFAULTS.protocol.items() if k != "_target_"}
    protocol = CycleProtocol(**protocol_settings)  # type: ignore[arg-type]
    geometry_settings = {k: v for k, v in DEFAULTS.geometry.items() if k != "_target_"}
    geometry = CellGeometry(**geometry_settings)  # type: ignore[arg-type]
    cell = SyntheticCell(geometry, SHAPE, VOXEL_UM, seed=int(DEFAULTS.seed))
    steps = cell.schedule(*moved_li_voxels(protocol, SHAPE, VOXEL_UM))
    half = protocol.n_charge
    return {
        name: cell.compose(steps[i])[0] for name, i in (("start", 0), ("half", half), ("end", -1))
    }


def test_the_truth_gives_the_papers_numbers(cycle: dict[str, np.ndarray]) -> None:
    measures = [scan_measures(cycle[k], VOXEL_UM, plating_at_end=True) for k in cycle]
    table = calibration_table(measures, half=1)
    assert set(table) == set(PAPER_VALUES) == set(TOLERANCE)
    for name, row in table.items():
        assert row["synthetic"] == pytest.approx(row["paper"], abs=TOLERANCE[name]), name


def test_structures_are_resolvable_at_half_cycle(cycle: dict[str, np.ndarray]) -> None:
    labels = cycle["half"]
    dendrite, deposit = labels == DENDRITE, labels == DEPOSITED
    # the deposited layer is at least 6 voxels thick wherever it is present
    thickness = deposit.sum(axis=0)
    assert np.percentile(thickness[thickness > 0], 5) >= 6
    components, n = ndimage.label(dendrite)
    assert n >= 10
    deposit_top = np.where(deposit.any(0), deposit.argmax(0), labels.shape[0])
    taller = 0
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        part = components[box] == index
        # at least 3 voxels across at every depth but the tip and the root, which the rough
        # electrode surface cuts (a plus sign at the least: its centre lies √2 from outside)
        inner = range(1, part.shape[0] - 1)
        widths = [ndimage.distance_transform_edt(part[d]).max() for d in inner]
        assert min(widths) >= np.sqrt(2) - 1e-6
        top = box[0].start
        taller += top < np.median(deposit_top[box[1:]])
    assert taller / n >= 0.9  # dendrites rise above the deposit
    pits, _ = ndimage.label(labels == PIT)
    inner = [
        box
        for box in ndimage.find_objects(pits)
        if box[1].start > 0
        and box[2].start > 0
        and box[1].stop < labels.shape[1]
        and box[2].stop < labels.shape[2]
    ]
    assert inner and min(box[0].stop - box[0].start for box in inner) >= 4
