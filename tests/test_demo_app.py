"""The running demo: real headless Chromium, the gradio_client API, bad inputs, and a short load run.

One server (``python -m demo``, a subprocess on a free loopback port) serves every test in this module. It
offers the bundled Fashion-MNIST nets when ``zoo/pretrained`` has them; otherwise a small Fashion-MNIST net
trained here for about a minute on CPU (cached in pytest's cache, keyed by the code that makes it) through
``PROXYLESS_ZOO_EXTRA``. Tests only use example images the served nets classify correctly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from test_demo_preprocess import bad_inputs, encode, noise, photo_of

import zoo
from demo.app import default_model
from demo.examples import example_paths, label_of
from demo.preprocess import MAX_FILE_BYTES, InputSpec, load_image, prepare
from zoo.arch import ArchSpec, BlockSpec
from zoo.datasets import FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD, load_fashion_mnist
from zoo.network import ProxylessNet
from zoo.runtimes import available_runtimes, get_runtime
from zoo.weights import save_pretrained

if TYPE_CHECKING:
    from gradio_client import Client

ROOT = Path(__file__).parents[1]
CHROMIUM = Path("/usr/bin/chromium")
TINY = "fmnist_demo_tiny"
STARTUP_S = 150
# Largest difference in a top-5 probability allowed against PyTorch: fp32 ONNX Runtime agrees to rounding;
# TensorRT engines are built in fp16 (zoo.runtimes.tensorrt), hence the looser bound (not run here: no GPU).
# Largest probability difference from PyTorch each runtime may show, by its precision in the runtime registry.
PARITY = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2}


def train_tiny(out_dir: Path, samples: int = 20_000, seed: int = 0) -> float:
    """A ~0.3M-MAC Fashion-MNIST net, one pass over ``samples`` training images; returns test accuracy."""
    torch.manual_seed(seed)
    blocks = tuple(BlockSpec.parse(b) for b in ("mb3_k3_s1_c24", "mb3_k3_s2_c32", "mb3_k3_s1_c32_res"))
    spec = ArchSpec(TINY, blocks, stem_channels=16, stem_stride=2, feature_mix=128, in_chans=1, input_size=28)
    spec = spec.with_classes(len(FMNIST_CLASSES))
    model = ProxylessNet(spec)
    images, labels = load_fashion_mnist("train")
    x = (images.float().div(255).unsqueeze(1) - FMNIST_MEAN[0]) / FMNIST_STD[0]
    order, batch = torch.randperm(len(labels))[:samples], 128
    steps = samples // batch
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=steps)
    model.train()
    for i in range(steps):
        idx = order[i * batch : (i + 1) * batch]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    test_images, test_labels = load_fashion_mnist("test")
    xt = (test_images[:2000].float().div(255).unsqueeze(1) - FMNIST_MEAN[0]) / FMNIST_STD[0]
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(xt).argmax(1) == test_labels[:2000]).float().mean())
    meta = {
        "dataset": "fashion-mnist",
        "input_size": (1, 28, 28),
        "mean": FMNIST_MEAN,
        "std": FMNIST_STD,
        "categories": FMNIST_CLASSES,
        "source": "tests/test_demo_app.py (a quick test net, not a zoo model)",
        "metrics": {"top1": accuracy},
    }
    save_pretrained(model, out_dir, meta)
    return accuracy


def _code_key() -> str:
    h = hashlib.sha256(inspect.getsource(train_tiny).encode())
    for part in ("zoo/network.py", "zoo/layers.py", "zoo/weights.py"):
        h.update((ROOT / part).read_bytes())
    return h.hexdigest()[:12]


def _fmnist_bundled() -> list[str]:
    return zoo.list_models(pretrained_only=True, dataset="fashion-mnist")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    models: list[str]
    runtimes: list[str]  # every runtime the registry can run here: what the demo offers
    correct: dict[str, list[Path]]  # model -> examples it classifies correctly, one per class where possible
    log: Path


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    with pytest.MonkeyPatch.context() as mp:
        models = _fmnist_bundled()
        if not models:  # no bundled nets yet: a quick one, trained once and cached
            key = f"demo_{TINY}_{_code_key()}"
            store = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
            cache = (Path(store.mkdir(key)) if store else tmp_path_factory.mktemp(key)) / TINY
            if not (cache / "config.json").is_file():
                accuracy = train_tiny(cache)
                if accuracy < 0.8:
                    shutil.rmtree(cache)
                    pytest.fail(f"the test net reached only {accuracy:.3f} test accuracy")
            env["PROXYLESS_ZOO_EXTRA"] = str(cache)
            mp.setenv("PROXYLESS_ZOO_EXTRA", str(cache))
            models = [TINY]
        correct = {m: _correct_examples(m) for m in models}
    runtimes = [k for k, why in available_runtimes().items() if why is None]
    port, log = _free_port(), tmp / "server.log"
    cmd = [sys.executable, "-m", "demo", "--port", str(port), "--models", ",".join(models)]
    with open(log, "w") as out:
        # The TorchScript ONNX exporter: ~10x faster to run than the default (dynamo); ORT runs either file alike.
        cmd += ["--cache-dir", str(tmp / "runtimes"), "--onnx-exporter", "torchscript"]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield Served(url, models, runtimes, correct, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"demo server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"demo server not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def _correct_examples(name: str) -> list[Path]:
    """Examples this model (in PyTorch, through the demo's own preprocessing) gets right."""
    model = zoo.create_model(name, pretrained=True).eval()
    spec = InputSpec.from_info(model.info)
    chosen = []
    for path in example_paths():
        image, notes = load_image(path)
        with torch.inference_mode():
            logits = model(torch.from_numpy(prepare(image, spec, notes).array))
        if model.info.categories[int(logits.argmax())] == label_of(path):
            chosen.append(path)
    assert len(chosen) >= 10, f"{name} gets only {len(chosen)} of the examples right"
    return chosen


def _one_per_class(paths: list[Path]) -> list[Path]:
    """Examples in an order where no two consecutive ones share a class."""
    seen: dict[str, Path] = {}
    for p in paths:
        seen.setdefault(label_of(p), p)
    return list(seen.values())


def test_browser_upload_classify_and_read_top_label(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} (Debian package chromium) is not installed")
    model = default_model(served.models)  # the page opens on it (fmnist_proxyless_cpu once that is bundled)
    images = _one_per_class(served.correct[model])[:5]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(served.url)
            expect(page.locator("#card")).to_contain_text(model, timeout=30_000)
            top = page.locator("#top [data-testid='label-output-value']")
            for path in images:
                page.locator("#image input[type='file']").set_input_files(str(path))
                expect(page.locator("#image img")).to_be_visible(timeout=10_000)
                page.click("#classify")
                expect(top).to_have_text(label_of(path), timeout=20_000)
                expect(page.locator("#timing")).to_contain_text(" ms inference on ")
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            # A bad file gets its message in the page, and the next good request still works.
            page.locator("#image button[aria-label='Remove Image']").click()
            tiny = tmp_path / "one_pixel.png"
            Image.new("L", (1, 1)).save(tiny)
            page.locator("#image input[type='file']").set_input_files(str(tiny))
            page.click("#classify")
            expect(page.get_by_text("at least 8x8 is needed").first).to_be_visible(timeout=20_000)
            page.wait_for_timeout(500)  # the message slides in
            page.screenshot(path=str(tmp_path / "demo_error.png"))
            page.locator("#image button[aria-label='Remove Image']").click()
            page.locator("#image input[type='file']").set_input_files(str(images[0]))
            page.click("#classify")
            expect(top).to_have_text(label_of(images[0]), timeout=20_000)
        finally:
            browser.close()
    offsite = [u for u in urls if not u.startswith((served.url, "data:", "blob:"))]
    assert not offsite, f"the page fetched from outside the server (must be offline): {offsite[:5]}"


def _client(served: Served) -> Client:
    from gradio_client import Client

    return Client(served.url, verbose=False, download_files=False, analytics_enabled=False)


def quick(runtimes: list[str]) -> list[str]:
    """The runtimes built in seconds (the demo builds AOTInductor and TensorRT on first use, in minutes)."""
    return [k for k in runtimes if not get_runtime(k).slow_build]


def test_api_every_model_and_runtime_agree(served: Served) -> None:
    """Every quickly built runtime gives the example's class; those that compute like PyTorch (fp32, fp16, bf16)
    give PyTorch's ranking and probabilities within their precision's tolerance (int8 is not held to that)."""
    from gradio_client import handle_file

    client = _client(served)
    assert len(served.runtimes) >= 2, f"need PyTorch and ONNX Runtime, have {served.runtimes}"
    for model in served.models:
        for path in _one_per_class(served.correct[model])[:4]:
            results = {}
            for kind in quick(served.runtimes):
                top, timing, _seen = client.predict(handle_file(str(path)), model, kind, api_name="/classify")
                if get_runtime(kind).precision == "fp32":  # reduced precision may flip a hard example
                    assert top["label"] == label_of(path), (model, kind, path.name, top)
                assert "ms** inference on" in timing
                results[kind] = {c["label"]: c["confidence"] for c in top["confidences"]}
            reference = results.pop("torch")  # every other runtime against PyTorch (not PyTorch against itself)
            assert results, f"no runtime besides PyTorch to compare: {served.runtimes}"
            for kind, probs in results.items():
                precision = get_runtime(kind).precision
                tolerance = PARITY.get(precision)
                if tolerance is None:
                    continue
                ranked = list(probs) if precision == "fp32" else list(probs)[:1]  # bf16 may swap near-ties
                assert ranked == list(reference)[: len(ranked)], f"{model}: {kind} ranks the classes differently"
                # classes both list: at reduced precision the near-equal tail of the top-k may hold other classes
                diff = max(abs(probs[c] - reference[c]) for c in reference.keys() & probs.keys())
                assert diff <= tolerance, f"{model}: {kind} and PyTorch differ by {diff:.2e} on {path.name}"


def test_api_bad_inputs_get_a_message_and_the_server_keeps_serving(served: Served, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = _client(served)
    model, kind = served.models[0], quick(served.runtimes)[-1]
    good = served.correct[model][0]

    def classify(path: Path) -> tuple[dict, str, object]:
        return client.predict(handle_file(str(path)), model, kind, api_name="/classify")

    for name, (data, word) in bad_inputs().items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AppError, match=word):
            classify(tmp_path / name)
        assert classify(good)[0]["label"] == label_of(good), f"no good answer after {name}"
    # Accepted with a note saying what was done: RGBA, CMYK, an animated GIF (first frame).
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[..., :3] = np.asarray(Image.open(good).resize((56, 56)))[..., None]
    frames = [Image.open(good).convert("RGB"), noise("RGB", (28, 28))]
    accepted = {
        "rgba.png": (encode(Image.fromarray(rgba, "RGBA"), "PNG"), "transparency flattened"),
        "cmyk.jpg": (encode(noise("CMYK", (64, 48)), "JPEG"), "CMYK converted to RGB"),
        "anim.gif": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), "first of 2 frames"),
    }
    for name, (data, note) in accepted.items():
        (tmp_path / name).write_bytes(data)
        _top, timing, _seen = classify(tmp_path / name)
        assert note in timing, (name, timing)
    assert classify(tmp_path / "rgba.png")[0]["label"] == label_of(good)
    # A model or runtime that is not offered (the API lets a client send any string).
    with pytest.raises(AppError, match="unknown model 'no_such_net'"):
        client.predict(handle_file(str(good)), "no_such_net", kind, api_name="/classify")
    with pytest.raises(AppError, match="runtime 'tvm' is not available here"):
        client.predict(handle_file(str(good)), model, "tvm", api_name="/classify")
    # Over the upload limit: refused at upload with the limit named; the server still answers.
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first
        classify(big)
    files = {"files": ("big.png", big.read_bytes(), "image/png")}
    r = httpx.post(f"{served.url}/gradio_api/upload", files=files, timeout=30)  # and so does the server
    assert r.status_code == 413 and "exceeded maximum allowed size" in r.text
    assert classify(good)[0]["label"] == label_of(good)


