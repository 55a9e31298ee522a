"""The demo's plain HTTP API beside the Gradio UI: one request per image, for scripts and load.

Gradio's queue API takes three exchanges per image (upload, join the queue, read the event stream) and about
25 ms of server CPU; a script that only wants the top-5 posts the image bytes and gets JSON back:

    curl --data-binary @shoe.png 'http://127.0.0.1:7860/api/classify?model=fmnist_proxyless_cpu&runtime=onnxruntime'

It shares the UI's ``Predictor``: the same decoder with its limits and messages, the same models, runtimes and
per-runtime batching threads. At most ``queue_size`` requests are in the server at once; more get 503 at once,
not a wait.
Errors are JSON ``{"error": "..."}``, one line naming what is wrong.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from demo.preprocess import MAX_FILE_BYTES, InputError, too_large
from export.files import ExportError

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def api_router(predictor: Any, queue_size: int, default_model: str) -> APIRouter:
    """``GET /api/models`` and ``POST /api/classify?model=&runtime=`` (body: the image file's bytes; model and
    runtime default to the UI's first choices)."""
    router = APIRouter(prefix="/api")
    slots = threading.Semaphore(queue_size)  # requests in the server; acquire(blocking=False) never waits

    @router.get("/models")
    def models() -> dict[str, Any]:
        return {"models": predictor.model_names, "runtimes": predictor.runtime_kinds, "default_model": default_model}

    @router.post("/classify", response_model=None)
    async def classify(
        request: Request, model: str | None = None, runtime: str | None = None
    ) -> dict[str, Any] | JSONResponse:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_FILE_BYTES:
            return _error(413, too_large(int(length)))
        if not slots.acquire(blocking=False):
            return _error(503, f"busy: {queue_size} requests are already in the server; retry shortly")
        try:
            body = bytearray()
            async for chunk in request.stream():  # a body without Content-Length is cut off at the limit too
                body += chunk
                if len(body) > MAX_FILE_BYTES:
                    return _error(413, too_large(len(body)))
            if not body:
                return _error(422, "no image: send the image file's bytes as the request body")
            model, kind = model or default_model, runtime or predictor.runtime_kinds[0]
            r = await run_in_threadpool(predictor.classify, bytes(body), model, kind)
        except InputError as e:
            return _error(422, f"cannot classify this file: {e}")
        except ExportError as e:
            return _error(500, f"{kind} failed for {model}: {e}")
        except Exception as e:  # a bug or a runtime's crash: still JSON for the script; the traceback in the log
            log.exception("classify failed")
            first = (str(e).splitlines() or [""])[0]
            return _error(500, f"internal error: {type(e).__name__}: {first}")
        finally:
            slots.release()
        return {
            "model": model,
            "runtime": kind,
            "provider": r.provider,
            "top": [{"label": label, "probability": p} for label, p in r.top.items()],
            "inference_ms": r.inference_ms,
            "batch": r.batch,
            "preprocess_ms": r.preprocess_ms,
            "notes": r.notes,
        }

    return router
