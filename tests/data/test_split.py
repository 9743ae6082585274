"""Reproducible 80/20 splits with no case or group on both sides."""

import random

import pytest
from pyconv_monai.data import load_datalist, split_datalist


@pytest.fixture(scope="module")
def lung(shared_data):
    return load_datalist(shared_data / "lung_ct_2d")


def _cases(items):
    return [d["case"] for d in items]


def test_80_20_reproducible_and_disjoint(lung):
    train, val = split_datalist(lung, val_fraction=0.2, seed=0)
    assert len(val) == 48 and len(train) == 192
    assert not set(_cases(train)) & set(_cases(val))
    assert sorted(_cases(train) + _cases(val)) == sorted(_cases(lung))
    assert split_datalist(lung, seed=0) == (train, val)
    assert set(_cases(split_datalist(lung, seed=1)[1])) != set(_cases(val))
    assert _cases(train) == [c for c in _cases(lung) if c in set(_cases(train))]  # datalist order kept


def test_split_does_not_depend_on_datalist_order(lung):
    shuffled = list(lung)
    random.Random(3).shuffle(shuffled)
    assert set(_cases(split_datalist(shuffled, seed=5)[1])) == set(_cases(split_datalist(lung, seed=5)[1]))


def test_group_key_keeps_groups_together(shared_data, lung):
    liver = load_datalist(shared_data / "liver_ct_2d")
    train, val = split_datalist(liver, group_key="subset")  # two groups: one goes to validation
    assert {d["subset"] for d in val} == {"val"} and len(val) == 18
    blocks = lambda d: int(d["case"].split("_")[1]) // 20  # noqa: E731  runs of 20 neighbouring slices
    train, val = split_datalist(liver, group_key=blocks, seed=2)
    assert not {blocks(d) for d in train} & {blocks(d) for d in val}
    assert 0.15 < len(val) / len(liver) < 0.25
    isbi = load_datalist(shared_data / "isbi2012_em")
    train, val = split_datalist(isbi, group_key="volume")  # one volume cannot be split by volume: all train
    assert (len(train), len(val)) == (25, 0)


def test_two_groups_give_one_each():
    items = [{"case": f"c{i}", "volume": "a" if i < 7 else "b"} for i in range(10)]
    train, val = split_datalist(items, val_fraction=0.2, group_key="volume")
    assert {d["volume"] for d in val} == {"b"} and len(train) == 7


def test_no_validation_and_errors(lung):
    train, val = split_datalist(lung, val_fraction=0.0)
    assert val == [] and len(train) == 240
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_datalist(lung, val_fraction=1.0)
    with pytest.raises(ValueError, match="empty datalist"):
        split_datalist([])
    with pytest.raises(ValueError, match="item 0 has no 'case' key"):
        split_datalist([{"image": "a"}, {"image": "b"}])