def _rest(served: Served, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{served.url}/api/classify", params=params, content=data, timeout=60)


def test_plain_api_agrees_with_the_gradio_api(served: Served) -> None:
    """POST /api/classify gives the same top-5 as the UI's API, for every model and runtime."""
    from gradio_client import handle_file

    client = _client(served)
    r = httpx.get(f"{served.url}/api/models", timeout=10)
    assert r.status_code == 200 and r.json()["models"] == served.models, r.text
    for model in served.models:
        for path in _one_per_class(served.correct[model])[:3]:
            for kind in quick(served.runtimes):
                r = _rest(served, path.read_bytes(), model=model, runtime=kind)
                assert r.status_code == 200, r.text
                out = r.json()
                top, _timing, _seen = client.predict(handle_file(str(path)), model, kind, api_name="/classify")
                assert out["top"][0]["label"] == top["label"], (model, kind, out)
                assert top["label"] == label_of(path) or get_runtime(kind).precision != "fp32", (model, kind, out)
                ui = {c["label"]: c["confidence"] for c in top["confidences"]}
                assert [c["label"] for c in out["top"]] == list(ui)
                assert max(abs(c["probability"] - ui[c["label"]]) for c in out["top"]) <= 1e-6
                assert out["inference_ms"] > 0 and out["runtime"] == kind


def test_plain_api_defaults_to_onnx_runtime(served: Served) -> None:
    """The README: ONNX Runtime is the demo's default runtime, for the plain API as in the UI (its first choice)."""
    assert "onnxruntime" in served.runtimes, f"ONNX Runtime is not usable here: {served.runtimes}"
    listed = httpx.get(f"{served.url}/api/models", timeout=10).json()
    assert listed["runtimes"][0] == "onnxruntime", listed
    assert sorted(listed["runtimes"]) == sorted(served.runtimes), listed  # every usable runtime, nothing else
    model = served.models[0]
    good = served.correct[model][0]
    plain = _rest(served, good.read_bytes(), model=model)
    explicit = _rest(served, good.read_bytes(), model=model, runtime="onnxruntime")
    torch_run = _rest(served, good.read_bytes(), model=model, runtime="torch")
    assert plain.status_code == explicit.status_code == torch_run.status_code == 200, (plain.text, explicit.text)
    out = plain.json()
    assert out["runtime"] == "onnxruntime", out
    assert out["provider"] == explicit.json()["provider"] != torch_run.json()["provider"], (out, torch_run.json())
    same = explicit.json()["top"]
    assert [c["label"] for c in out["top"]] == [c["label"] for c in same] and out["top"][0]["label"] == label_of(good)
    assert max(abs(a["probability"] - b["probability"]) for a, b in zip(out["top"], same, strict=True)) <= 1e-6


def test_plain_api_bad_inputs_get_one_line_errors_and_the_server_keeps_serving(served: Served) -> None:
    model = served.models[0]
    good = served.correct[model][0]
    cases = {name: (data, 422, word) for name, (data, word) in bad_inputs().items()}
    cases["empty.png"] = (b"", 422, "no image")
    cases["too_big.png"] = (b"\0" * (MAX_FILE_BYTES + 1), 413, "MiB; the limit")
    for name, (data, status, word) in cases.items():
        r = _rest(served, data, model=model)
        assert r.status_code == status and word in r.json()["error"], (name, r.status_code, r.text)
        assert "\n" not in r.json()["error"]
        ok = _rest(served, good.read_bytes(), model=model)
        assert ok.status_code == 200 and ok.json()["top"][0]["label"] == label_of(good), f"no good answer after {name}"
    for params, word in (({"model": "no_such_net"}, "unknown model"), ({"runtime": "tvm"}, "not available here")):
        r = _rest(served, good.read_bytes(), **params)
        assert r.status_code == 422 and word in r.json()["error"], r.text


def test_api_photos_of_examples_are_classified_like_them(served: Served, tmp_path: Path) -> None:
    """Each example redone as a phone photo (dark on off-white, tinted, noisy, off-centre, JPEG): the demo's
    preprocessing should bring most back to what the net knows (at least 7 in 10; the nets are not perfect)."""
    from gradio_client import handle_file

    client = _client(served)
    model = served.models[0]
    examples = _one_per_class(served.correct[model])
    hits = 0
    for path in examples:
        photo = tmp_path / f"{path.stem}.jpg"
        photo.write_bytes(photo_of(np.asarray(Image.open(path))))
        kind = quick(served.runtimes)[-1]
        top, timing, _seen = client.predict(handle_file(str(photo)), model, kind, api_name="/classify")
        assert "inverted" in timing and "trimmed to the object" in timing, timing
        hits += top["label"] == label_of(path)
    assert hits >= 0.7 * len(examples), f"{hits} of {len(examples)} photos classified as their originals"


def test_load_script_zero_errors(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("demo_load", ROOT / "benchmarks" / "demo_load.py")
    demo_load = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = demo_load  # its dataclasses look their module up
    spec.loader.exec_module(demo_load)
    model, n = served.models[0], 24
    argv = ["--url", served.url, "--models", model, "--requests", str(n), "--concurrency", "6", "--sequential", "0"]
    # slow_ok compares two p50s of 24 requests measured seconds apart: on a loaded 2-core machine a burst of other
    # work in one of them breaks the 1.5x ratio now and then. So up to 3 tries for that ratio (a server that slow
    # clients really hold up fails all three); errors are never retried: every try must have none.
    for _attempt in range(3):
        code = demo_load.main([*argv, "--slow-clients", "8"])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert all(r["errors"] == 0 for r in report["runs"]), report["runs"]
        if all(report["slow_ok"].values()):
            break
    assert code == 0 and all(report["slow_ok"].values()), report
    runs = report["runs"]
    assert [(r["api"], r["slow_clients"]) for r in runs] == [("gradio", 0), ("gradio", 8), ("rest", 0), ("rest", 8)]
    assert all(r["errors"] == 0 for r in runs) and runs[-1]["slow_connections"] >= 8, runs
    assert set(report["slow_ok"]) == {f"{model}/gradio", f"{model}/rest"}
    paths = example_paths()  # request i sends paths[i % len(paths)]
    expected_wrong = sum(paths[i % len(paths)] not in served.correct[model] for i in range(n))
    for run in runs:
        assert (run["requests"], run["errors"], run["wrong"]) == (n, 0, expected_wrong), run
        assert 0 < run["p50_ms"] <= run["p99_ms"] and run["inference_p50_ms"] > 0
