"""The README's set-up lines: install as CI does, the main job on the embedded CT series, the test command."""

from __future__ import annotations

import csv
import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EMBEDDED_DATA, REPO

LIVER_LABEL = 5  # TotalSegmentator v2 "total": 5 is the liver (data/README.md)
README = REPO / "README.md"
REFERENCE = EMBEDDED_DATA / "ct_dicom_totalseg" / "labels" / "example_seg_dicom.nii.gz"


def readme_lines() -> list[str]:
    """The first fenced bash block of README.md, one command per line."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def main_job() -> list[str]:
    """The README's second line as an argument list: ``pyconv-monai segment IN OUT --bundle NAME``."""
    argv = shlex.split(readme_lines()[1])
    assert argv[:2] == ["pyconv-monai", "segment"], argv
    return argv


def with_output(argv: list[str], out: Path) -> list[str]:
    """``argv`` writing to ``out`` instead of the README's folder, run by this interpreter's console script."""
    positional = [i for i, a in enumerate(argv) if i > 1 and not a.startswith("-") and not argv[i - 1].startswith("--")]
    assert len(positional) == 2, argv  # IN and OUT
    argv = list(argv)
    argv[positional[1]] = str(out)
    script = Path(sys.executable).parent / "pyconv-monai"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "pyconv_monai.cli"]
    return head + argv[1:]


def test_readme_lines_install_run_the_main_job_on_embedded_data_and_test():
    lines = readme_lines()
    ci = (REPO / ".ci" / "run").read_text()
    assert lines[0] in ci.splitlines(), "README line 1 is not what .ci/run installs with"
    assert lines[2] == "python -m pytest tests" and lines[2] in ci.splitlines()
    argv = main_job()
    series = REPO / argv[2]
    assert series.is_dir() and series.resolve().is_relative_to(EMBEDDED_DATA), series
    sums = (EMBEDDED_DATA / "ct_dicom_totalseg" / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split("  ", 1)) for line in sums if line)
    assert len([n for n in listed if n.startswith("dicom/")]) == 20
    for name, digest in listed.items():  # the embedded files are the documented ones, unchanged
        assert hashlib.sha256((EMBEDDED_DATA / "ct_dicom_totalseg" / name).read_bytes()).hexdigest() == digest, name
    out = Path(argv[3])
    assert not out.is_absolute() and out.parts[0] not in ("data", "bundles", "docs", "pyconv_monai", "tests")
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert f"/{out.parts[0]}/" in ignored, f"the main job writes to {out}, which git does not ignore"


@pytest.fixture(scope="module")
def main_job_run(tmp_path_factory) -> tuple[Path, list[str], str]:
    """The README's second line, run from the repository root into a fresh folder."""
    out = tmp_path_factory.mktemp("main_job") / "liver_ct"
    cmd = with_output(main_job(), out)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out, cmd, done.stdout + done.stderr


