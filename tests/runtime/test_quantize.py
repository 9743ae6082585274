"""int8 (issue 19): calibration records, QDQ models from them, their checks and cache, the bundles' shipped records."""

from __future__ import annotations

import builtins
import io
import json
import logging

import pytest
import torch
from pyconv_monai import cli
from pyconv_monai.runtime import (
    CalibrationError,
    available_runtimes,
    backends,
    calibrate_network,
    calibration_key,
    export_onnx,
    int8_runs_here,
    quantize_qdq,
    read_calibration,
    select_runtime,
    write_calibration,
)
from pyconv_monai.workflows.quantize import (
    CALIBRATION_FILE,
    MAX_DICE_CHANGE,
    QuantizationRejected,
    mean_dice,
    quantize_bundle,
)

from tests.conftest import REPO
from tests.runtime.test_runtime import FAST_RUNTIMES, _trained, _validation_slices, needs_runtime, small_net

BUNDLES = ["lung_ct_segmentation", "liver_ct_segmentation", "neuron_em_segmentation"]
pytestmark = needs_runtime
# the runtimes whose int8 select_runtime runs on this CPU (ONNX Runtime's is refused on x86 without VNNI)
INT8_RUNTIMES = [r for r in FAST_RUNTIMES if int8_runs_here(r)]


def _images(count: int, size: int = 64) -> list[torch.Tensor]:
    """Smooth positive images (as windowed CT is), ``(1, size, size)`` each."""
    torch.manual_seed(1)
    x = torch.nn.functional.avg_pool2d(torch.rand(count, 1, size, size), 5, 1, 2)
    return list(x)


@pytest.fixture(scope="module")
def record() -> dict:
    if "onnxruntime" not in available_runtimes():
        pytest.skip("calibration needs onnxruntime")
    return calibrate_network(small_net(), _images(4))


def test_mean_dice_of_logits_counts_a_slice_empty_in_both_as_one():
    """The Dice of the quantize rule and the benchmark's table (``logits > 0`` against ``label > 0.5``)."""
    label = torch.zeros(2, 1, 4, 4)
    label[0, 0, :2] = 1.0
    logits = label * 4 - 2
    logits[0, 0, 0] = -1.0  # 4 of 8 found: Dice 2*4/(4+8) = 2/3; slice 1 empty in both: 1
    assert mean_dice(logits, label) == pytest.approx((2 / 3 + 1) / 2)


def test_calibration_record_names_its_weights_and_fusion(record):
    net = small_net()
    assert record["key"] == calibration_key(net, "width") and record["mode"] == "width" and record["slices"] == 4
    lo, hi = record["ranges"]["image"]
    assert 0 <= lo[0] < hi[0] <= 1, "the input's range is the calibration images' range"
    assert all(r[0][0] <= r[1][0] for r in record["ranges"].values())


@pytest.mark.parametrize("runtime", FAST_RUNTIMES)
def test_int8_follows_fp32_and_serves_other_sizes(record, runtime, tmp_path, caplog):
    net = small_net()
    if runtime not in INT8_RUNTIMES:  # this CPU: ONNX Runtime's int8 saturates, so it is refused (test below)
        with pytest.raises(ValueError, match="without VNNI"):
            select_runtime(net, runtime, precision="int8", size=(64, 64), cache_dir=tmp_path, calibration=record)
        return
    with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
        int8 = select_runtime(net, runtime, precision="int8", size=(64, 64), cache_dir=tmp_path, calibration=record)
    assert f"running the network with {runtime}, int8" in caplog.text
    (cached,) = (tmp_path / "onnx").glob("*.int8.onnx")
    x = torch.stack(_images(6)[4:])
    with torch.no_grad():
        ref = net(x)
        out = int8(x)
        scale = ref.abs().max().item()
        assert (out - ref).abs().max().item() <= 0.1 * scale, "int8 logits follow fp32 within 10 % of their range"
        assert not torch.equal(out, ref)
        small = int8(x[:, :, :32, :32])  # another size: quantised from its own export with the same ranges
        assert small.shape == (2, 1, 32, 32)
        assert (small - net(x[:, :, :32, :32])).abs().max().item() <= 0.1 * scale
    assert len(list((tmp_path / "onnx").glob("*.int8.onnx"))) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
        select_runtime(net, runtime, precision="int8", size=(64, 64), cache_dir=tmp_path, calibration=record)
    assert f"({cached})" in caplog.text, "the second run takes the verified cached int8 model"


