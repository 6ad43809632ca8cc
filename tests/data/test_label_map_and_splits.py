import numpy as np
import pytest

from batteryct.classes import ANALYSIS_CLASSES
from batteryct.data import IGNORE_INDEX, LabelMap, SliceRef, split_slices
from batteryct.errors import ConfigError
from batteryct.series import Cell, Series

HAND = {cid + 1: name for cid, name in ANALYSIS_CLASSES.items()}


def _series() -> Series:
    return Series(Cell(1.0), dict(ANALYSIS_CLASSES), [], hand_label_values=HAND)


def test_label_map_turns_raw_values_into_class_ids_and_unlabelled_into_ignore() -> None:
    label_map = LabelMap(
        classes=["background", "li"],
        mapping={
            "background": "background",
            "dendrite": "li",
            "deposited_li": "li",
            "redeposited_li": "li",
            "pit": "ignore",
            "plating_electrode": "background",
            "stripping_electrode": "background",
        },
    )
    table = label_map.lookup_table(_series())
    raw = np.array([0, 1, 2, 3, 4, 5, 6, 7], np.uint8)
    assert label_map.apply(raw, table, "x").tolist() == [
        IGNORE_INDEX,
        0,
        1,
        IGNORE_INDEX,
        1,
        1,
        0,
        0,
    ]


def test_values_missing_from_the_map_are_listed() -> None:
    label_map = LabelMap(
        classes=["background", "pit"], mapping={"background": "background", "pit": "pit"}
    )
    table = label_map.lookup_table(_series())
    with pytest.raises(ConfigError, match=r"scan 'a'.*label values \[2, 9\] are missing"):
        label_map.apply(np.array([0, 1, 2, 3, 9, 9], np.uint8), table, "scan 'a'")


def test_raw_integer_keys_work_without_a_hand_label_table() -> None:
    series = Series(Cell(1.0), {0: "background"}, [], hand_label_values=None)
    label_map = LabelMap(classes=["a", "b"], mapping={1: "a", "2": "b"})
    table = label_map.lookup_table(series)
    assert label_map.apply(np.array([0, 1, 2], np.uint8), table, "x").tolist() == [
        IGNORE_INDEX,
        0,
        1,
    ]


def test_label_map_rejects_unknown_targets_and_sources() -> None:
    with pytest.raises(ConfigError, match=r"mapping\.pit is 'holes'"):
        LabelMap(classes=["background", "pit"], mapping={"pit": "holes"})
    with pytest.raises(ConfigError, match=r"label_map\.source"):
        LabelMap(classes=["a", "b"], source="painted")


def test_labels_gt_source_uses_the_class_table_without_an_unlabelled_value() -> None:
    label_map = LabelMap(
        classes=["background", "electrode"],
        mapping={
            name: ("electrode" if "electrode" in name else "background")
            for name in ANALYSIS_CLASSES.values()
        },
        source="labels_gt",
    )
    table = label_map.lookup_table(_series())
    assert label_map.apply(np.array([0, 5, 6, 3], np.uint8), table, "x").tolist() == [0, 1, 1, 0]


def _refs(n: int) -> list[SliceRef]:
    return [SliceRef(f"s{i % 5}", "rows", i) for i in range(n)]


def test_split_by_slice_follows_the_fractions_and_is_disjoint() -> None:
    split = split_slices(_refs(42), [0.72, 0.13, 0.15], seed=3)
    assert {k: len(v) for k, v in split.items()} == {"train": 30, "val": 6, "test": 6}
    sets = [set(v) for v in split.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(_refs(42))
    assert split == split_slices(_refs(42), [0.72, 0.13, 0.15], seed=3)
    assert split != split_slices(_refs(42), [0.72, 0.13, 0.15], seed=4)


def test_every_requested_split_gets_a_slice() -> None:
    split = split_slices(_refs(3), [0.85, 0.15], seed=0)
    assert len(split["train"]) == 2 and len(split["val"]) == 1


def test_too_few_slices_for_the_split_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="has 2 labelled slice"):
        split_slices(_refs(2), [0.72, 0.13, 0.15], seed=0)
    with pytest.raises(ConfigError, match=r"data\.split"):
        split_slices(_refs(5), [1.0], seed=0)


def test_split_with_contents_puts_every_class_in_every_part_when_it_can() -> None:
    refs = _refs(20)
    # class 3 lives on two slices only, class 4 on one: a plain shuffle often misses them
    contents = [{0, 1} for _ in refs]
    contents[7] |= {3}
    contents[13] |= {3}
    contents[2] |= {4}
    split = split_slices(refs, [0.8, 0.2], seed=0, contents=contents)
    classes_of = dict(zip(refs, contents, strict=True))
    train = set().union(*(classes_of[r] for r in split["train"]))
    val = set().union(*(classes_of[r] for r in split["val"]))
    assert {3} <= train and {3} <= val  # two slices: one each
    assert 4 in train  # a single slice goes to training, where it is learnt
    assert len(split["train"]) == 16 and len(split["val"]) == 4
    assert split == split_slices(refs, [0.8, 0.2], seed=0, contents=contents)


def _margin_map(**kwargs: object) -> LabelMap:
    names = ["background", "dendrite", "deposited_li"]
    return LabelMap(classes=names, mapping={n: n for n in names}, **kwargs)  # type: ignore[arg-type]


def _row(label_map: LabelMap, values: list[int]) -> list[int]:
    raw = np.array([values], np.uint8)  # hand values: 1 background, 2 dendrite, 4 deposited Li
    return label_map.apply(raw, label_map.lookup_table(_series()), "x")[0].tolist()


U = IGNORE_INDEX  # unlabelled, in the expected rows below


def test_margins_of_the_large_phases_are_mirrored_onto_the_small_ones() -> None:
    """Annotators leave background unpainted next to a dendrite; the dendrite's pixel across
    that margin is ignored too, so the unlabelled band straddles the true edge."""
    mirrored = _margin_map(margin_classes=["background"])
    assert _row(mirrored, [1, 1, 0, 2, 2, 2, 0, 1]) == [0, 0, U, U, 1, U, U, 0]
    assert _row(_margin_map(), [1, 1, 0, 2, 2, 2, 0, 1]) == [0, 0, U, 1, 1, 1, U, 0]
    # small phases that touch, and a stroke ending inside a dendrite, keep their labels
    assert _row(mirrored, [2, 2, 4, 4, 0, 0, 2]) == [1, 1, 2, 2, U, U, 1]
    wide = _margin_map(margin_classes=["background"], margin_px=2)
    assert _row(wide, [1, 0, 0, 2, 2, 2, 2]) == [0, U, U, U, U, 1, 1]


def test_margins_are_left_alone_in_full_labels_and_checked() -> None:
    names = ["background", "dendrite"]
    full = LabelMap(names, {n: n for n in names}, "labels_gt", margin_classes=["background"])
    raw = np.array([[0, 1, 1]], np.uint8)
    assert full.apply(raw, full.lookup_table(_series()), "x").tolist() == [[0, 1, 1]]
    with pytest.raises(ConfigError, match=r"margin_classes has \['electrode'\]"):
        _margin_map(margin_classes=["electrode"])
    with pytest.raises(ConfigError, match="margin_px is 0"):
        _margin_map(margin_classes=["background"], margin_px=0)
