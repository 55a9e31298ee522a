"""The demo's real server (Predictor, build_server, uvicorn on a loopback port, in this process) under hostile
and failing conditions (issue 27): slow clients, a client that disconnects mid-upload, a full queue, a runtime
that fails to build or crashes; and the UI's model card and example thumbnails (issue 29). Runs on PyTorch only
(no export), with a bundled Fashion-MNIST net."""

from __future__ import annotations

import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from torch import nn

import demo.app
import zoo
from demo.app import Predictor, build_app, build_server, card_markdown, latency_label, server_config
from demo.examples import example_paths, label_of
from demo.limits import Limits
from export.files import ExportError

ROOT = Path(__file__).parents[1]
BUNDLED = zoo.list_models(pretrained_only=True, dataset="fashion-mnist")
pytestmark = pytest.mark.skipif(not BUNDLED, reason="no bundled Fashion-MNIST net in zoo/pretrained")
MODEL = "fmnist_proxyless_cpu" if "fmnist_proxyless_cpu" in BUNDLED else (BUNDLED or [""])[0]
IMAGE = next(iter(example_paths()), None)


@dataclass
class Running:
    url: str
    predictor: Predictor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app(predictor: Predictor, limits: Limits) -> FastAPI:
    return build_server(predictor, {}, concurrency=2, limits=limits)