def _pretend_cpu(monkeypatch, machine: str, flags: str | None) -> None:
    """``platform.machine()`` and the flags line of ``/proc/cpuinfo`` (``None``: no such file) as on another CPU."""
    monkeypatch.setattr(backends.platform, "machine", lambda: machine)
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if file == "/proc/cpuinfo":
            if flags is None:
                raise FileNotFoundError(file)
            return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize(
    "machine, flags, holds",
    [("x86_64", "fpu sse4_2 avx2 fma", False), ("x86_64", "avx2 avx512f avx512_vnni", True),
     ("x86_64", "avx2 avx_vnni", True), ("aarch64", None, True)],
)  # fmt: skip
def test_onnxruntime_int8_needs_vnni_on_x86(monkeypatch, machine, flags, holds):
    _pretend_cpu(monkeypatch, machine, flags)
    assert backends.onnxruntime_has_int8.__wrapped__() is holds


def test_onnxruntime_int8_is_refused_where_it_saturates(record, monkeypatch, caplog):
    """On an x86 CPU without VNNI: ``"int8"`` on ONNX Runtime is an error saying why, ``"auto"`` runs fp32 with a log
    line, and OpenVINO's int8 still runs (its kernels do not saturate)."""
    monkeypatch.setattr(backends, "onnxruntime_has_int8", lambda: False)
    net = small_net()
    with pytest.raises(ValueError, match="saturate on an x86 CPU without VNNI.*'openvino'"):
        select_runtime(net, "onnxruntime", precision="int8", size=(64, 64), cache_dir="off", calibration=record)
    with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
        runner = select_runtime(net, "onnxruntime", size=(64, 64), cache_dir="off", calibration=record)
    assert "without VNNI" in caplog.text and "int8 not used" in caplog.text and "onnxruntime, fp32" in caplog.text
    x = torch.stack(_images(2))
    with torch.no_grad():
        torch.testing.assert_close(runner(x), net(x), atol=1e-4, rtol=1e-4)
    if "openvino" in FAST_RUNTIMES:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
            select_runtime(net, "openvino", precision="int8", size=(64, 64), cache_dir="off", calibration=record)
        assert "openvino, int8" in caplog.text


def test_int8_is_refused_without_a_record_for_these_weights(record, tmp_path, caplog):
    if not INT8_RUNTIMES:
        pytest.skip("no runtime runs int8 on this CPU")
    runtime = INT8_RUNTIMES[-1]
    net = small_net()
    with pytest.raises(CalibrationError, match="needs a calibration record"):
        select_runtime(net, runtime, precision="int8", size=(64, 64), cache_dir="off")
    missing = tmp_path / "none.json"
    with pytest.raises(CalibrationError, match="none.json: no int8 calibration"):
        select_runtime(net, runtime, precision="int8", size=(64, 64), cache_dir="off", calibration=missing)
    other = small_net()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(CalibrationError, match="calibrated for other weights"):
        select_runtime(other, runtime, precision="int8", size=(64, 64), cache_dir="off", calibration=record)
    with pytest.raises(CalibrationError, match="calibrated for other weights"):
        select_runtime(net, runtime, precision="int8", mode="dense", cache_dir="off", calibration=record)
    # auto: int8 only with a valid record; otherwise the next precision, with a warning for an unusable record
    with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
        select_runtime(other, runtime, size=(64, 64), cache_dir="off", calibration=record)
    assert "int8 not used" in caplog.text
    assert f"{runtime}, fp32" in caplog.text or f"{runtime}, bf16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
        select_runtime(net, runtime, size=(64, 64), cache_dir="off", calibration=record)
    assert f"{runtime}, int8" in caplog.text


