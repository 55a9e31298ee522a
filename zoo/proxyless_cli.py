"""The ``proxyless`` command: one entry point, a subcommand per package (each also ``python -m <package>``)."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "zoo": "networks, weights, registry, Hub publishing",
    "search": "search spaces, latency tables, architecture search, training",
    "export": "TorchScript / ONNX / .pt2 / OpenVINO / TensorRT / int8 export, parity and latency reports",
    "demo": "the Gradio classification demo",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"  {name:<8}{what}" for name, what in SUBCOMMANDS.items()]
        print("usage: proxyless {zoo,search,export,demo} ...\n\nsubcommands:\n" + "\n".join(lines))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    # Imported by name: zoo is the foundation and must not depend on the packages built on it.
    cli = importlib.import_module(f"{argv[0]}.cli")
    return int(cli.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
