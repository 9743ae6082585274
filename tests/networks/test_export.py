"""Every network exports with ``python -m monai.bundle ckpt_export`` and the TorchScript gives the same output."""

import json
import subprocess
import sys

import pytest
import torch
from pyconv_monai.networks import NETWORKS, ValidUNet, get_network


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETWORKS))
def test_ckpt_export_round_trip(name, tmp_path):
    config = {"network_def": {"_target_": "pyconv_monai.networks.get_network", "name": name, "out_channels": 2}}
    (tmp_path / "inference.json").write_text(json.dumps(config))
    net = get_network(name, out_channels=2)
    size = net.valid_input_size(min_output=16) if isinstance(net, ValidUNet) else 64
    with torch.no_grad():  # make batch-norm statistics non-trivial before saving
        net.train()(torch.rand(2, 1, size, size) * 3 + 1)
    net.eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    trace = NETWORKS[name].export == "trace"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        "model.ts",
        "--ckpt_file",
        "model.pt",
        "--config_file",
        "inference.json",
    ]
    if trace:
        cmd += ["--use_trace", "True", "--input_shape", f"[1, 1, {size}, {size}]"]
    # run from a folder that is not the repository: the config's targets must import from anywhere
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    # scripted modules take other shapes too; a traced one is fixed to the traced shape (batch included)
    if trace:
        x = torch.rand(1, 1, size, size)
    else:
        x = torch.rand(2, 1, *([size] * 2 if isinstance(net, ValidUNet) else [48, 40]))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net(x), rtol=1e-3, atol=1e-4)  # fp32 round-off over ~40 layers
