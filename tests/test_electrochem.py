import pytest

from batteryct.electrochem import faraday_segment


def test_faraday_segment_matches_the_papers_cell() -> None:
    # 1.5 mA/cm² on 0.5 cm² for 10 min (DOMAIN.md): 0.125 mAh -> 6.064e7 µm³ -> 1.213 µm.
    segment = faraday_segment(1.5, 0.5, 10.0)
    assert segment.capacity_mAh == pytest.approx(0.125)
    assert segment.mass_g == pytest.approx(0.125 / 3860.0)
    assert segment.volume_um3 == pytest.approx(6.064e7, rel=1e-3)
    assert segment.thickness_um == pytest.approx(1.213, rel=1e-3)


def test_faraday_segment_scales_linearly_with_current_and_time() -> None:
    base = faraday_segment(1.5, 0.5, 10.0)
    double = faraday_segment(3.0, 0.5, 20.0)
    assert double.volume_um3 == pytest.approx(4 * base.volume_um3)
    # Thickness is per active area: a larger cell at the same density gets the same layer.
    assert faraday_segment(1.5, 2.0, 10.0).thickness_um == pytest.approx(base.thickness_um)


def test_faraday_segment_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError, match="active area"):
        faraday_segment(1.5, 0.0, 10.0)
