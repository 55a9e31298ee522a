"""The Gradio app: upload an image, pick a zoo network and a runtime, see the top-5 classes and the latency.

``Predictor`` owns the models and runtimes (loaded once, shared by every request); ``build_app`` lays out
the UI around it; ``build_server`` puts the UI (with a bounded request queue and upload size) beside the plain
HTTP API of ``demo.rest`` in one ASGI app; ``launch`` serves that offline on loopback.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import uvicorn
from fastapi import FastAPI
from PIL import Image
from torch import nn

from demo.batching import Batcher
from demo.connections import guarded_h11
from demo.examples import EXAMPLES_DIR, example_paths, label_of
from demo.limits import Limits, NotReady
from demo.preprocess import MAX_FILE_BYTES, ChoiceError, InputError, InputSpec, load_image, prepare
from demo.rest import api_router
from zoo import create_model, list_models
from zoo.runtimes import (
    BuildOptions,
    ExportError,
    Session,
    available_runtimes,
    get_runtime,
    make_session,
    runtime_names,
)

# Every runtime of the registry is offered where it runs; the first available is the default: ONNX Runtime runs
# these small nets several times faster than eager PyTorch on CPU (batch 1: ~2 vs ~9 ms for the 28x28 nets here).
DEFAULT_RUNTIME = "onnxruntime"
PREFERRED_MODEL = "fmnist_proxyless_cpu"  # the net searched for the hardware the demo usually runs on
TOP_K = 5
# Small images (a 28x28 example) shown enlarged with their pixels visible, not blurred.
CSS = "#image .image-frame img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
SEEN_DISPLAY_SIDE = 112  # the model's 28x28 input, enlarged (nearest) so its pixels are visible
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "proxyless-zoo" / "runtimes"


@dataclass
class Result:
    """One classification: the top-k probabilities, how long inference took, and what was done to the input."""

    top: dict[str, float]
    inference_ms: float  # the run this request was part of
    batch: int  # how many requests that run served (demo.batching)
    preprocess_ms: float
    provider: str
    notes: list[str]
    seen: Image.Image


Progress = Callable[[str], None]  # start-up messages (what is being loaded or built), one line each


def quiet(message: str) -> None:
    """The progress callback of ``--no-progress``."""


class Predictor:
    """Zoo models and their runtimes, created on first use and shared by all requests.

    Each runtime is called by its own ``Batcher`` thread, never concurrently (the runtime objects promise
    nothing about it, and on a few CPU cores parallel calls only compete); requests that wait meanwhile run
    together as one batch of up to ``max_batch`` (TensorRT: 1, its engines' batch range is the export's).

    Loading never blocks an unrelated request (issue 39): each model and each (model, runtime) pair has its own
    lock, so a request waits only for what it needs itself. Runtimes that take minutes to build (``slow_build``:
    AOTInductor, TensorRT) are built by a background thread, one at a time and each once; until one is ready,
    its requests get ``NotReady`` (HTTP 503 with Retry-After) instead of holding a connection for minutes.
    """

    def __init__(
        self,
        model_names: Sequence[str],
        runtime_kinds: Sequence[str],
        cache_dir: Path,
        onnx_exporter: str = "dynamo",
        threads: int = 1,
        max_batch: int = 16,
    ) -> None:
        if not model_names:
            raise ValueError("no zoo networks with weights to serve (see `proxyless zoo list`)")
        if not runtime_kinds:
            raise ValueError("no runtime available to serve with")
        self.model_names, self.runtime_kinds, self.cache_dir = list(model_names), list(runtime_kinds), cache_dir
        self.onnx_exporter, self.threads, self.max_batch = onnx_exporter, threads, max_batch
        self._models: dict[str, nn.Module] = {}
        self._runtimes: dict[tuple[str, str], tuple[Session, Batcher]] = {}
        self._building: dict[tuple[str, str], Future[tuple[Session, Batcher]]] = {}
        self._locks: dict[str | tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()  # held only to find or add a lock, never while loading
        self._slow_builds = threading.Lock()  # one slow build at a time: each takes every core for minutes

    def _lock(self, key: str | tuple[str, str]) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def model(self, name: str) -> nn.Module:
        if name not in self.model_names:
            raise ChoiceError(f"unknown model {name!r}; known: {', '.join(self.model_names)}")
        with self._lock(name):
            if name not in self._models:
                self._models[name] = create_model(name, pretrained=True).eval()
            return self._models[name]

    def info(self, name: str) -> Any:
        return self.model(name).info

    def runtime(self, name: str, kind: str) -> tuple[Session, Batcher]:
        """The runtime of a model, exported on first use; exports are cached in ``cache_dir`` across restarts
        (``make_session`` keys its files by a fingerprint of the weights). Raises ``NotReady`` while a slow one
        is being built."""
        if kind not in self.runtime_kinds:
            raise ChoiceError(f"runtime {kind!r} is not available here; available: {', '.join(self.runtime_kinds)}")
        model, key = self.model(name), (name, kind)
        with self._lock(key):
            if key not in self._runtimes:
                if get_runtime(kind).slow_build:
                    self._runtimes[key] = self._built_in_background(key, model)
                else:
                    self._runtimes[key] = self._build(key, model)
            return self._runtimes[key]

    def _build(self, key: tuple[str, str], model: nn.Module) -> tuple[Session, Batcher]:
        name, kind = key
        device = get_runtime(kind).device_for("cpu")  # TensorRT runs on the GPU only
        shape, workdir = model.info.input_size, self.cache_dir / name
        options = BuildOptions(onnx_exporter=self.onnx_exporter)
        runtime = make_session(kind, model, shape, workdir, device, self.threads, options=options)
        max_batch = 1 if device == "cuda" else self.max_batch
        return runtime, Batcher(runtime, max_batch, f"{name}-{kind}")

    def _built_in_background(self, key: tuple[str, str], model: nn.Module) -> tuple[Session, Batcher]:
        """The finished build of ``key``; else start it (once) and raise ``NotReady``. Called holding key's lock.
        A failed build raises its error to one request; the next request starts it again."""
        future = self._building.get(key)
        if future is None:
            future = self._building[key] = Future()
            threading.Thread(target=self._build_slowly, args=(key, model, future), daemon=True).start()
        if not future.done():
            name, kind = key
            raise NotReady(
                f"{runtime_label(kind)} for {name} is being built (its first use takes minutes); other runtimes "
                "serve meanwhile"
            )
        del self._building[key]
        return future.result()

    def _build_slowly(self, key: tuple[str, str], model: nn.Module, future: Future[tuple[Session, Batcher]]) -> None:
        with self._slow_builds:
            try:
                future.set_result(self._build(key, model))
            except Exception as e:  # given to the next request for this runtime
                future.set_exception(e)

    def warm(self, progress: Progress = quiet) -> None:
        """Build every (model, runtime) pair and run it once, so no user waits for an export; runtimes that take
        minutes to build (AOTInductor, TensorRT) are built on first use instead."""
        for name in self.model_names:
            progress(f"loading {name}")
            info = self.info(name)
            dummy = np.zeros((1, *info.input_size), np.float32)
            for kind in (k for k in self.runtime_kinds if not get_runtime(k).slow_build):
                progress(f"preparing {runtime_label(kind)} for {name} (exported once, then cached in {self.cache_dir})")
                runtime, batcher = self.runtime(name, kind)
                batcher(dummy)
                if batcher.max_batch > 1:  # a full batch too: the first run of a new shape is slow
                    runtime(np.zeros((batcher.max_batch, *info.input_size), np.float32))

    def classify(self, source: str | bytes, name: str, kind: str) -> Result:
        """Top-k of one image (a file path, or the file's bytes) with ``name`` on runtime ``kind``."""
        t0 = time.perf_counter()
        info = self.info(name)
        image, notes = load_image(source)
        prepared = prepare(image, InputSpec.from_info(info), notes)
        runtime, batcher = self.runtime(name, kind)
        t1 = time.perf_counter()
        out, inference_ms, batch = batcher(prepared.array)
        logits = np.asarray(out, dtype=np.float64).reshape(-1)
        if logits.shape[0] != len(info.categories):
            raise RuntimeError(f"{name} on {kind} returned {logits.shape[0]} logits for {len(info.categories)} classes")
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:TOP_K]
        return Result(
            {str(info.categories[i]): float(probs[i]) for i in top},
            inference_ms,
            batch,
            (t1 - t0) * 1e3,
            str(getattr(runtime, "provider", kind)),
            prepared.notes,
            prepared.seen,
        )


