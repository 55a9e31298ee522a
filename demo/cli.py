"""``proxyless demo`` (= ``python -m demo``): serve the Gradio classification demo on loopback, offline."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from demo.limits import MAX_CONNECTIONS, MAX_UPLOADS, READ_TIMEOUT_S, Limits, default_max_connections
from zoo.options import add_options, from_args, option

# Set before Gradio is imported (it reads them then or when the queue starts). Offline: no usage analytics, no
# Hub telemetry or downloads. Gradio's queue also rebuilds a pandas table of up to 10,000 past events after
# every request (for its monitoring page): here at most 1,000, rebuilt every 100 events, so a request stays cheap.
SERVER_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "GRADIO_ANALYTICS_MAX_EVENTS": "1000",
    "GRADIO_ANALYTICS_CACHE_FREQUENCY": "100",
}


@dataclass
class StderrProgress:
    """Start-up progress on stderr, each line with the seconds since start: a first start imports Gradio and
    PyTorch and exports every runtime, a minute or more that would otherwise print nothing (issue 40)."""

    start: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:5.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DemoOptions:
    """``proxyless demo``: each field one option (zoo.options)."""

    host: str = option("127.0.0.1", "address to listen on (default: loopback only)")
    port: int = option(7860, "port")
    models: str | None = option(None, "comma-separated zoo networks to offer (default: all with weights present)")
    concurrency: int = option(2, "requests classified at once")
    threads: int = option(
        1, "intra-op threads per inference (default 1: requests run side by side; small nets gain nothing from more)"
    )
    max_batch: int = option(
        16, "requests waiting for a runtime run together, up to this many (default 16; 1: no batching)"
    )
    queue_size: int = option(64, "requests allowed to wait")
    read_timeout: float = option(
        READ_TIMEOUT_S,
        f"seconds a request head, or a plain-API upload, may take to arrive (default {READ_TIMEOUT_S:g}; "
        "slower uploads get 408, connections that send no complete request are closed)",
    )
    max_uploads: int = option(
        MAX_UPLOADS, f"plain-API uploads read at once (default {MAX_UPLOADS}; each holds at most 10 MiB)"
    )
    max_connections: int | None = option(
        None,
        f"open connections (default {MAX_CONNECTIONS}, or half the open-file limit if less); at the limit the "
        "longest idle one is closed to make room",
    )
    no_progress: bool = option(False, "print nothing on stderr while starting", switch=True)
    no_warm: bool = option(False, "build runtimes on first use instead of at start", switch=True)
    cache_dir: str | None = option(None, "where exported runtimes are kept (default ~/.cache/proxyless-zoo/runtimes)")
    onnx_exporter: str = option("dynamo", "ONNX exporter", choices=("dynamo", "torchscript"))
    write_examples: str | None = option(
        None, "write example PNGs of the default model's dataset to DIR and exit", metavar="DIR"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxyless demo", description=__doc__)
    add_options(p, DemoOptions)
    return p


def quiet_progress(message: str) -> None:
    """``--no-progress``."""


def main(argv: list[str] | None = None) -> int:
    args = from_args(DemoOptions, build_parser().parse_args(argv))
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port (1..65535)", file=sys.stderr)
        return 2
    if args.max_connections is None:
        args = dataclasses.replace(args, max_connections=default_max_connections())
    counts = (args.concurrency, args.queue_size, args.threads, args.max_batch, args.max_uploads, args.max_connections)
    if min(counts) < 1:
        print(
            "error: --concurrency, --queue-size, --threads, --max-batch, --max-uploads and --max-connections must be "
            "at least 1",
            file=sys.stderr,
        )
        return 2
    if not (math.isfinite(args.read_timeout) and args.read_timeout > 0):  # inf: a silent client holds its slot
        print(f"error: --read-timeout must be a positive number of seconds, got {args.read_timeout}", file=sys.stderr)
        return 2
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)
    if args.write_examples:
        from demo.app import PREFERRED_MODEL
        from demo.examples import write_examples
        from zoo.registry import get_model_info

        written = write_examples(args.write_examples, get_model_info(PREFERRED_MODEL).dataset)
        print(f"wrote {len(written)} examples to {args.write_examples}")
        return 0
    progress = quiet_progress if args.no_progress else StderrProgress()
    progress("importing Gradio and PyTorch")
    from demo.app import DEFAULT_CACHE_DIR, launch  # imports Gradio: after the environment above is set

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    cache_dir = Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE_DIR
    try:
        launch(
            host=args.host,
            port=args.port,
            models=models,
            concurrency=args.concurrency,
            limits=Limits(args.queue_size, args.read_timeout, args.max_uploads, args.max_connections),
            warm=not args.no_warm,
            cache_dir=cache_dir,
            onnx_exporter=args.onnx_exporter,
            threads=args.threads,
            max_batch=args.max_batch,
            progress=progress,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
