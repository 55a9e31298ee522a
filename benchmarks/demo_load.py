"""Bounded load run against the demo on loopback: N requests, C at a time, per model; p50/p99 latency, errors.

Each of ``--concurrency`` simulated users sends requests one after another (a closed loop: C always in flight),
through one of the demo's two APIs (``--api``, default both, each reported on its own):
- ``gradio``: what the page does. Each user has its own session, as a browser tab has: upload the image
  (``/gradio_api/upload``), join the queue for ``classify`` (``/gradio_api/queue/join``), read the session's
  event stream until the result comes; latency is measured around all three.
- ``rest``: ``POST /api/classify`` with the image bytes, JSON back (demo/rest.py).
Requests cycle over the Fashion-MNIST example PNGs, and the top label is compared with the example's class
(``wrong`` counts mismatches; they are not errors, the nets are not perfect).

Without ``--url`` a server (``python -m demo``) is started on a free port and stopped afterwards. The last
line printed is JSON with every figure.

``--slow-clients N`` (loopback only, N <= 256) repeats each concurrent run while N slow clients hold connections
to ``/api/classify``: each sends headers and then one byte of its body every half second, reconnecting when the
server cuts it off (408), until the run ends. Both runs are in the JSON line; ``slow_ok`` says whether the run
with slow clients had 0 errors and a p50 within 1.5x of the run without.

    python benchmarks/demo_load.py                       # the bundled Fashion-MNIST nets, 200 x 16, ORT
    python benchmarks/demo_load.py --api rest --runtime torch
    python benchmarks/demo_load.py --url http://127.0.0.1:7860 --models fmnist_proxyless_cpu --runtime torch
    python benchmarks/demo_load.py --models fmnist_proxyless_cpu --slow-clients 64 --sequential 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.examples import example_paths, label_of  # noqa: E402

P50_TARGET_MS = 100.0
MAX_SLOW_CLIENTS = 256
SLOW_P50_FACTOR = 1.5  # the p50 with slow clients holding connections may be at most this times the p50 without
TRICKLE_S = 0.5  # a slow client sends one byte this often
INFERENCE_RE = re.compile(r"\*\*([0-9.]+) ms\*\* inference")


class LoadError(RuntimeError):
    """A request that did not come back with a result."""


async def fn_index(client: httpx.AsyncClient, url: str, api_name: str = "classify") -> int:
    """The queue's id of an endpoint, from the app's config."""
    r = await client.get(f"{url}/config")
    r.raise_for_status()
    for dep in r.json()["dependencies"]:
        if dep.get("api_name") == api_name:
            return int(dep["id"])
    raise LoadError(f"the app has no {api_name!r} endpoint")


async def one_request(
    client: httpx.AsyncClient, url: str, session: str, fn: int, path: Path, model: str, runtime: str
) -> tuple[float, str, float]:
    """Upload, join the queue, read the session's stream until this event completes.

    Returns (seconds, top label, inference ms as the server measured it)."""
    t0 = time.perf_counter()
    r = await client.post(f"{url}/gradio_api/upload", files={"files": (path.name, path.read_bytes(), "image/png")})
    r.raise_for_status()
    image = {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
    body = {"data": [image, model, runtime], "fn_index": fn, "session_hash": session, "event_data": None}
    r = await client.post(f"{url}/gradio_api/queue/join", json=body)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    async with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
        async for line in stream.aiter_lines():
            if not line.startswith("data: "):
                continue
            msg = json.loads(line[6:])
            if msg.get("event_id") != event_id or msg.get("msg") != "process_completed":
                continue
            if not msg.get("success"):
                raise LoadError(f"server error: {msg.get('output')}")
            top, timing = msg["output"]["data"][:2]
            inference = INFERENCE_RE.search(timing)
            return time.perf_counter() - t0, top["label"], float(inference[1]) if inference else float("nan")
    raise LoadError("result stream ended without a result")


async def one_rest_request(
    client: httpx.AsyncClient, url: str, path: Path, model: str, runtime: str
) -> tuple[float, str, float]:
    """``POST /api/classify``: (seconds, top label, inference ms as the server measured it)."""
    t0 = time.perf_counter()
    r = await client.post(f"{url}/api/classify", params={"model": model, "runtime": runtime}, content=path.read_bytes())
    if r.status_code != 200:
        raise LoadError(f"HTTP {r.status_code}: {r.text[:200]}")
    out = r.json()
    return time.perf_counter() - t0, out["top"][0]["label"], float(out["inference_ms"])


async def run(url: str, model: str, runtime: str, requests: int, concurrency: int, api: str = "gradio") -> dict:
    """``concurrency`` users, each with its own session (as browser tabs), sharing ``requests`` between them."""
    paths = example_paths()
    latencies: list[float] = []
    inference_ms: list[float] = []
    errors: list[str] = []
    wrong = 0
    todo = iter(range(requests))

    async def send(client: httpx.AsyncClient, fn: int, session: str, path: Path) -> tuple[float, str, float]:
        if api == "rest":
            return await one_rest_request(client, url, path, model, runtime)
        return await one_request(client, url, session, fn, path, model, runtime)

    async def user(client: httpx.AsyncClient, fn: int) -> None:
        nonlocal wrong
        session = uuid.uuid4().hex
        for i in todo:
            path = paths[i % len(paths)]
            try:
                seconds, label, server_ms = await send(client, fn, session, path)
            except (httpx.HTTPError, LoadError, KeyError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(seconds)
            inference_ms.append(server_ms)
            wrong += label != label_of(path)

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        fn = await fn_index(client, url)
        try:
            await send(client, fn, uuid.uuid4().hex, paths[0])  # warm-up, not counted unless it fails
        except (httpx.HTTPError, LoadError, KeyError, ValueError) as e:
            errors.append(f"warm-up: {type(e).__name__}: {e}")
        t0 = time.perf_counter()
        await asyncio.gather(*(user(client, fn) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1e3
    stats = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))} if len(ms) else {}
    if inference_ms:
        stats["inference_p50_ms"] = float(np.nanpercentile(inference_ms, 50))
    return {
        "api": api,
        "model": model,
        "runtime": runtime,
        "requests": requests,
        "concurrency": concurrency,
        "errors": len(errors),
        "wrong": wrong,
        **{k: round(v, 2) for k, v in stats.items()},
        "throughput_rps": round(len(latencies) / wall, 1),
        "first_errors": errors[:3],
    }


@dataclass
class SlowStats:
    """What the slow clients met: connections opened and how many the server cut off (408) or closed."""

    connections: int = 0
    cut_off: int = 0


async def slow_client(url: str, stop: asyncio.Event, stats: SlowStats) -> None:
    """Hold a connection to ``/api/classify``, trickling a body that never completes, until ``stop``."""
    parsed = urlsplit(url)
    head = (
        f"POST /api/classify HTTP/1.1\r\nHost: {parsed.hostname}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        except OSError:
            await asyncio.sleep(TRICKLE_S)
            continue
        stats.connections += 1
        try:
            writer.write(head)
            while not stop.is_set():
                try:
                    await asyncio.wait_for(reader.read(4096), TRICKLE_S)
                except TimeoutError:
                    writer.write(b"\0")
                    await writer.drain()
                    continue
                stats.cut_off += 1  # answered (408) or closed: connect again
                break
        except OSError:
            stats.cut_off += 1
        finally:
            writer.close()


async def run_with_slow_clients(url: str, slow: int, *args: Any) -> dict:
    """``run(url, *args)`` while ``slow`` slow clients hold connections to the server."""
    stop, stats = asyncio.Event(), SlowStats()
    holders = [asyncio.create_task(slow_client(url, stop, stats)) for _ in range(slow)]
    if slow:
        await asyncio.sleep(1.0)  # every slow client is in the server, reading its body
    try:
        result = await run(url, *args)
    finally:
        stop.set()
        await asyncio.gather(*holders)
    return {**result, "slow_clients": slow, "slow_connections": stats.connections, "slow_cut_off": stats.cut_off}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models: list[str], log: Path, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "demo", "--port", str(port), "--models", ",".join(models)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the demo server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/config", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"error: the demo server was not ready after {timeout_s:.0f} s (log: {log})")


def bundled_fmnist_models() -> list[str]:
    import zoo

    return zoo.list_models(pretrained_only=True, dataset="fashion-mnist")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running demo (default: start one on a free loopback port)")
    p.add_argument("--models", nargs="+", help="zoo networks to load (default: the bundled Fashion-MNIST nets)")
    p.add_argument("--runtime", default="onnxruntime", help="runtime kind (default onnxruntime)")
    p.add_argument("--api", choices=("gradio", "rest", "both"), default="both", help="which API to load (default both)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument(
        "--sequential", type=int, default=50, help="requests sent one at a time first, for the unloaded latency"
    )
    p.add_argument(
        "--slow-clients",
        type=int,
        default=0,
        help=f"repeat each concurrent run with N slow clients holding connections (loopback, <= {MAX_SLOW_CLIENTS})",
    )
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.sequential < 0:
        print("error: --requests and --concurrency must be at least 1, --sequential at least 0", file=sys.stderr)
        return 2
    if not 0 <= args.slow_clients <= MAX_SLOW_CLIENTS:
        print(f"error: --slow-clients must be 0..{MAX_SLOW_CLIENTS}, got {args.slow_clients}", file=sys.stderr)
        return 2
    if args.slow_clients and args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        print(f"error: --slow-clients runs against loopback only, not {args.url}", file=sys.stderr)
        return 2
    models = args.models or bundled_fmnist_models()
    if not models:
        print("error: no bundled Fashion-MNIST nets (zoo/pretrained/); name some with --models", file=sys.stderr)
        return 2
    proc, url = None, args.url
    with tempfile.TemporaryDirectory() as tmp:
        if url is None:
            proc, url = start_server(models, Path(tmp) / "server.log")
        try:
            runs = []
            apis = ("gradio", "rest") if args.api == "both" else (args.api,)
            for model, api in ((m, a) for m in models for a in apis):
                plan = [(args.sequential, 1, 0), (args.requests, args.concurrency, 0)]
                if args.slow_clients:
                    plan.append((args.requests, args.concurrency, args.slow_clients))
                for n, c, slow in plan:
                    if n < 1:
                        continue
                    call = (model, args.runtime, n, c, api)
                    result = asyncio.run(run_with_slow_clients(url.rstrip("/"), slow, *call))
                    print(
                        f"{model} on {args.runtime}, {api} API: {n} requests x{c} with {slow} slow clients: "
                        f"p50 {result.get('p50_ms')} ms, p99 {result.get('p99_ms')} ms (inference p50 "
                        f"{result.get('inference_p50_ms')} ms), errors {result['errors']}, wrong {result['wrong']}, "
                        f"{result['throughput_rps']} req/s"
                    )
                    runs.append(result)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(15)
    ok = {
        api: all(r["errors"] == 0 and r.get("p50_ms", float("inf")) < P50_TARGET_MS for r in runs if r["api"] == api)
        for api in dict.fromkeys(r["api"] for r in runs)
    }
    report = {"benchmark": "demo_load", "cpu_cores": os.cpu_count(), "p50_target_ms": P50_TARGET_MS, "ok": ok}
    if args.slow_clients:
        report["slow_ok"] = slow_ok(runs)
    print(json.dumps({**report, "runs": runs}))
    return 1 if any(r["errors"] for r in runs) or not all(report.get("slow_ok", {}).values()) else 0


def slow_ok(runs: list[dict]) -> dict[str, bool]:
    """Per model and API: the run with slow clients had 0 errors and a p50 within SLOW_P50_FACTOR of the run
    without them (same requests and concurrency)."""
    verdicts = {}
    for held in (r for r in runs if r["slow_clients"]):
        base = next(
            r
            for r in runs
            if not r["slow_clients"]
            and (r["model"], r["api"], r["concurrency"]) == (held["model"], held["api"], held["concurrency"])
        )
        within = held.get("p50_ms", float("inf")) <= SLOW_P50_FACTOR * base.get("p50_ms", 0.0)
        verdicts[f"{held['model']}/{held['api']}"] = held["errors"] == 0 and within
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
