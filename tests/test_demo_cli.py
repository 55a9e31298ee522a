"""``proxyless demo``'s first start (issue 40): progress on stderr while it loads, ``--no-progress``, and
``make demo PORT=N``, and a bad setting refused in one line before anything loads. The server itself is not
started: ``demo.app.serve`` is replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MODEL = "fmnist_proxyless_cpu"  # bundled in zoo/pretrained


# ``main`` up to serving, on PyTorch only (built in a moment), in a process of its own: the uvicorn config it makes
# sets up logging on the stderr of the moment, which must not be a test's captured one
START = """
import sys
import demo.app
from demo.cli import main
demo.app.serve = lambda config: print("served on port", config.port)
demo.app.runtime_status = lambda: (["torch"], {"onnxruntime": "left out by the test"})
sys.exit(main(sys.argv[1:]))
"""


def _start(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", START, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(not (ROOT / "zoo" / "pretrained" / MODEL).is_dir(), reason=f"{MODEL} is not bundled")
def test_start_up_shows_its_progress_on_stderr_and_no_progress_silences_it(tmp_path: Path) -> None:
    argv = ["--models", MODEL, "--port", "7999", "--cache-dir", str(tmp_path)]
    run = _start(*argv)
    assert run.returncode == 0, run.stderr
    url = "proxyless-zoo demo on http://127.0.0.1:7999 (plain API: POST /api/classify)"
    assert run.stdout.splitlines() == [url, "served on port 7999"], run.stdout
    steps = [line.split("] ", 1)[1] for line in run.stderr.splitlines()]
    assert steps == [
        "importing Gradio and PyTorch",
        "finding the runtimes that work here",
        "runtimes: torch (unavailable: onnxruntime)",
        f"loading {MODEL}",
        f"preparing PyTorch for {MODEL} (exported once, then cached in {tmp_path})",
    ], run.stderr
    assert all(line.startswith("[") and " s] " in line for line in run.stderr.splitlines()), run.stderr

    run = _start(*argv, "--no-progress")
    assert run.returncode == 0 and run.stderr == "" and run.stdout.startswith(url), (run.stdout, run.stderr)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_demo_takes_a_port_and_keeps_7860_by_default() -> None:
    def command(*args: str) -> str:
        # a PORT in the environment (as some hosts set) is not the demo's; under `make test` a sub-make would
        # otherwise inherit the outer one's flags and print its directory
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")} | {"PORT": "5000"}
        cmd = ["make", "--no-print-directory", "-n", "demo", *args]
        dry = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        return dry.stdout.strip().splitlines()[-1]

    assert command("PORT=8123").endswith("proxyless demo --port 8123")
    assert command().endswith("proxyless demo --port 7860")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--port", "0", "--port 0 is not a TCP port (1..65535)"),
        ("--max-connections", "0", "--max-connections must be at least 1"),
        ("--read-timeout", "0", "--read-timeout must be a positive number of seconds, got 0.0"),
        ("--read-timeout", "nan", "--read-timeout must be a positive number of seconds, got nan"),
        # inf turned the slow-client cut-off off: a client that never sends a request held its connection forever
        ("--read-timeout", "inf", "--read-timeout must be a positive number of seconds, got inf"),
    ],
)
def test_a_bad_server_setting_is_one_line_before_anything_loads(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import demo.app
    from demo.cli import main

    def never(*args: object) -> None:
        raise AssertionError("the server started: the setting was not refused")

    monkeypatch.setattr(demo.app, "serve", never)
    assert main([flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
