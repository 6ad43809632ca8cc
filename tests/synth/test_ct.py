import numpy as np
import pytest
from skimage.transform import iradon, radon

from batteryct.synth.ct import CTSettings, ParallelBeamProjector, quantise, simulate_scan
from batteryct.synth.geometry import Material


def _phantom() -> np.ndarray:
    rows, cols = np.mgrid[:40, :70]
    image = np.zeros((40, 70), np.float32)
    image[(rows - 20) ** 2 + (cols - 30) ** 2 < 12**2] = 1.0
    image[5:12, 45:62] = 0.5
    return image


def test_projection_preserves_mass_at_every_angle() -> None:
    image = _phantom()
    sino = ParallelBeamProjector(image.shape, 30).project(image[None])[0]
    np.testing.assert_allclose(sino.sum(axis=1), image.sum(), rtol=1e-5)


def test_projector_and_fbp_agree_with_scikit_image() -> None:
    image = _phantom()
    projector = ParallelBeamProjector(image.shape, 120)
    ours = projector.reconstruct(projector.project(image[None]), "ramp")[0]
    size = 84  # scikit-image wants a square image; embed ours in the middle
    square = np.zeros((size, size), np.float32)
    square[22:62, 7:77] = image
    angles = np.rad2deg(projector.angles_rad)
    theirs = iradon(radon(square, angles, circle=False), angles, circle=False, output_size=size)
    theirs = theirs[22:62, 7:77]
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.995
    assert np.abs(ours - theirs).mean() < 0.02
    # and both recover the phantom's values inside its shapes
    assert ours[16:24, 26:34].mean() == pytest.approx(1.0, abs=0.02)
    assert ours[7:10, 48:58].mean() == pytest.approx(0.5, abs=0.03)


def test_simulated_scan_has_noise_and_the_expected_contrast_order() -> None:
    material = np.full((24, 8, 40), Material.ELECTROLYTE, np.uint8)
    material[:8] = Material.LITHIUM
    material[16:] = Material.VOID
    image = simulate_scan(material, 2.5, CTSettings(), np.random.default_rng(0))
    assert image.dtype == np.uint8 and image.shape == material.shape
    inner = (slice(None), slice(None), slice(8, 32))
    li, lyte, void = (
        image[inner][rows].astype(float) for rows in (np.s_[2:6], np.s_[10:14], np.s_[18:22])
    )
    assert void.mean() < li.mean() < lyte.mean()
    assert lyte.std() > 1.0  # photon noise is there


def test_quantise_maps_the_window_to_the_full_range() -> None:
    settings = CTSettings(dtype="uint16", window_per_cm=(0.0, 1.0))
    values = quantise(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), settings)
    assert values.dtype == np.uint16
    assert values.tolist() == [0, 0, 32768, 65535, 65535]