def _batch_note(batch: int) -> str:
    return f" (one batch with {batch - 1} other waiting requests)" if batch > 1 else ""


# Words for the parts of a latency key (``cpu_onnxruntime_b1_pred``), so the card reads as a sentence.
_HARDWARE = {"cpu": "CPU", "gpu": "GPU", "mobile": "mobile", "pixel1": "Pixel 1", "h200": "H200", "v100": "V100"}
_SOURCES = {"pred": "predicted", "paper": "paper"}


def latency_label(key: str) -> str:
    """``cpu_onnxruntime_b1_pred`` -> ``CPU, ONNX Runtime, batch 1 (predicted)``; unknown parts stay as they are."""
    hardware, rest, source = [], [], ""
    for part in key.split("_"):
        if part in _HARDWARE:
            hardware.append(_HARDWARE[part])
        elif part in _SOURCES:
            source = f" ({_SOURCES[part]})"
        elif part.startswith("b") and part[1:].isdigit():
            rest.append(f"batch {part[1:]}")
        else:
            rest.append(get_runtime(part).label if part in runtime_names() else part)
    return ", ".join([" ".join(hardware), *rest] if hardware else rest) + source


def _number(n: float, unit: str) -> str:
    return f"{n / 1e6:.2f} M {unit}" if n >= 1e5 else f"{n / 1e3:.1f} k {unit}"


