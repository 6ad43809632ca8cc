from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from batteryct.io import write_zarr
from batteryct.series import Cell, ManifestError, Scan, Series, load_series, save_series


def _volume(path: Path, data: np.ndarray) -> Path:
    write_zarr(path, data)
    return path


def _manifest(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    _volume(tmp_path / "img" / "a.zarr", data)
    _volume(tmp_path / "img" / "b.zarr", data + 1)
    raw: dict[str, Any] = {
        "format": "batteryct-series/1",
        "name": "test",
        "cell": {
            "voxel_size_um": 1.33,
            "active_area_cm2": 0.5,
            "current_density_mA_cm2": 1.5,
            "plating_side": "end",
        },
        "classes": {0: "background", 1: "li"},
        "scans": [
            {"id": "a", "image": "img/a.zarr", "minutes": 0, "phase": "pristine"},
            {
                "id": "b",
                "image": "img/b.zarr",
                "minutes": 10,
                "phase": "charge",
                "current_mA": 0.75,
            },
        ],
    }
    raw.update(changes)
    return raw


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "series.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path, _manifest(tmp_path))
    monkeypatch.chdir("/")  # the reader's working directory must not matter
    series = load_series(path)
    assert series.scans[1].image == tmp_path.resolve() / "img" / "b.zarr"
    assert series.open_image(series.scans[1])[0, 0, 0] == 1
    assert series.scan("b").current_mA == 0.75
    assert series.cell.plating_side == "end"


def test_round_trip_preserves_everything(tmp_path: Path) -> None:
    labels = _volume(tmp_path / "lab.zarr", np.zeros((4, 5, 6), np.uint8))
    series = Series(
        cell=Cell(voxel_size_um=2.0, axes=("rows", "depth", "cols"), segment_min=10.0),
        classes={0: "background", 3: "pit"},
        scans=[
            Scan("s0", tmp_path / "img" / "a.zarr", 0.0, "pristine"),
            Scan(
                "s1",
                tmp_path / "img" / "b.zarr",
                12.5,
                "discharge",
                current_mA=0.5,
                labels=labels,
                labels_gt=labels,
                labelled_slices={"depth": (1, 3), "cols": (2,)},
            ),
        ],
        hand_label_values={1: "background", 4: "pit"},
        name="round",
        metadata={"note": "kept"},
    )
    _manifest(tmp_path)  # writes the image volumes
    out = save_series(series, tmp_path / "out" / "series.yaml")
    again = load_series(out)
    assert again.cell == series.cell
    assert again.classes == series.classes
    assert again.hand_label_values == series.hand_label_values
    assert again.scans == series.scans
    assert again.metadata == {"note": "kept"}
    # Paths outside the manifest's folder are written absolute.
    raw = yaml.safe_load(out.read_text())
    assert raw["scans"][1]["labels"] == str(labels.resolve())


def test_paths_inside_the_manifest_folder_are_written_relative(tmp_path: Path) -> None:
    path = _write(tmp_path, _manifest(tmp_path))
    series = load_series(path)
    save_series(series, tmp_path / "copy.yaml")
    raw = yaml.safe_load((tmp_path / "copy.yaml").read_text())
    assert raw["scans"][0]["image"] == "img/a.zarr"


def test_axes_declare_the_stored_order_and_volumes_open_canonically(tmp_path: Path) -> None:
    canonical = np.random.default_rng(0).integers(0, 255, (4, 5, 6), dtype=np.uint8)
    stored = canonical.transpose(1, 2, 0)  # stored as (rows, cols, depth)
    _volume(tmp_path / "t.zarr", stored)
    raw = _manifest(tmp_path)
    raw["cell"]["axes"] = ["rows", "cols", "depth"]
    raw["scans"] = [{"id": "t", "image": "t.zarr", "minutes": 0, "phase": "pristine"}]
    series = load_series(_write(tmp_path, raw))
    volume = series.open_image(series.scans[0])
    assert volume.shape == canonical.shape
    np.testing.assert_array_equal(volume[:, 2, :], canonical[:, 2, :])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"phase": "charging"}, r"scans\[1\] \(scan 'b'\)\.phase: is 'charging'; expected one of"),
        ({"minutes": -5}, r"scan 'b'\)\.minutes: is -5"),
        ({"image": "img/missing.zarr"}, r"scan 'b'\)\.image: .*missing\.zarr does not exist"),
        ({"current_mA": "lots"}, r"scan 'b'\)\.current_mA: is 'lots'; expected a finite number"),
        ({"colour": "red"}, r"scan 'b'\)\.colour: unknown field"),
        ({"labelled_slices": {"z": [1]}}, r"labelled_slices\.z: unknown axis"),
    ],
)
def test_scan_errors_name_the_field_and_the_scan(tmp_path: Path, change, expected) -> None:
    raw = _manifest(tmp_path)
    raw["scans"][1].update(change)
    with pytest.raises(ManifestError, match=expected) as info:
        load_series(_write(tmp_path, raw))
    assert str(tmp_path / "series.yaml") in str(info.value)


@pytest.mark.parametrize(
    ("cell_change", "expected"),
    [
        ({"voxel_size_um": None}, r"cell\.voxel_size_um: is required"),
        ({"voxel_size_um": 0}, r"cell\.voxel_size_um: is 0; expected a number > 0"),
        ({"plating_side": "top"}, r"cell\.plating_side: is 'top'; expected 'start'"),
        ({"axes": ["depth", "rows", "rows"]}, r"cell\.axes: .*expected a permutation"),
        ({"voxel_size": 1.0}, r"cell\.voxel_size: unknown field"),
    ],
)
def test_cell_errors_name_the_field(tmp_path: Path, cell_change, expected) -> None:
    raw = _manifest(tmp_path)
    raw["cell"].update(cell_change)
    raw["cell"] = {k: v for k, v in raw["cell"].items() if v is not None}
    with pytest.raises(ManifestError, match=expected):
        load_series(_write(tmp_path, raw))


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    raw = _manifest(tmp_path)
    raw["scans"][0]["phase"] = "x"
    raw["scans"][1]["id"] = "a"
    raw["scans"][1]["phase"] = "charge"
    raw["scans"].append({"id": "c", "image": "img/a.zarr", "minutes": 5, "phase": "charge"})
    with pytest.raises(ManifestError) as info:
        load_series(_write(tmp_path, raw))
    message = str(info.value)
    assert "scans[0] (scan 'a').phase" in message
    assert "appears twice" in message
    assert "list scans in time order" in message


def test_missing_manifest_and_folder_hint(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_series(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match=r"point at its series\.yaml"):
        load_series(tmp_path)


def test_hand_label_values_must_not_use_zero(tmp_path: Path) -> None:
    raw = _manifest(tmp_path, hand_labels={"unlabelled": 0, "values": {0: "background"}})
    with pytest.raises(ManifestError, match=r"hand_labels\.values\.0: 0 is reserved"):
        load_series(_write(tmp_path, raw))


def test_unknown_scan_id_lists_the_ids(tmp_path: Path) -> None:
    series = load_series(_write(tmp_path, _manifest(tmp_path)))
    with pytest.raises(ManifestError, match=r"no scan with id 'zz'; ids: \['a', 'b'\]"):
        series.scan("zz")