def test_record_file_is_written_once_and_an_edited_one_is_refused(record, tmp_path, caplog):
    path = tmp_path / CALIBRATION_FILE
    write_calibration(path, record)
    with pytest.raises(FileExistsError):
        write_calibration(path, record)
    assert read_calibration(path)["ranges"] == record["ranges"]
    data = json.loads(path.read_text())
    name = next(iter(data["ranges"]))
    data["ranges"][name][1][0] *= 2
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="was edited"):
        read_calibration(path)
    with caplog.at_level(logging.INFO, logger="pyconv_monai.runtime.backends"):
        runner = select_runtime(small_net(), INT8_RUNTIMES[-1], size=(64, 64), cache_dir="off", calibration=path)
    assert "was edited): int8 not used" in caplog.text and runner.source == "exported in memory"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CalibrationError, match="bad.json: not a readable calibration record"):
        read_calibration(tmp_path / "bad.json")


def test_quantising_another_export_with_missing_ranges_is_refused(record):
    ranges = dict(record["ranges"])
    ranges.pop(sorted(k for k in ranges if k.endswith("Conv_output_0"))[0])
    with pytest.raises(CalibrationError, match="no calibrated range for 1 tensor"):
        quantize_qdq(export_onnx(small_net(), None, "width", (64, 64)), ranges)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_shipped_records_match_the_shipped_weights_and_the_dice_rule(bundle, shared_data):
    """Each bundle's models/model_int8.json: made for its model.pt, and within the Dice rule it recorded; its int8
    masks on real validation slices overlap torch's with Dice >= 0.99 and >= 99.5 % of pixels equal (int8's bar is
    the Dice rule; EM membranes, all boundary, differ in 0.2 % of pixels, below the fp32/bf16 bar of 99.9 %)."""
    net = _trained(bundle)
    record = read_calibration(REPO / "bundles" / bundle / "models" / CALIBRATION_FILE)
    assert record["key"] == calibration_key(net, record["mode"])
    dice = record["dice"]
    assert dice["max_change"] == MAX_DICE_CHANGE and set(dice["int8"]) == set(FAST_RUNTIMES)
    assert all(abs(dice["fp32"] - d) <= MAX_DICE_CHANGE for d in dice["int8"].values())
    x = _validation_slices(shared_data, bundle, 2)
    with torch.no_grad():
        ref = net(x) > 0
        for runtime in INT8_RUNTIMES:
            runner = select_runtime(net, runtime, size=tuple(x.shape[2:]), threads=2, cache_dir="off",
                                    calibration=REPO / "bundles" / bundle / "models" / CALIBRATION_FILE)  # fmt: skip
            mask = runner(x) > 0
            agree = (mask == ref).float().mean().item()
            overlap = 2 * (mask & ref).sum().item() / max(mask.sum().item() + ref.sum().item(), 1)
            assert agree >= 0.995, f"{bundle} {runtime} int8: {100 * agree:.3f} % of pixels agree with torch"
            assert overlap >= 0.99, f"{bundle} {runtime} int8: Dice {overlap:.4f} against the torch mask"


@pytest.mark.slow
def test_quantize_writes_a_record_only_within_the_dice_rule(shared_data, tmp_path, capsys):
    """``pyconv-monai quantize`` on the EM bundle's real data: a refused record is not written (exit 1), an existing
    one is not replaced (exit 2), and the written one is what inference then uses."""
    weights = tmp_path / "model.pt"
    weights.write_bytes((REPO / "bundles" / "neuron_em_segmentation" / "models" / "model.pt").read_bytes())
    bundle = str(REPO / "bundles" / "neuron_em_segmentation")
    data = str(shared_data / "isbi2012_em")
    with pytest.raises(QuantizationRejected, match="not written"):
        quantize_bundle(bundle, data, slices=2, ckpt_file=weights, max_change=-1.0)
    assert not (tmp_path / CALIBRATION_FILE).exists()
    args = ["quantize", bundle, "--dataset-dir", data, "--slices", "2", "--ckpt-file", str(weights)]
    assert cli.main(args) == 0
    written = read_calibration(tmp_path / CALIBRATION_FILE)
    assert written["calibration"]["calibration_slices"] == 2 and written["dice"]["validation_slices"] == 5
    assert "wrote" in capsys.readouterr().out
    assert cli.main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert read_calibration(tmp_path / CALIBRATION_FILE) == written
