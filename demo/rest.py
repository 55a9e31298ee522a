"""The demo's plain HTTP API beside the Gradio UI: one request per image, for scripts and load.

Gradio's queue API takes three exchanges per image (upload, join the queue, read the event stream) and about
25 ms of server CPU; a script that only wants the top-5 posts the image and gets JSON back, as the raw body or
as a multipart form (what ``curl -F`` sends):

    curl --data-binary @shoe.png 'http://127.0.0.1:7860/api/classify?model=fmnist_proxyless_cpu&runtime=onnxruntime'
    curl -F file=@shoe.png 'http://127.0.0.1:7860/api/classify'

It shares the UI's ``Predictor``: the same decoder with its limits and messages, the same models, runtimes and
per-runtime batching threads. Slow clients cost a connection, never the service: a request takes one of the
``queue_size`` classification slots only once its whole body is in memory; the body must arrive within
``read_timeout`` seconds (408 otherwise) and at most ``max_uploads`` bodies are read at once. A full server
answers 503 at once, not after a wait, and so does a runtime still being built (with Retry-After). Errors are
JSON ``{"error": "..."}``, one line naming what is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from demo.limits import Limits, NotReady
from demo.preprocess import MAX_FILE_BYTES, ChoiceError, InputError, too_large
from export.files import ExportError

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around a file of up to MAX_FILE_BYTES
FILE_FIELD = "file"  # curl -F file=@IMAGE


class _Refused(Exception):
    """A request answered early with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():  # a body without Content-Length is cut off at the limit too
        body += chunk
        if len(body) > limit:
            raise _Refused(413, too_large(len(body)))
    return bytes(body)


async def _multipart_file(request: Request, body: bytes) -> bytes:
    """The file of a ``multipart/form-data`` body (the ``file`` field, else the only file sent)."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=16) as form:
            files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise _Refused(422, f"no image: the form has no file field; send -F {FILE_FIELD}=@IMAGE")
            chosen = dict(files).get(FILE_FIELD, files[0][1])
            data = await chosen.read()
    except (MultiPartException, HTTPException) as e:
        raise _Refused(422, f"bad multipart form: {getattr(e, 'detail', None) or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise _Refused(413, too_large(len(data)))
    return data


async def _image_bytes(request: Request, limits: Limits, uploads: threading.BoundedSemaphore) -> bytes:
    """The uploaded image's bytes, read within the deadline while holding one of the upload slots."""
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    limit = MAX_FILE_BYTES + (MULTIPART_OVERHEAD if multipart else 0)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _Refused(413, too_large(int(length)))
    if not uploads.acquire(blocking=False):
        raise _Refused(503, f"busy: {limits.max_uploads} uploads are already in progress; retry shortly")
    try:
        body = await asyncio.wait_for(_read_body(request, limit), limits.read_timeout)
    except TimeoutError:
        raise _Refused(408, f"the upload did not arrive within {limits.read_timeout:g} s") from None
    finally:
        uploads.release()
    if not body:
        raise _Refused(422, "no image: send the image file's bytes as the request body, or -F file=@IMAGE")
    return await _multipart_file(request, body) if multipart else body


def api_router(predictor: Any, limits: Limits, default_model: str) -> APIRouter:
    """``GET /api/models`` and ``POST /api/classify?model=&runtime=`` (body: the image file's bytes, or a
    multipart form with a ``file`` field; model and runtime default to the UI's first choices)."""
    router = APIRouter(prefix="/api")
    slots = threading.Semaphore(limits.queue_size)  # requests being classified; acquire(blocking=False) never waits
    uploads = threading.BoundedSemaphore(limits.max_uploads)

    @router.get("/models")
    def models() -> dict[str, Any]:
        return {"models": predictor.model_names, "runtimes": predictor.runtime_kinds, "default_model": default_model}

    @router.post("/classify", response_model=None)
    async def classify(
        request: Request, model: str | None = None, runtime: str | None = None
    ) -> dict[str, Any] | JSONResponse:
        model, kind = model or default_model, runtime or predictor.runtime_kinds[0]
        try:
            image = await _image_bytes(request, limits, uploads)
        except _Refused as e:
            return _error(e.status, str(e))
        except ClientDisconnect:  # nobody to answer; one line in the log, no traceback
            log.info("client went away during the upload")
            return _error(400, "client disconnected")
        if not slots.acquire(blocking=False):
            return _error(503, f"busy: {limits.queue_size} requests are already in the server; retry shortly")
        try:
            r = await run_in_threadpool(predictor.classify, image, model, kind)
        except ChoiceError as e:
            return _error(422, str(e))
        except NotReady as e:
            return _error(503, f"{e}; retry in {e.retry_after} s", e.retry_after)
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