def card_markdown(info: Any) -> str:
    """The model's card facts: dataset, input, accuracy (``top1`` is a fraction), size, cost, recorded latency."""
    c, h, w = info.input_size
    metrics = info.metrics or {}
    facts = [f"**{info.name}**", f"dataset {info.dataset}", f"input {c}x{h}x{w}"]
    if metrics.get("top1") is not None:
        facts.append(f"top-1 accuracy {100 * float(metrics['top1']):.2f} %")
    facts += [_number(info.params, "params"), _number(info.macs, "MACs")]
    latency = metrics.get("latency_ms") or {}
    if isinstance(latency, dict):
        facts += [f"{latency_label(where)}: {float(ms):.2f} ms" for where, ms in latency.items()]
    else:
        facts.append(f"latency {float(latency):.2f} ms")
    return " · ".join(facts)


def runtime_label(kind: str) -> str:
    return get_runtime(kind).label


def runtime_status() -> tuple[list[str], dict[str, str]]:
    """The registry's runtimes that work here (the default first), and the reasons the others do not."""
    status = available_runtimes()
    order = sorted(status, key=lambda k: k != DEFAULT_RUNTIME)  # registry order, the default first
    usable = [k for k in order if status[k] is None]
    return usable, {k: why for k, why in status.items() if why is not None}


def default_model(names: Sequence[str]) -> str:
    return PREFERRED_MODEL if PREFERRED_MODEL in names else names[0]


