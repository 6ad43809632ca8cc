import numpy as np
import pytest

from batteryct.errors import ConfigError
from batteryct.synth.geometry import (
    DENDRITE,
    DEPOSITED,
    PIT,
    PLATING_ELECTRODE,
    REDEPOSITED,
    STRIPPING_ELECTRODE,
    CellGeometry,
    SyntheticCell,
)


@pytest.fixture(scope="module")
def cell() -> SyntheticCell:
    return SyntheticCell(CellGeometry(), (48, 64, 64), 3.5, seed=1)


def _counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=7)


def test_every_process_gets_exactly_its_share_of_the_moved_li(cell: SyntheticCell) -> None:
    charged = [0, 500, 1000, 1500]
    discharged = [0, 500, 1000, 1500]
    steps = cell.schedule(charged, discharged)
    pristine = _counts(cell.compose(steps[0])[0])
    for k, moved in enumerate(charged):
        counts = _counts(cell.compose(steps[k])[0])
        assert counts[DEPOSITED] + counts[DENDRITE] == moved
        assert pristine[STRIPPING_ELECTRODE] - counts[STRIPPING_ELECTRODE] == moved
        assert counts[PLATING_ELECTRODE] == pristine[PLATING_ELECTRODE]  # swelling moves, keeps
    end_of_charge = _counts(cell.compose(steps[len(charged) - 1])[0])
    for j, moved in enumerate(discharged[1:], start=1):
        counts = _counts(cell.compose(steps[len(charged) - 1 + j])[0])
        plating_loss = (
            end_of_charge[DEPOSITED]
            + end_of_charge[DENDRITE]
            + pristine[PLATING_ELECTRODE]
            - counts[DEPOSITED]
            - counts[DENDRITE]
            - counts[PLATING_ELECTRODE]
        )
        assert plating_loss == moved
        gained = counts[REDEPOSITED]
        assert gained == moved
        # redeposited Li in pits turns pit voxels into redeposited ones
        assert counts[PIT] + counts[REDEPOSITED] >= end_of_charge[PIT]


def test_sets_are_nested_over_time(cell: SyntheticCell) -> None:
    steps = cell.schedule([0, 400, 800], [0, 400, 800])
    pits = [cell.compose(s)[0] == PIT for s in steps[:3]]
    assert np.all(pits[1] <= pits[2]) and pits[1].sum() < pits[2].sum()


def test_composition_is_repeatable(cell: SyntheticCell) -> None:
    steps = cell.schedule([0, 600], [0, 600])
    first = cell.compose(steps[2])[0]
    cell.compose(steps[1])
    np.testing.assert_array_equal(cell.compose(steps[2])[0], first)


def test_too_thin_a_volume_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"depth of 20 voxels .* cannot hold the cell"):
        SyntheticCell(CellGeometry(), (20, 32, 32), 2.5, seed=0)


def test_too_much_li_for_the_cell_is_a_clear_error(cell: SyntheticCell) -> None:
    with pytest.raises(ConfigError, match="lower the efficiency"):
        cell.schedule([0, 10_000_000], [0])
