"""The default ``.pt2`` mode compiled for real: AOTInductor builds a shared library with this machine's C++
compiler, the package loads back without the model's Python code and computes the trained net's logits.
(The CLI tests patch the compiler away to test the skip; this one needs it, as `.ci/run` installs it.)"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from export.cli import main
from zoo import create_model
from zoo.runtimes import load_session
from zoo.runtimes.pt2 import pt2_mode

NAME = "fmnist_proxyless_cpu"
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="AOTInductor needs a C++ compiler (.ci/run installs g++)")
def test_default_pt2_is_compiled_and_loads(tmp_path) -> None:
    out = tmp_path / "out"
    argv = [NAME, "--formats", "pt2", "--out", str(out), "--parity-images", "64", "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert not report.get("skipped")
    (artefact,) = report["artefacts"]
    path = out / artefact["file"]
    assert artefact["format"] == "pt2" and pt2_mode(path) == "aoti"
    (check,) = artefact["checks"]
    assert check["parity"]["max_abs"] <= 1e-4 and check["parity"]["top1_agreement"] == 1.0
    assert main(["check", str(out), "--no-progress"]) == 0  # verified against its sha256, loaded and run again

    model = create_model(NAME, pretrained=True).eval()
    runtime = load_session("pt2", path)
    for batch in (1, 5):  # the batch dimension stayed dynamic through the compile
        x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        got = runtime(x.numpy())
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
