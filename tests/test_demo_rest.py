"""demo.rest in-process, with a stand-in predictor: status codes and one-line errors for each refusal."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from demo.limits import Limits
from demo.preprocess import MAX_FILE_BYTES, ChoiceError, load_image
from demo.rest import api_router


class StandIn:
    def __init__(self) -> None:
        self.model_names, self.runtime_kinds = ["net_a"], ["onnxruntime", "torch"]
        self.calls: list[tuple[str, str]] = []

    def classify(self, source: bytes, name: str, kind: str) -> SimpleNamespace:
        if name not in self.model_names:
            raise ChoiceError(f"unknown model {name!r}; known: net_a")
        load_image(source)  # the real decoder and its refusals
        self.calls.append((name, kind))
        return SimpleNamespace(
            provider="stand-in", top={"Bag": 0.75, "Coat": 0.25}, inference_ms=1.5, preprocess_ms=0.5, notes=[], batch=1
        )


def _client(queue_size: int = 4, **limits: float) -> tuple[TestClient, StandIn]:
    predictor = StandIn()
    app = FastAPI()
    app.include_router(api_router(predictor, Limits(queue_size, **limits), "net_a"))
    return TestClient(app), predictor


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (28, 28), 128).save(out, "PNG")
    return out.getvalue()


PNG = _png()


def test_defaults_are_the_uis_first_model_and_runtime() -> None:
    client, predictor = _client()
    r = client.post("/api/classify", content=PNG)
    assert r.status_code == 200, r.text
    assert r.json()["top"][0] == {"label": "Bag", "probability": 0.75}
    assert predictor.calls == [("net_a", "onnxruntime")]
    assert client.get("/api/models").json()["default_model"] == "net_a"


def test_the_default_runtime_is_the_predictors_first_and_onnx_runtime_comes_first(monkeypatch) -> None:
    """The plain API follows the UI's first runtime (not a name of its own), and the demo puts ONNX Runtime
    first whenever it works, whatever order the runtime registry lists them in (the README: ORT is the default);
    every runtime that works here is offered (pt2 included)."""
    import demo.app

    client, predictor = _client()
    predictor.runtime_kinds = ["torch", "onnxruntime"]
    r = client.post("/api/classify", content=PNG)
    assert r.status_code == 200 and r.json()["runtime"] == "torch", r.text
    assert predictor.calls == [("net_a", "torch")]
    assert client.get("/api/models").json()["runtimes"] == ["torch", "onnxruntime"]
    assert client.post("/api/classify?runtime=onnxruntime", content=PNG).json()["runtime"] == "onnxruntime"
    assert predictor.calls[-1] == ("net_a", "onnxruntime")

    status = {"tensorrt": "no CUDA", "pt2": None, "torch": None, "onnxruntime": None}
    monkeypatch.setattr(demo.app, "available_runtimes", lambda: status)
    usable, unavailable = demo.app.runtime_status()
    assert usable == ["onnxruntime", "pt2", "torch"] and unavailable == {"tensorrt": "no CUDA"}
    status["onnxruntime"] = "No module named 'onnxruntime'"  # without ORT, the registry's next one is the default
    assert demo.app.runtime_status() == (
        ["pt2", "torch"],
        {"onnxruntime": "No module named 'onnxruntime'", "tensorrt": "no CUDA"},
    )


def test_refusals_have_a_status_and_a_one_line_error() -> None:
    client, _ = _client()
    cases = [
        (client.post("/api/classify"), 422, "no image"),
        (client.post("/api/classify", content=b"text, not a picture"), 422, "not an image"),
        (client.post("/api/classify?model=other", content=PNG), 422, "unknown model"),
        (client.post("/api/classify", content=b"\0" * (MAX_FILE_BYTES + 1)), 413, "limit is"),
        # no Content-Length (chunked): cut off once the body passes the limit
        (client.post("/api/classify", content=iter([b"\0" * MAX_FILE_BYTES, b"\0"])), 413, "limit is"),
    ]
    for r, status, word in cases:
        assert r.status_code == status and word in r.json()["error"], (status, r.text)
        assert "\n" not in r.json()["error"]


def test_a_full_server_says_busy_at_once() -> None:
    client, predictor = _client(queue_size=0)
    r = client.post("/api/classify", content=PNG)
    assert r.status_code == 503 and "busy" in r.json()["error"] and predictor.calls == []
    client, predictor = _client(max_uploads=0)  # every upload slot taken: refused before the body is read
    r = client.post("/api/classify", content=PNG)
    assert r.status_code == 503 and "uploads are already in progress" in r.json()["error"] and predictor.calls == []


def test_an_unexpected_failure_is_a_json_500_and_a_logged_traceback(caplog) -> None:
    client, predictor = _client(queue_size=1)

    def broken(source: bytes, name: str, kind: str) -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    predictor.classify = broken
    with caplog.at_level(logging.ERROR, logger="demo.rest"):
        r = client.post("/api/classify", content=PNG)
    assert r.status_code == 500 and r.json() == {"error": "internal error: ZeroDivisionError: division by zero"}
    assert "Traceback" in caplog.text and "ZeroDivisionError" in caplog.text
    del predictor.classify  # the slot was given back
    assert client.post("/api/classify", content=PNG).status_code == 200


def test_multipart_uploads_as_curl_f_sends_them() -> None:
    """``curl -F file=@img.png`` (multipart/form-data) is classified like the raw body; a form without a file,
    or a file over the limit, gets a one-line error."""
    client, predictor = _client()
    r = client.post("/api/classify", files={"file": ("shoe.png", PNG, "image/png")})
    assert r.status_code == 200 and r.json()["top"][0]["label"] == "Bag", r.text
    r = client.post("/api/classify", files={"image": ("shoe.png", PNG, "image/png")}, data={"note": "any name"})
    assert r.status_code == 200, r.text
    assert predictor.calls == [("net_a", "onnxruntime")] * 2
    cases = [
        (client.post("/api/classify", files={"file": (None, "not a file")}), 422, "no file field"),
        (client.post("/api/classify", files={"file": ("x.png", b"text", "image/png")}), 422, "not an image"),
        (client.post("/api/classify", files={"file": ("x.png", b"\0" * (MAX_FILE_BYTES + 1))}), 413, "limit is"),
    ]
    for r, status, word in cases:
        assert r.status_code == status and word in r.json()["error"], (status, r.text)
        assert "\n" not in r.json()["error"]


def test_an_unknown_model_is_named_with_the_known_ones() -> None:
    client, _ = _client()
    r = client.post("/api/classify?model=nett_a", content=PNG)
    assert r.status_code == 422 and r.json() == {"error": "unknown model 'nett_a'; known: net_a"}, r.text
