"""Safe output names and paths, unique names, atomic no-clobber writes."""

from __future__ import annotations

import os
import re

import pytest
from pyconv_monai.utils import TEMP_PREFIX, UniqueNames, atomic_write, output_path, remove_stale_temps, safe_name

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("../../x", "x"),
        ("..\\..\\x", "x"),
        ("/etc/passwd", "etc_passwd"),
        ("CT Body 3.0", "CT_Body_3.0"),
        ("Müller^Jörg", "Muller_Jorg"),
        ("a\x00b\nc", "a_b_c"),
        ("..", "case"),
        ("", "case"),
        (None, "case"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        (".hidden", "hidden"),
    ],
)
def test_safe_name_of_hostile_values(text, expected):
    name = safe_name(text)
    assert name == expected
    assert SAFE.match(name.lstrip("_")) and ".." not in name and "/" not in name and "\\" not in name


def test_safe_name_is_bounded():
    assert len(safe_name("x" * 500, max_length=20)) == 20
    assert safe_name("a" * 30 + "..." + "b", max_length=31) == "a" * 30  # no trailing dot after the cut


def test_unique_names_are_case_insensitive():
    unique = UniqueNames()
    assert [unique(n) for n in ["a", "A", "a", "b"]] == ["a", "A_2", "a_3", "b"]


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "x\x00y"])
def test_output_path_refuses_anything_but_one_file_name(tmp_path, bad):
    with pytest.raises(ValueError, match="refusing output file name"):
        output_path(tmp_path, bad)


def test_output_path_stays_in_the_resolved_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    path = output_path(tmp_path / "link", "x_seg.nii.gz")
    assert path == str(real.resolve() / "x_seg.nii.gz")


def test_atomic_write_never_clobbers(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("original")
    with pytest.raises(FileExistsError):
        with atomic_write(target) as tmp:
            open(tmp, "w").write("new")
    assert target.read_text() == "original"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TEMP_PREFIX)]
    with atomic_write(target, overwrite=True) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(TEMP_PREFIX)
        assert tmp.endswith(".txt")  # libraries choose the format by the extension
        open(tmp, "w").write("new")
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "b.nii.gz"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(target) as tmp:
            open(tmp, "w").write("partial")
            raise RuntimeError("killed while writing")
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_write(target):
            pass


def test_atomic_write_replaces_a_link_instead_of_following_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").symlink_to(outside)
    with pytest.raises(FileExistsError):  # a (even dangling) link counts as an existing output
        with atomic_write(out / "x.txt") as tmp:
            open(tmp, "w").write("mask")
    with atomic_write(out / "x.txt", overwrite=True) as tmp:
        open(tmp, "w").write("mask")
    assert outside.read_text() == "not yours"
    assert not (out / "x.txt").is_symlink() and (out / "x.txt").read_text() == "mask"


def test_remove_stale_temps_removes_only_ours(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}abc-x.nii.gz").write_text("left by a killed run")
    (tmp_path / "x_seg.nii.gz").write_text("a result")
    (tmp_path / ".other").write_text("not ours")
    removed = remove_stale_temps(tmp_path)
    assert [os.path.basename(p) for p in removed] == [f"{TEMP_PREFIX}abc-x.nii.gz"]
    assert sorted(os.listdir(tmp_path)) == [".other", "x_seg.nii.gz"]
    assert remove_stale_temps(tmp_path / "missing") == []


def test_safe_name_default():
    assert safe_name("../..", default="series") == "series"
    assert safe_name("/", default="") == ""
