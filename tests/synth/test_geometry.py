from itertools import pairwise

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
    Material,
    SyntheticCell,
)
from tests.conftest import SMALL_SHAPE, SMALL_VOXEL_UM

GEOMETRY = CellGeometry()


@pytest.fixture(scope="module")
def cell() -> SyntheticCell:
    return SyntheticCell(GEOMETRY, SMALL_SHAPE, SMALL_VOXEL_UM, seed=1)


def _counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=7)


def test_every_process_moves_exactly_its_share_of_the_li(cell: SyntheticCell) -> None:
    """Dense Li leaves the stripping electrode voxel for voxel; porous phases take Li / solid
    fraction voxels, so the Li they hold matches the moved Li within one voxel's rounding."""
    charged = [0.0, 500.3, 1000.6, 1500.9]
    discharged = [0.0, 500.3, 1000.6, 1500.9]
    steps = cell.schedule(charged, discharged)
    pristine = _counts(cell.compose(steps[0])[0])
    dendrite_phi = GEOMETRY.dendrite_solid_fraction
    for k, moved in enumerate(charged):
        counts = _counts(cell.compose(steps[k])[0])
        deposit_phi = steps[k].deposited_solid_fraction
        plated_li = counts[DEPOSITED] * deposit_phi + counts[DENDRITE] * dendrite_phi
        assert plated_li == pytest.approx(moved, abs=deposit_phi / 2 + 1e-9)
        assert pristine[STRIPPING_ELECTRODE] - counts[STRIPPING_ELECTRODE] == round(moved)
        assert counts[PLATING_ELECTRODE] == pristine[PLATING_ELECTRODE]  # swelling moves, keeps
    end = steps[len(charged) - 1]
    end_counts = _counts(cell.compose(end)[0])
    for j, moved in enumerate(discharged[1:], start=1):
        counts = _counts(cell.compose(steps[len(charged) - 1 + j])[0])
        plating_loss_li = (
            (end_counts[DEPOSITED] - counts[DEPOSITED]) * end.deposited_solid_fraction
            + (end_counts[DENDRITE] - counts[DENDRITE]) * dendrite_phi
            + pristine[PLATING_ELECTRODE]
            - counts[PLATING_ELECTRODE]
        )
        assert plating_loss_li == pytest.approx(moved, abs=1.0)
        step = steps[len(charged) - 1 + j]
        assert counts[REDEPOSITED] == step.pit_filled + step.porous_layer
        redeposited_li = (
            step.pit_filled * GEOMETRY.pit_fill_solid_fraction
            + step.porous_layer * GEOMETRY.redeposited_solid_fraction
        )
        assert redeposited_li == pytest.approx(moved, abs=GEOMETRY.redeposited_solid_fraction)
        # redeposited Li in pits turns pit voxels into redeposited ones
        assert counts[PIT] + counts[REDEPOSITED] >= end_counts[PIT]


def test_the_deposit_densifies_while_it_grows(cell: SyntheticCell) -> None:
    """The paper's explanation of slowing growth: new Li fills the pores of the earlier
    deposit, so its visible volume grows fastest early and its solid fraction rises."""
    charged = [k * 300.0 for k in range(13)]
    steps = cell.schedule(charged, [0.0])
    grown = [s.deposited_grown for s in steps]
    increments = np.diff(grown)
    assert increments[0] > increments[-1] > 0
    fractions = [s.deposited_solid_fraction for s in steps[1:]]
    assert all(a < b for a, b in pairwise(fractions))
    assert fractions[-1] == pytest.approx(GEOMETRY.deposited_solid_fraction, abs=0.01)


def test_porous_li_is_a_partial_volume_of_li_and_pores(cell: SyntheticCell) -> None:
    steps = cell.schedule([0.0, 3000.0], [0.0, 1500.0])
    for counts in (steps[1], steps[2]):
        _, material = cell.compose(counts)
        fraction = cell.li_fraction(material, counts)
        assert np.all(fraction[material == Material.LITHIUM] == 1)
        assert np.all(fraction[np.isin(material, (Material.ELECTROLYTE, Material.VOID))] == 0)
        expected = {
            Material.DEPOSITED_LI: counts.deposited_solid_fraction,
            Material.DENDRITE_LI: GEOMETRY.dendrite_solid_fraction,
            Material.POROUS_LI: GEOMETRY.redeposited_solid_fraction,
            Material.PIT_FILL_LI: GEOMETRY.pit_fill_solid_fraction,
        }
        for kind, solid in expected.items():
            values = fraction[material == kind]
            if values.size < 200:
                continue
            # the mean follows the solid fraction; voxels differ (texture), in eighths
            assert values.mean() == pytest.approx(solid, abs=0.06)
            assert values.std() > 0.1
            np.testing.assert_allclose(values * 8, np.round(values * 8), atol=1e-6)


def test_sets_are_nested_over_time(cell: SyntheticCell) -> None:
    steps = cell.schedule([0.0, 400.0, 800.0], [0.0, 400.0, 800.0])
    pits = [cell.compose(s)[0] == PIT for s in steps[:3]]
    assert np.all(pits[1] <= pits[2]) and pits[1].sum() < pits[2].sum()


def test_composition_is_repeatable(cell: SyntheticCell) -> None:
    steps = cell.schedule([0.0, 600.0], [0.0, 600.0])
    first = cell.compose(steps[2])[0]
    cell.compose(steps[1])
    np.testing.assert_array_equal(cell.compose(steps[2])[0], first)


def test_too_thin_a_volume_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"depth of 20 voxels .* cannot hold the cell"):
        SyntheticCell(CellGeometry(), (20, 32, 32), 2.5, seed=0)


def test_too_much_li_for_the_cell_is_a_clear_error(cell: SyntheticCell) -> None:
    with pytest.raises(ConfigError, match="lower the efficiency"):
        cell.schedule([0.0, 10_000_000.0], [0.0])


@pytest.mark.parametrize(
    ("field", "value"),
    [("deposited_solid_fraction", 0.0), ("pit_share", 1.5), ("deposit_densification", -1.0)],
)
def test_settings_out_of_range_name_the_setting(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"geometry\.{field}"):
        SyntheticCell(CellGeometry(**{field: value}), SMALL_SHAPE, SMALL_VOXEL_UM, seed=0)