def build_app(predictor: Predictor, unavailable: dict[str, str], concurrency: int = 2) -> gr.Blocks:
    """The UI: inputs on the left, top-5 / latency / what the model sees / model card on the right."""

    def classify(image: dict[str, Any] | None, model: str, runtime: str) -> tuple[dict[str, float], str, Image.Image]:
        # preprocess=False: the raw upload (a file in Gradio's cache) comes here, so that our decoder, with its
        # guards and clear messages, is the only one to open it.
        if not image or not image.get("path"):
            raise gr.Error("No image: upload one, paste one or click an example first.", print_exception=False)
        label = runtime_label(runtime) if runtime in predictor.runtime_kinds else runtime
        try:
            r = predictor.classify(image["path"], model, runtime)
        except (ChoiceError, NotReady) as e:
            raise gr.Error(f"{e}.", print_exception=False) from None
        except InputError as e:
            raise gr.Error(f"Cannot classify this file: {e}.", print_exception=False) from None
        except ExportError as e:  # a runtime that could not be built for this model
            raise gr.Error(f"{label} failed for {model}: {e}") from None
        where = r.provider if r.provider.startswith(label) else f"{label} ({r.provider})"
        timing = (
            f"**{r.inference_ms:.2f} ms** inference on {where}{_batch_note(r.batch)} · "
            f"{r.preprocess_ms:.1f} ms decoding and preprocessing\n\nInput: {'; '.join(r.notes)}"
        )
        side = SEEN_DISPLAY_SIDE
        seen = r.seen.resize((side, side * r.seen.height // r.seen.width), Image.Resampling.NEAREST)
        return r.top, timing, seen

    def card(model: str) -> str:
        try:
            return card_markdown(predictor.info(model))
        except ChoiceError as e:
            raise gr.Error(str(e), print_exception=False) from None

    names = predictor.model_names
    with gr.Blocks(title="proxyless-zoo demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# proxyless-zoo: hardware-specialized classifiers\n"
            "Upload a photo (or paste one, or use the webcam), or click an example. The photo is prepared as the "
            "model's dataset expects (for datasets of light objects on black, such as clothing images: "
            "grayscale, inverted if its border is bright, trimmed to the object, padded to a square and resized); "
            "*What the model sees* shows the result."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Image",
                    type="filepath",
                    sources=["upload", "clipboard", "webcam"],
                    height=280,
                    elem_id="image",
                )
                model = gr.Dropdown(names, value=default_model(names), label="Model", elem_id="model")
                choices = [(runtime_label(k), k) for k in predictor.runtime_kinds]
                runtime = gr.Radio(choices, value=choices[0][1], label="Runtime", elem_id="runtime")
                if unavailable:
                    lines = [f"- {runtime_label(k)}: {why}" for k, why in unavailable.items()]
                    gr.Markdown("Unavailable runtimes:\n" + "\n".join(lines), elem_id="unavailable")
                button = gr.Button("Classify", variant="primary", elem_id="classify")
            with gr.Column():
                top = gr.Label(num_top_classes=TOP_K, label="Top-5 classes", elem_id="top")
                timing = gr.Markdown(label="Latency and input handling", elem_id="timing")
                seen = gr.Image(label="What the model sees", format="png", interactive=False, elem_id="seen")
                facts = gr.Markdown(label="Model card", elem_id="card")
        paths = example_paths()
        if paths:  # thumbnails (example_labels would replace them with text); the classes in their order
            classes = ", ".join(dict.fromkeys(label_of(p) for p in paths))
            gr.Examples(
                [[str(p)] for p in paths],
                inputs=[image],
                label=f"Fashion-MNIST test images: {classes}",
                examples_per_page=len(paths),
                elem_id="examples",
            )
        button.click(
            classify,
            [image, model, runtime],
            [top, timing, seen],
            api_name="classify",
            preprocess=False,
            concurrency_limit=concurrency,
        )
        model.change(card, model, facts, api_name="card")
        app.load(card, model, facts, api_visibility="private")
    return app


def build_server(
    predictor: Predictor, unavailable: dict[str, str], concurrency: int = 2, limits: Limits | None = None
) -> FastAPI:
    """One ASGI app: the plain API (demo.rest) under /api, the Gradio UI and its own API at /."""
    limits = limits or Limits()
    blocks = build_app(predictor, unavailable, concurrency)
    # Queue positions are pushed once a second, not to every waiting client each time a job starts (O(n^2)).
    blocks.queue(status_update_rate=1.0, max_size=limits.queue_size, default_concurrency_limit=concurrency)
    # No /docs page: it would load its scripts from a CDN.
    server = FastAPI(title="proxyless-zoo demo", docs_url=None, redoc_url=None)
    server.include_router(api_router(predictor, limits, default_model(predictor.model_names)))
    return gr.mount_gradio_app(
        server,
        blocks,
        path="/",
        max_file_size=MAX_FILE_BYTES,
        allowed_paths=[str(EXAMPLES_DIR)],
        show_error=False,
        ssr_mode=False,
        footer_links=["api"],
        css=CSS,
    )


def server_config(app: FastAPI, host: str, port: int, limits: Limits, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn settings for the demo: its h11 protocol closes connections that send no request head within
    ``limits.read_timeout`` and bounds open connections (demo.connections)."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=guarded_h11(limits))


def serve(config: uvicorn.Config) -> None:
    uvicorn.Server(config).run()


def launch(
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    models: Sequence[str] | None = None,
    concurrency: int = 2,
    limits: Limits | None = None,
    warm: bool = True,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    onnx_exporter: str = "dynamo",
    threads: int = 1,
    max_batch: int = 16,
    progress: Progress = quiet,
) -> None:
    """Serve the demo until interrupted. ``models`` defaults to every zoo network whose weights are present;
    ``progress`` hears what is being loaded or built (a first start exports every runtime: a minute or more)."""
    present = list(list_models(pretrained_only=True))
    names = list(models) if models else present
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(f"no weights for {', '.join(missing)}; networks with weights: {', '.join(present) or 'none'}")
    progress("finding the runtimes that work here")
    usable, unavailable = runtime_status()
    progress(f"runtimes: {', '.join(usable)}" + (f" (unavailable: {', '.join(unavailable)})" if unavailable else ""))
    predictor = Predictor(names, usable, Path(cache_dir), onnx_exporter, threads, max_batch)
    if warm:
        predictor.warm(progress)
    limits = limits or Limits()
    config = server_config(build_server(predictor, unavailable, concurrency, limits), host, port, limits)
    print(f"proxyless-zoo demo on http://{host}:{port} (plain API: POST /api/classify)", flush=True)
    serve(config)