@pytest.mark.slow
def test_main_job_writes_mask_dicom_seg_and_a_plausible_liver_volume(main_job_run):
    """~2 minutes on 2 CPU cores: 20 slices of 512x512 through PyConvU-Net."""
    import nibabel as nib
    import pydicom
    from pyconv_monai.visualize.overlay import display_volume

    out, _, log = main_job_run
    assert sorted(p.name for p in out.iterdir()) == ["CT_Body_3.0_seg.dcm", "CT_Body_3.0_seg.nii.gz", "volumes.csv"]
    with open(out / "volumes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["status"], r["slices"]) for r in rows] == [("CT_Body_3.0", "ok", "20")], rows
    volume = float(rows[0]["volume_ml"])
    assert f"{volume:.2f} mL" in log  # the volume the command prints is the one in volumes.csv
    mask_img = nib.load(out / "CT_Body_3.0_seg.nii.gz")
    mask = np.asarray(mask_img.dataobj) > 0
    assert mask.shape == (512, 512, 20)
    voxel_ml = abs(np.linalg.det(mask_img.affine[:3, :3])) / 1000
    assert volume == pytest.approx(mask.sum() * voxel_ml, rel=1e-4)
    # the liver is in these slices: compare with TotalSegmentator's liver label of the same scan (a model output,
    # not ground truth; it holds ~699 mL), on the same grid after reorientation
    ref_img = nib.load(REFERENCE)
    ref, _ = display_volume(np.asarray(ref_img.dataobj) == LIVER_LABEL, ref_img.affine)
    ours, _ = display_volume(mask, mask_img.affine)
    ref_ml = ref.sum() * voxel_ml
    assert 0.75 * ref_ml < volume < 1.25 * ref_ml, (volume, ref_ml)
    dice = 2 * (ours & ref).sum() / (ours.sum() + ref.sum())
    assert dice > 0.85, dice
    # the run the README shows is what this code computes (1 %: other CPUs may flip a few boundary voxels)
    shown = re.search(r"CT_Body_3\.0: 20 slice\(s\), \d+ foreground voxel\(s\), ([\d.]+) mL", README.read_text())
    assert shown and float(shown.group(1)) == pytest.approx(volume, rel=0.01), (shown, volume)
    seg = pydicom.dcmread(out / "CT_Body_3.0_seg.dcm")
    assert seg.Modality == "SEG" and int(seg.NumberOfFrames) > 0


@pytest.mark.slow
def test_main_job_run_again_overwrites_nothing_and_says_why(main_job_run):
    out, cmd, _ = main_job_run
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "earlier run" in done.stderr and "--overwrite" in done.stderr and "volumes.csv" in done.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == before


@pytest.mark.slow
def test_overlay_picture_of_the_main_job(main_job_run, tmp_path):
    from PIL import Image
    from pyconv_monai.visualize.overlay import main as overlay_main
    from pyconv_monai.visualize.overlay import write_overlay

    out, _, _ = main_job_run
    png = tmp_path / "overlay.png"
    series = REPO / main_job()[2]
    info = write_overlay(series, out / "CT_Body_3.0_seg.nii.gz", png, reference=REFERENCE, reference_value=LIVER_LABEL)
    assert info["mask_pixels"] > 0 and info["dice"] > 0.85
    # the README quotes the reference volume and the Dice this command prints (the Dice within 0.002: on another CPU
    # the int8 kernels flip a few boundary voxels, e.g. 0.925 on an AVX2-only EPYC against the README's 0.924)
    text = README.read_text()
    assert f"holds {info['reference_ml']:.1f} mL" in text
    shown = re.search(r"overlap with Dice ([\d.]+) over the volume", text)
    assert shown and float(shown.group(1)) == pytest.approx(info["dice"], abs=0.002), (shown, info["dice"])
    assert f"slice {info['slice']} of 20" in text
    with Image.open(png) as im:
        assert im.size == (2 * 512 + 4, 512) and im.mode == "RGB"
        right = np.asarray(im)[:, 516:]
    red = (right[..., 0] > 150) & (right[..., 1] < 120)
    assert red.sum() > 0.5 * info["mask_pixels"]  # the mask is drawn
    first = png.read_bytes()
    assert overlay_main([str(series), str(out / "CT_Body_3.0_seg.nii.gz"), str(png)]) == 2  # no clobber
    assert png.read_bytes() == first


def bundle_run_commands(text: str) -> list[str]:
    """Every ``monai.bundle run`` command of a Markdown text: fenced lines (continuations joined) and inline code."""
    commands = []
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    for block in fenced:
        commands += [line for line in block.replace("\\\n", " ").splitlines() if "monai.bundle run" in line]
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    commands += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose) if "monai.bundle run" in span]
    return commands


def test_bundle_commands_in_the_docs_say_where_the_bundle_is():
    """The configs' ``"bundle_root"`` is ``"."`` (the Model Zoo's convention): a documented ``monai.bundle run`` of a
    bundle config runs in the bundle folder (``--config_file configs/...``), or names the bundle with
    ``--bundle_root``, or names both folders the bundle root would give (``--ckpt_dir``, ``--output_dir``), so that
    its ``models/`` and ``eval/`` land where the text says."""
    docs = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "bundles").glob("*/docs/README.md"))]
    checked = 0
    for doc in docs:
        for command in bundle_run_commands(doc.read_text()):
            config = re.search(r"--config_file\s+(\S+)", command)
            if config is None:  # a fragment ("run training ... --pyconv_mode reference")
                continue
            checked += 1
            in_bundle_folder = re.match(r"""["'\[]*configs/""", config.group(1))
            named = "--bundle_root" in command or all(f"--{k} " in command for k in ("ckpt_dir", "output_dir"))
            assert in_bundle_folder or named, f"{doc.relative_to(REPO)}: {command}"
    assert checked >= 30, checked
