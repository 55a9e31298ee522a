"""``proxyless demo``'s first start (issue 40): progress on stderr while it loads, ``--no-progress``, and
``make demo PORT=N``. The server itself is not started: ``demo.app.serve`` is replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from demo.cli import SERVER_ENV, main

ROOT = Path(__file__).parents[1]
MODEL = "fmnist_proxyless_cpu"  # bundled in zoo/pretrained


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``main`` runs up to serving, on PyTorch only (built in a moment), and records the uvicorn config."""
    import demo.app  # Gradio and PyTorch: only for this test, not for the make one

    for key, value in SERVER_ENV.items():  # main sets them; restored after the test
        monkeypatch.setenv(key, value)
    served: list[object] = []
    monkeypatch.setattr(demo.app, "serve", served.append)
    monkeypatch.setattr(demo.app, "runtime_status", lambda: (["torch"], {"onnxruntime": "left out by the test"}))
    return served


@pytest.mark.skipif(not (ROOT / "zoo" / "pretrained" / MODEL).is_dir(), reason=f"{MODEL} is not bundled")
def test_start_up_shows_its_progress_on_stderr_and_no_progress_silences_it(
    no_server: list[object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--models", MODEL, "--port", "7999", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0 and len(no_server) == 1
    out, err = capsys.readouterr()
    assert out == "proxyless-zoo demo on http://127.0.0.1:7999 (plain API: POST /api/classify)\n", out
    steps = [line.split("] ", 1)[1] for line in err.splitlines()]
    assert steps == [
        "importing Gradio and PyTorch",
        "finding the runtimes that work here",
        "runtimes: torch (unavailable: onnxruntime)",
        f"loading {MODEL}",
        f"preparing PyTorch for {MODEL} (exported once, then cached in {tmp_path})",
    ], err
    assert all(line.startswith("[") and " s] " in line for line in err.splitlines()), err  # seconds since start

    assert main([*argv, "--no-progress"]) == 0 and len(no_server) == 2
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("proxyless-zoo demo on http://127.0.0.1:7999"), (out, err)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_demo_takes_a_port_and_keeps_7860_by_default() -> None:
    def command(*args: str) -> str:
        env = {**os.environ, "PORT": "5000"}  # a PORT in the environment (as some hosts set) is not the demo's
        dry = subprocess.run(["make", "-n", "demo", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        return dry.stdout.strip().splitlines()[-1]

    assert command("PORT=8123").endswith("proxyless demo --port 8123")
    assert command().endswith("proxyless demo --port 7860")