@contextmanager
def serving(
    tmp_path: Path, limits: Limits, runtimes: tuple[str, ...] = ("torch",), models: tuple[str, ...] = (MODEL,)
) -> Iterator[Running]:
    """The demo's ASGI app served by uvicorn (with the demo's settings) from a thread, on a free loopback port,
    until the block ends."""
    predictor = Predictor(list(models), list(runtimes), tmp_path / "runtimes")
    port = _free_port()
    server = uvicorn.Server(server_config(_app(predictor, limits), "127.0.0.1", port, limits, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", predictor)
    finally:
        server.should_exit = True
        thread.join(30)


def _classify(url: str, timeout: float = 30, **params: str) -> httpx.Response:
    assert IMAGE is not None
    return httpx.post(f"{url}/api/classify", params=params, content=IMAGE.read_bytes(), timeout=timeout)


def _slow_client(url: str, declared: int = 5000) -> socket.socket:
    """A connection that sends the headers and the first bytes of a body, then nothing more."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /api/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    s.sendall(head.encode() + b"\x89PNG\r\n")
    return s


def test_slow_clients_cost_a_connection_never_the_service(tmp_path: Path) -> None:
    """72 connections that send headers and then trickle (more than the 64 request slots) do not lock anyone out:
    20 normal requests all succeed within their usual latency; a trickler is cut off (408) at the deadline."""
    with serving(tmp_path, Limits(queue_size=64, read_timeout=4.0)) as running:
        usual: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert _classify(running.url).status_code == 200
            usual.append(time.perf_counter() - t0)
        slow = [_slow_client(running.url) for _ in range(72)]
        try:
            time.sleep(0.3)  # every slow request is in the server, reading its body
            seconds = []
            for _ in range(20):
                t0 = time.perf_counter()
                r = _classify(running.url)
                seconds.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["top"][0]["label"] == label_of(IMAGE), r.text
            # Held up by the tricklers, a request would wait for their 4 s deadline (or get 503). The bounds are
            # ratios to the usual latency, measured just before under the same load, with a floor of half that
            # deadline: on a loaded 2-core machine a lone request stalls for a few tenths of a second now and then.
            assert statistics.median(seconds) < 3 * statistics.median(usual) + 0.25, (seconds, usual)
            assert max(seconds) < max(10 * statistics.median(usual), 2.0), (seconds, usual)
            slow[0].settimeout(10)
            answer = slow[0].recv(4096).decode()
            assert answer.startswith("HTTP/1.1 408") and "did not arrive within 4 s" in answer, answer
        finally:
            for s in slow:
                s.close()


def test_a_client_that_disconnects_mid_upload_leaves_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), serving(tmp_path, Limits()) as running:
        for _ in range(3):
            _slow_client(running.url).close()
        time.sleep(0.5)
        assert _classify(running.url).status_code == 200
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info], caplog.text
    gone = [r for r in caplog.records if r.name == "demo.rest"]
    assert len(gone) == 3 and all(r.getMessage() == "client went away during the upload" for r in gone), caplog.text


def test_a_full_server_answers_503_at_once(tmp_path: Path) -> None:
    with serving(tmp_path, Limits(queue_size=1)) as running:
        _runtime, batcher = running.predictor.runtime(MODEL, "torch")
        release, run = threading.Event(), batcher.run
        batcher.run = lambda x: (release.wait(30), run(x))[1]  # the one request in the server waits here
        first: dict[str, httpx.Response] = {}
        holder = threading.Thread(target=lambda: first.setdefault("r", _classify(running.url)))
        holder.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        busy = _classify(running.url)
        assert time.perf_counter() - t0 < 2
        assert busy.status_code == 503 and "busy: 1 requests are already in the server" in busy.json()["error"]
        release.set()
        holder.join(30)
        assert first["r"].status_code == 200
        assert _classify(running.url).status_code == 200  # the slot was given back


def test_a_runtime_that_fails_to_build_or_crashes_is_a_500_and_a_message_in_the_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    real = demo.app.make_session

    def export_fails(kind: str, *args: object, **kwargs: object) -> object:
        if kind == "onnxruntime":
            raise ExportError("the ONNX export failed: unsupported operator")
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(demo.app, "make_session", export_fails)
    with serving(tmp_path, Limits(), runtimes=("torch", "onnxruntime")) as running:
        r = _classify(running.url, runtime="onnxruntime")
        assert r.status_code == 500, r.text
        assert r.json() == {"error": f"onnxruntime failed for {MODEL}: the ONNX export failed: unsupported operator"}
        client = Client(running.url, verbose=False, download_files=False, analytics_enabled=False)
        with pytest.raises(AppError, match=f"ONNX Runtime failed for {MODEL}: the ONNX export failed"):
            client.predict(handle_file(str(IMAGE)), MODEL, "onnxruntime", api_name="/classify")
        assert _classify(running.url, runtime="torch").status_code == 200  # the other runtime still serves
        _runtime, batcher = running.predictor.runtime(MODEL, "torch")
        batcher.run = lambda x: 1 / 0  # a runtime that crashes when called
        r = _classify(running.url, runtime="torch")
        assert r.status_code == 500 and r.json() == {"error": "internal error: ZeroDivisionError: division by zero"}


def test_an_unknown_model_names_itself_and_the_known_ones(tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    with serving(tmp_path, Limits()) as running:
        r = _classify(running.url, model="fmnist_nope")
        assert r.status_code == 422 and r.json() == {"error": f"unknown model 'fmnist_nope'; known: {MODEL}"}, r.text
        client = Client(running.url, verbose=False, download_files=False, analytics_enabled=False)
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(str(IMAGE)), "fmnist_nope", "torch", api_name="/classify")
        assert str(caught.value) == f"unknown model 'fmnist_nope'; known: {MODEL}.", str(caught.value)


def test_the_model_card_reads_latency_keys_as_words(tmp_path: Path) -> None:
    predictor = Predictor([MODEL], ["torch"], tmp_path)
    card = card_markdown(predictor.info(MODEL))
    keys = predictor.info(MODEL).metrics["latency_ms"]
    assert "cpu_onnxruntime_b1_pred" in keys and not any(key in card for key in keys), card
    assert "CPU, ONNX Runtime, batch 1 (predicted): " in card and "CPU, PyTorch, batch 1: " in card, card
    assert latency_label("gpu_h200_torch_b8_pred") == "GPU H200, PyTorch, batch 8 (predicted)"
    assert latency_label("mobile_pixel1_pred") == "mobile Pixel 1 (predicted)"
    assert latency_label("gpu_v100_b8_paper") == "GPU V100, batch 8 (paper)"


def test_the_example_buttons_show_thumbnails(tmp_path: Path) -> None:
    """Each example is shown as its image (Gradio replaces the thumbnails by text when given example labels)."""
    app = build_app(Predictor([MODEL], ["torch"], tmp_path), {})
    (examples,) = [c["props"] for c in app.config["components"] if c["props"].get("elem_id") == "examples"]
    assert examples.get("sample_labels") is None, examples.get("sample_labels")
    shown = [Path(sample[0]["orig_name"]).name for sample in examples["samples"]]
    assert shown == [p.name for p in example_paths()] and len(shown) == 20
    assert all(label_of(p) in examples["label"] for p in example_paths())  # the classes, in the header


def _raw(url: str, timeout: float = 30) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def _closed_by_server(s: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``s`` (EOF or reset) before ``deadline`` (time.monotonic), reading what it sends."""
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not s.recv(4096):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def test_idle_and_header_trickling_connections_are_closed_at_the_default_read_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 39: connections that send nothing, or trickle their request head one byte a second (each byte a sign
    of life to uvicorn's keep-alive timer), are closed once the default read timeout (5 s) has passed, one log line
    each; a normal request is answered meanwhile and after."""
    with caplog.at_level(logging.INFO, logger="demo.rest"), serving(tmp_path, Limits()) as running:
        start = time.monotonic()
        idle = [_raw(running.url) for _ in range(20)]
        trickling = [_raw(running.url) for _ in range(5)]
        head = b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        for i in range(12):  # 6 s at one byte every half second: past the 5 s deadline
            for s in trickling:
                with suppress(ConnectionError):  # closed already: the test checks that below
                    s.sendall(head[i : i + 1])
            if i == 4:
                assert _classify(running.url).status_code == 200
            time.sleep(0.5)
        # Closed 5 s after connecting; 25 s leaves room for a loaded machine (the bug: never closed).
        deadline = start + 25
        assert all(_closed_by_server(s, deadline) for s in idle + trickling), "a connection was still open after 25 s"
        assert _classify(running.url).status_code == 200
        for s in idle + trickling:
            s.close()
    closed = [r.getMessage() for r in caplog.records if "no complete request within 5 s" in r.getMessage()]
    assert len(closed) == 25 and closed[0].startswith("closed the connection of 127.0.0.1:"), caplog.text


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """A Content-Length over the limit gets 413 at once, from the header alone: the server does not wait for (or
    read) 10 MiB that the client has not sent. With a looser bound it would wait for the body: a 408, 20 s later."""
    from demo.preprocess import MAX_FILE_BYTES

    with serving(tmp_path, Limits(read_timeout=20)) as running:
        for declared, multipart in ((MAX_FILE_BYTES + 1, False), (MAX_FILE_BYTES + 70 * 1024, True)):
            s = _raw(running.url, timeout=5)
            kind = "multipart/form-data; boundary=x" if multipart else "application/octet-stream"
            head = f"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\nContent-Length: {declared}\r\n"
            s.sendall(head.encode() + b"\r\n")
            t0, answer = time.perf_counter(), ""
            while "}" not in answer and (chunk := s.recv(4096)):  # the head and the JSON may come apart
                answer += chunk.decode()
            s.close()
            assert answer.startswith("HTTP/1.1 413") and "the limit is 10 MiB" in answer, answer
            assert time.perf_counter() - t0 < 4, "the 413 came late: the server waited for the body"


def test_a_slow_build_holds_up_no_other_request_and_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 39: a runtime that takes minutes to build (pt2; here a fake build that waits for the test) is built in
    the background: its requests get 503 + Retry-After at once, a second one starts no second build, and requests
    on another net, or on this net's other runtime, are answered meanwhile (they waited 41 s for a 44 s build)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    real, release, builds = demo.app.make_session, threading.Event(), []

    def slow_pt2(kind: str, model: nn.Module, *args: object, **kwargs: object) -> object:
        if kind != "pt2":
            return real(kind, model, *args, **kwargs)
        builds.append(model.info.name)
        release.wait(60)
        return real("torch", model, *args, **kwargs)

    monkeypatch.setattr(demo.app, "make_session", slow_pt2)
    other = next(m for m in BUNDLED if m != MODEL)
    with serving(tmp_path, Limits(), runtimes=("torch", "pt2"), models=(MODEL, other)) as running:
        try:
            first: list[httpx.Response] = []
            asking = threading.Thread(target=lambda: first.append(_classify(running.url, 70, runtime="pt2")))
            asking.start()
            deadline = time.monotonic() + 20
            while not builds:
                assert time.monotonic() < deadline, "the pt2 build did not start"
                time.sleep(0.05)
            for model in (other, MODEL):
                r = _classify(running.url, 5, model=model, runtime="torch")  # raises ReadTimeout if held up
                assert r.status_code == 200, r.text
            again = _classify(running.url, 5, runtime="pt2")
            asking.join(5)
            for r in (*first, again):
                assert r.status_code == 503 and r.headers["retry-after"] == "10", (r.status_code, r.text)
                assert r.json()["error"] == (
                    f"PyTorch .pt2 (AOTInductor) for {MODEL} is being built (its first use takes minutes); other "
                    "runtimes serve meanwhile; retry in 10 s"
                )
            client = Client(running.url, verbose=False, download_files=False, analytics_enabled=False)
            with pytest.raises(AppError, match=f"PyTorch .pt2 \\(AOTInductor\\) for {MODEL} is being built"):
                client.predict(handle_file(str(IMAGE)), MODEL, "pt2", api_name="/classify")
            assert builds == [MODEL]
        finally:
            release.set()
        deadline = time.monotonic() + 30
        while (r := _classify(running.url, runtime="pt2")).status_code == 503:
            assert time.monotonic() < deadline, "the pt2 build did not finish"
            time.sleep(0.1)
        assert r.status_code == 200 and r.json()["runtime"] == "pt2", r.text
        assert builds == [MODEL]  # built once for all those requests


def test_a_flood_of_idle_connections_under_a_low_file_limit_leaves_the_server_answering(tmp_path: Path) -> None:
    """Issue 39: under a 400-file limit, 420 connections that sent nothing made every normal request fail (accept
    had no file descriptor left), with nothing logged. ``proxyless demo`` with its defaults bounds open connections
    at half the file limit: it closes the longest idle ones to make room, says so once, and keeps answering."""
    port, log = _free_port(), tmp_path / "server.log"
    cmd = [sys.executable, "-m", "demo", "--port", str(port), "--models", MODEL, "--no-warm", "--no-progress"]
    cmd += ["--cache-dir", str(tmp_path / "runtimes"), "--read-timeout", "60"]  # the bound closes them, not the timeout

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, preexec_fn=low_file_limit)
    flood: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        flood = [_raw(url) for _ in range(420)]
        time.sleep(1)
        for _ in range(3):
            assert _classify(url, 20, runtime="torch").status_code == 200, log.read_text()[-3000:]
        closed = sum(_closed_by_server(s, time.monotonic() + 0.05) for s in flood)
        assert 420 - 200 <= closed < 420, closed  # at most 200 open (the requests took some room), the rest kept
    finally:
        for s in flood:
            s.close()
        proc.terminate()
        proc.wait(15)
    warnings = [line for line in log.read_text().splitlines() if "connections open (--max-connections)" in line]
    assert warnings == ["200 connections open (--max-connections): closing the longest idle ones to make room"]
