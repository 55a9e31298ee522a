"""The Hub model card (README.md) of a published zoo network, rendered from what is known about it.

Everything in the card comes from the model's ``ModelInfo`` (arch, metadata, metrics incl. ``search`` / ``train``)
and from export report JSON files (read here as plain JSON: zoo never imports ``export``). Nothing is invented:
a figure that is not recorded is left out. The YAML front matter is built with ``huggingface_hub.ModelCardData``
so that ``ModelCard.load(...).data.eval_results`` gives back exactly the accuracy that went in.

A published elastic supernet gets its own card (``render_supernet_card``), from its ``supernet.json`` and
predictor: it is not one network, so it has no ``model-index`` (its figures are on a validation split held out from
the training set, not a benchmark's test split) and its usage is ``proxyless search specialize``.
"""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.arch import ArchSpec
from zoo.network import mbconv_macs
from zoo.registry import ModelInfo
from zoo.runtimes.registry import runtime_label
from zoo.supernet_folder import SupernetFolder

CITATION = """@inproceedings{cai2019proxylessnas,
  title     = {{ProxylessNAS}: Direct Neural Architecture Search on Target Task and Hardware},
  author    = {Han Cai and Ligeng Zhu and Song Han},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2019},
  url       = {https://arxiv.org/abs/1812.00332}
}"""
OFA_CITATION = """@inproceedings{cai2020once,
  title     = {Once-for-All: Train One Network and Specialize it for Efficient Deployment},
  author    = {Han Cai and Chuang Gan and Tianzhe Wang and Zhekai Zhang and Song Han},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2020},
  url       = {https://arxiv.org/abs/1908.09791}
}"""
# zoo dataset names -> (Hub dataset id, display name, split the reported accuracy is measured on).
DATASETS = {
    "fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST", "test"),
    "cifar10": ("uoft-cs/cifar10", "CIFAR-10", "test"),
    "imagenet": ("ILSVRC/imagenet-1k", "ImageNet-1k", "validation"),
}


# What markdown reads as syntax in running text or a table cell; "_" only at a word's edge (CommonMark never
# takes an underscore inside a word as emphasis, so `bundled_seed` stays as written).
_MARKDOWN = re.compile(r"[\\`*\[\]|~#]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md(value: Any) -> str:
    """Config text (a name, description, metadata value) as literal card text, on one line: what its author wrote
    is shown, never rendered as HTML, a link, emphasis, a heading or an extra table cell."""
    text = " ".join(str(value).split())
    return html.escape(_MARKDOWN.sub(lambda m: "\\" + m.group(0), text), quote=False)


def code(value: Any) -> str:
    """``value`` as an inline code span, on one line, fenced with more backticks than it holds; a ``|`` is
    escaped, which a table cell needs and GitHub/Hub markdown shows as ``|`` inside code."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def py_str(value: str) -> str:
    """``value`` as a Python string literal for a card's code block: whatever it holds, the snippet stays the
    snippet (quotes and newlines escaped; backticks too, so it cannot close the block's fence)."""
    return json.dumps(value).replace("`", "\\u0060")


class CardError(ValueError):
    """A report file or model description the card cannot be written from."""


@dataclass(frozen=True)
class LatencyRow:
    """One measured (or predicted) latency: where, with what, how much, and which file/metadata says so."""

    hardware: str
    runtime: str
    batch: int | None
    latency_ms: float
    source: str


def read_report(path: str | Path) -> dict[str, Any]:
    """An export benchmark report (``proxyless export`` JSON: ``env``, ``settings``, ``models``, ``results``)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise CardError(f"report {path}: no such file") from None
    except OSError as e:
        raise CardError(f"report {path}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"report {path}: not valid JSON ({e})") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise CardError(f"report {path}: not an export benchmark report (no 'results' list)")
    for key in ("env", "settings"):
        if not isinstance(report.get(key), dict):
            raise CardError(f"report {path}: not an export benchmark report (no {key!r})")
    return {**report, "_path": str(path)}


def report_rows(report: Mapping[str, Any], model: str) -> list[LatencyRow]:
    """p50 latency per runtime and batch of ``model`` (a report holding one model counts as this model's)."""
    origin = str(report.get("_path", "report"))
    results = [r for r in report["results"] if isinstance(r, Mapping)]
    names = list(dict.fromkeys(str(r.get("model")) for r in results))
    if model not in names and len(names) != 1:
        raise CardError(f"report {origin}: no results for {model!r} (it has {', '.join(names) or 'none'})")
    env, settings = report["env"], report["settings"]
    gpu = settings.get("device") == "cuda" and env.get("gpu")
    threads = settings.get("threads")
    hardware = str(gpu or env.get("cpu") or "unknown CPU") + (f", {threads} thread(s)" if threads and not gpu else "")
    wanted, rows = model if model in names else names[0], []
    for r in results:
        if str(r.get("model")) != wanted or _ms(r.get("p50_ms")) is None:
            continue
        runtime = str(r.get("runtime")) + (f" ({r['provider']})" if r.get("provider") else "")
        rows.append(LatencyRow(hardware, runtime, r.get("batch"), float(r["p50_ms"]), f"{Path(origin).name} (p50)"))
    return rows


def _ms(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


# Hardware words of the metadata's latency keys, as a reader of the card names them (runtimes: the registry's labels).
HARDWARE_WORDS = {"cpu": "CPU", "gpu": "GPU", "mobile": "mobile", "pixel1": "Pixel 1", "h200": "NVIDIA H200"}


def describe_latency_key(key: str) -> tuple[str, str, int | None, bool]:
    """``cpu_onnxruntime_b1_pred`` -> ("CPU", "ONNX Runtime", 1, True): hardware, runtime, batch, predicted.
    The metadata keeps compact keys; the card should not show them raw."""
    words = key.split("_")
    predicted = words[-1] == "pred"
    words = words[:-1] if predicted else words
    batch = int(words[-1][1:]) if words and re.fullmatch(r"b\d+", words[-1]) else None
    words = words[:-1] if batch is not None else words
    runtime = [label for w in words if (label := runtime_label(w))]
    hardware = [HARDWARE_WORDS.get(w, w) for w in words if not runtime_label(w)]
    if hardware[1:] and hardware[0] in ("GPU", "mobile"):  # "GPU NVIDIA H200" -> "NVIDIA H200"
        hardware = hardware[1:]
    return " ".join(hardware) or key, " ".join(runtime), batch, predicted


def metadata_rows(metrics: Mapping[str, Any]) -> list[LatencyRow]:
    """Latencies recorded in the model's metadata (``metrics.latency_ms``: {"<hardware>_<runtime>_b<N>[_pred]": ms}):
    measured ones (p50 on the machine that recorded them) first, then the latency models' predictions."""
    rows = []
    for key, ms in dict(metrics.get("latency_ms") or {}).items():
        if _ms(ms) is None:
            continue
        hardware, runtime, batch, predicted = describe_latency_key(key)
        source = "predicted (latency table)" if predicted else "measured when bundled (p50; your machine differs)"
        rows.append(LatencyRow(hardware, runtime, batch, float(ms), source))
    return sorted(rows, key=lambda r: r.source.startswith("predicted"))


def _unmeasured(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """Runtimes a report could not measure on its machine, and why (e.g. TensorRT without a GPU)."""
    notes = {f"{kind}: {why}" for rep in reports for kind, why in dict(rep.get("unavailable") or {}).items()}
    return [f"Not measured: {md(n)}." for n in sorted(notes)]


def eval_result(info: ModelInfo) -> Any | None:
    """The ``model-index`` entry for the top-1 accuracy, or None when no accuracy is recorded."""
    from huggingface_hub import EvalResult

    top1 = info.metrics.get("top1")
    if not isinstance(top1, int | float):
        return None
    hub_id, display, split = DATASETS.get(info.dataset, (info.dataset, info.dataset, "test"))
    return EvalResult(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=hub_id,
        dataset_name=display,
        dataset_split=split,
        metric_type="accuracy",
        metric_name="Top-1 accuracy",
        metric_value=float(top1),
    )


def front_matter(info: ModelInfo, license: str, has_onnx: bool) -> str:
    from huggingface_hub import ModelCardData

    result = eval_result(info)
    tags = ["image-classification", "proxylessnas", "neural-architecture-search", "proxyless-zoo", "safetensors"]
    data = ModelCardData(
        library_name="pytorch",
        license=license,
        datasets=[DATASETS[info.dataset][0]] if info.dataset in DATASETS else None,
        pipeline_tag="image-classification",
        tags=[*tags, "onnx"] if has_onnx else tags,
        model_name=info.name,
        metrics=["accuracy"] if result else None,
        eval_results=[result] if result else None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _fmt_count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} K"


def block_table(spec: ArchSpec) -> str:
    """Stem, every block, feature mix and classifier, with shapes and MACs (what the paper's figures draw)."""
    size = -(-spec.input_size // spec.stem_stride)
    stem_macs = size * size * spec.in_chans * spec.stem_channels * spec.stem_kernel**2
    rows = [
        "| # | layer | stride | channels | output | MACs |",
        "|---|---|---|---|---|---|",
        f"| stem | conv {spec.stem_kernel}x{spec.stem_kernel} + BN + ReLU6 | {spec.stem_stride} | "
        f"{spec.in_chans} → {spec.stem_channels} | {size}x{size} | {_fmt_count(stem_macs)} |",
    ]
    cin = spec.stem_channels
    for i, b in enumerate(spec.blocks):
        if b.zero:
            rows.append(f"| {i} | zero (layer skipped) | 1 | {cin} → {cin} | {size}x{size} | 0 |")
            continue
        macs = mbconv_macs(cin, b.out_channels, b.kernel, b.stride, b.expand, size)
        size = -(-size // b.stride)
        op = f"MBConv{b.expand} {b.kernel}x{b.kernel}" + (" + identity" if b.residual else "")
        rows.append(f"| {i} | {op} | {b.stride} | {cin} → {b.out_channels} | {size}x{size} | {_fmt_count(macs)} |")
        cin = b.out_channels
    if spec.feature_mix:
        macs = size * size * cin * spec.feature_mix
        mix = f"{cin} → {spec.feature_mix} | {size}x{size} | {_fmt_count(macs)}"
        rows.append(f"| mix | conv 1x1 + BN + ReLU6 | 1 | {mix} |")
    head = spec.head_channels
    rows.append(
        f"| head | avg pool + linear | – | {head} → {spec.num_classes} | 1x1 | {_fmt_count(head * spec.num_classes)} |"
    )
    return "\n".join(rows)


def _value_text(value: Any) -> str:
    """A metadata value as card text: a number rounded, a structure as JSON in code, text escaped (``md``)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping | list):
        return code(json.dumps(value, sort_keys=True))
    return md(value)


def _provenance(metrics: Mapping[str, Any], key: str, what: str) -> list[str]:
    record = metrics.get(key)
    if not record:
        return [f"**{what}:** not recorded in this model's metadata."]
    if not isinstance(record, Mapping):
        return [f"**{what}:** {_value_text(record)}"]
    return [f"**{what}:**", "", *[f"- {md(k)}: {_value_text(v)}" for k, v in record.items()]]


def _provenance_sections(metrics: Mapping[str, Any]) -> list[str]:
    """How the net came about: a ProxylessNAS search or specialization from an elastic supernet, the protocol's
    seeds and intervals (any net's that has them), then its training."""
    specialized = ("specialized", "Specialized from an elastic supernet")
    keys = [specialized] if metrics.get("specialized") else [("search", "Search")]
    if metrics.get("specialized") or metrics.get("protocol"):
        keys.append(("protocol", "Evaluation protocol"))
    lines: list[str] = []
    for key, what in [*keys, ("train", "Training")]:
        lines += [*_provenance(metrics, key, what), ""]
    return lines[:-1]


def _latency_table(rows: Sequence[LatencyRow]) -> list[str]:
    if not rows:
        return ["No latency has been measured for this model yet (`proxyless export` writes a report)."]
    lines = ["| hardware / runtime | batch | latency (ms) | source |", "|---|---|---|---|"]
    for r in rows:
        where = f"{md(r.hardware)} / {md(r.runtime)}" if r.runtime else md(r.hardware)
        batch = "" if r.batch is None else md(r.batch)
        lines.append(f"| {where} | {batch} | {r.latency_ms:.3g} | {md(r.source)} |")
    return lines


def _torch_hub(repo_id: str, revision: str, code_repo: str | None) -> list[str]:
    """torch.hub loads code from GitHub: from ``code_repo`` when the publisher named it, else from a local clone."""
    where, local = (py_str(code_repo), "") if code_repo else ('"path/to/proxyless-zoo"', ', source="local"')
    whose = f"the GitHub repo {md(code_repo)}" if code_repo else "a clone of proxyless-zoo"
    pinned = py_str(repo_id + ("" if revision == "main" else f"@{revision}"))
    return [
        f"With torch.hub (the `hf_hub` entrypoint of {whose}'s `hubconf.py`):",
        "",
        "```python",
        "import torch",
        "",
        f'model = torch.hub.load({where}, "hf_hub", {pinned}{local}).eval()',
        "```",
    ]


def _usage(info: ModelInfo, repo_id: str, revision: str, has_onnx: bool, code_repo: str | None) -> list[str]:
    source = py_str(f"hf-hub:{repo_id}" + ("" if revision == "main" else f"@{revision}"))
    rev_arg = "" if revision == "main" else f", revision={py_str(revision)}"
    c, h, w = info.input_size
    lines = [
        "With proxyless-zoo (the arch and metadata come from this repo's `config.json`):",
        "",
        "```python",
        "from zoo import create_model",
        "",
        f"model = create_model({source}, pretrained=True).eval()  # sha256-checked, cached (HF_HUB_OFFLINE=1 ok)",
        f"logits = model(images)  # float [N, {c}, {h}, {w}], normalized with the mean/std above",
        "```",
        "",
        *_torch_hub(repo_id, revision, code_repo),
    ]
    if has_onnx:
        lines += [
            "",
            "With ONNX Runtime (no PyTorch needed):",
            "",
            "```python",
            "import numpy as np, onnxruntime as ort",
            "from huggingface_hub import hf_hub_download",
            "",
            f'session = ort.InferenceSession(hf_hub_download({py_str(repo_id)}, "model.onnx"{rev_arg}))',
            f"x = np.zeros((1, {c}, {h}, {w}), np.float32)  # your normalized image(s)",
            "logits = session.run(None, {session.get_inputs()[0].name: x})[0]",
            "```",
        ]
    lines += ["", "Offline (`HF_HUB_OFFLINE=1`), the same calls read the local Hugging Face cache."]
    return lines


def render_card(
    info: ModelInfo,
    *,
    repo_id: str,
    weights_sha256: str,
    revision: str = "main",
    reports: Sequence[Mapping[str, Any]] = (),
    has_onnx: bool = False,
    license: str = "mit",
    code_repo: str | None = None,
) -> str:
    """The README.md text: YAML front matter, then description, architecture, results, provenance, usage, citation."""
    metrics = info.metrics
    c, h, w = info.input_size
    _, display, split = DATASETS.get(info.dataset, (info.dataset, info.dataset, "test"))
    top1 = metrics.get("top1")
    display = md(display)
    accuracy = f"{top1 * 100:.2f}% top-1 on the {display} {split} split" if isinstance(top1, int | float) else None
    latency = [row for rep in reports for row in report_rows(rep, info.name)]
    latency += metadata_rows(metrics)
    unmeasured = _unmeasured(reports)
    if isinstance(info.arch, ArchSpec):
        arch = [block_table(info.arch)]
    else:
        arch = [f"A {code(info.arch.to_dict().get('format'))} network; its full spec is in `config.json`."]
    files = ["`model.safetensors` (weights)", "`config.json` (arch spec + metadata + weights sha256)"]
    if has_onnx:
        files.append("`model.onnx` (ONNX export of the same weights)")
    lines = [
        f"# {md(info.name)}",
        "",
        f"A ProxylessNAS network (MBConv blocks chosen by hardware-aware architecture search) for {display} "
        f"image classification: {info.num_classes} classes, input {c}x{h}x{w}, published with proxyless-zoo.",
        "",
        "## Model details",
        "",
        f"- Parameters: {_fmt_count(info.params)} ({info.params:,})",
        f"- MACs per image: {_fmt_count(info.macs)} ({info.macs:,})",
        f"- Input: {c}x{h}x{w}, normalize with mean {list(info.mean)}, std {list(info.std)}",
        f"- Classes: {', '.join(map(md, info.categories[:10]))}{', ...' if len(info.categories) > 10 else ''}",
        f"- Accuracy: {accuracy or 'not recorded'}" + (f" ({md(metrics['source'])})" if "source" in metrics else ""),
        f"- Weights sha256: `{weights_sha256}`",
        f"- Provenance: {md(info.source)}",
        f"- Files: {', '.join(files)}",
        "",
        "## Architecture",
        "",
        *arch,
        "",
        "## Latency",
        "",
        *_latency_table(latency),
        *(["", *unmeasured] if unmeasured else []),
        "",
        "## How it was searched and trained",
        "",
        *_provenance_sections(metrics),
        "",
        "## Usage",
        "",
        *_usage(info, repo_id, revision, has_onnx, code_repo),
        "",
        "## Citation",
        "",
        "Cai, Zhu, Han. ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware. ICLR 2019; "
        "[arXiv:1812.00332](https://arxiv.org/abs/1812.00332).",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return front_matter(info, license, has_onnx) + "\n".join(lines)


def _pct(value: Any) -> str:
    return f"{value * 100:.2f}%" if isinstance(value, int | float) and not isinstance(value, bool) else "not recorded"


def _supernet_space(sn: SupernetFolder) -> list[str]:
    s = sn.space
    rows = ["| stage | width | stride | depths |", "|---|---|---|---|"]
    for i, (width, stride, lo, hi) in enumerate(zip(s.widths, s.strides, s.min_depths, s.max_depths, strict=True)):
        rows.append(f"| {i + 1} | {width} | {stride} | {lo}..{hi} |")
    kernels, expands = ", ".join(map(str, s.kernels)), ", ".join(map(str, s.expands))
    k, e = s.baseline_op
    return [
        f"Space {code(s.name)}: input {'x'.join(map(str, s.input_size))}, {s.num_classes} classes, "
        f"{s.subnets:,} subnets.",
        "",
        *rows,
        "",
        "- Elastic depth: each stage runs its first d layers, d in the range above.",
        f"- Elastic kernel: {kernels} per layer (one {max(s.kernels)}x{max(s.kernels)} depthwise kernel; smaller "
        "kernels are its centre crop).",
        f"- Elastic expand ratio: {expands} per layer (channel slices of the widest expansion).",
        f"- Largest subnet: {code(s.largest)}; smallest: {code(s.smallest)}.",
        f"- The MobileNetV2-style baseline (k{k} e{e} at full depth) is the subnet {code(s.baseline)}: `--factor` "
        "targets are fractions of its latency.",
    ]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _supernet_figures(sn: SupernetFolder) -> list[str]:
    v, r = sn.validation, sn.recipe
    subnets = [k.removeprefix("val_top1_") for k in v if k.startswith("val_top1_")]
    if not subnets:
        return ["No validation figures are recorded in `supernet.json`."]
    where = f"the {r['val_size']:,} " if isinstance(r.get("val_size"), int) else "the "
    calib = f" on {r['calib_images']:,} training images" if isinstance(r.get("calib_images"), int) else ""
    lines = [
        f"Supernet-inherited top-1 on {where}validation images held out from the {code(r.get('dataset', '?'))} "
        f"training set (never the test set), batch-norm statistics recalibrated{calib}, no fine-tuning:",
        "",
        "| subnet | top-1 |",
        "|---|---|",
        *[f"| {md(name)} | {_pct(v[f'val_top1_{name}'])} |" for name in subnets],
    ]
    if isinstance(v.get("steps"), int):
        seconds = v.get("train_seconds")
        took = f" in {_duration(seconds)}" if isinstance(seconds, int | float) else ""
        lines += ["", f"Trained for {v['steps']:,} steps{took}."]
    return lines


def _supernet_predictor(sn: SupernetFolder) -> list[str]:
    p = sn.predictor
    if p is None:
        return [
            "None is published with this supernet, and `proxyless search specialize` needs one: download the repo "
            "(`hf download REPO --local-dir DIR`) and fit one with "
            "`proxyless search elastic-predictor --supernet DIR`.",
        ]
    measured = f" ({sn.measured_subnets} measured subnets are in `subnet_accuracy.csv`)" if sn.measured_subnets else ""
    return [
        "Once-for-All's MLP (per layer a one-hot kernel and expand ratio; 3 x 400 hidden units) from a subnet to its "
        f"inherited validation accuracy, fit on {p.train_subnets} subnets{measured}. On {p.heldout_subnets} "
        f"held-out subnets: RMSE {p.rmse * 100:.2f} points (their accuracies spread {p.heldout_std * 100:.2f} "
        f"points), Kendall tau {p.kendall_tau:.3f}. `specialize` ranks subnets with it, then measures the best "
        f"few on the validation split; it is fetched with the supernet.",
    ]


def fenced(lang: str, *lines: str) -> list[str]:
    """A code block whose fence is longer than any run of backticks in it: quoted text cannot close it early."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, *lines, fence]


def _supernet_usage(sn: SupernetFolder, source: str) -> list[str]:
    """How to specialize from it; the space name and source are quoted for the shell and Python they land in."""
    space = " ".join(sn.space.name.split())  # one line: a code block's line stays one line
    out, source = f"{space}_cpu_075", shlex.quote(source)
    return [
        "With proxyless-zoo, specialize it for a latency table in minutes, with no training: evolutionary search "
        "under the latency limit, then the best subnet is extracted with its inherited weights (BN recalibrated) "
        "into an ordinary zoo weights folder.",
        "",
        *fenced(
            "bash",
            f"proxyless search specialize --supernet {source} --lut cpu --factor 0.75 --out {shlex.quote(out)}",
            f"proxyless search extract --supernet {source} --subnet baseline --out {shlex.quote(space + '_baseline')}",
        ),
        "",
        f"`--lut` takes the project's latency tables (`cpu`, `mobile`, `gpu`, ...) or one profiled on your hardware "
        f"({code(f'proxyless search profile --space {shlex.quote(space)} --out TABLE')}); "
        "`--target-ms X` instead of `--factor F` sets "
        "the limit in the table's unit. The folder written is a zoo network like any other (`proxyless export` "
        "and `proxyless zoo publish` take it too):",
        "",
        *fenced(
            "python",
            "import os",
            "",
            f'os.environ["PROXYLESS_ZOO_EXTRA"] = {py_str(out)}  # registers the folder, named after it',
            "from zoo import create_model",
            "",
            f"model = create_model({py_str(out)}, pretrained=True).eval()  # sha256-checked",
        ),
        "",
        "The supernet itself cannot be loaded with `create_model` or `torch.hub`: they build one network, and this "
        "is a family of them. The files are fetched into the Hugging Face cache, sha256-checked when loaded; "
        "with `HF_HUB_OFFLINE=1` the same commands read the cache.",
    ]


def render_supernet_card(sn: SupernetFolder, *, repo_id: str, revision: str = "main", license: str = "mit") -> str:
    """The README.md of a published supernet: what it is, its space, recipe, figures, predictor, files, usage."""
    from huggingface_hub import ModelCardData

    dataset = str(sn.recipe.get("dataset", ""))
    tags = ["proxylessnas", "once-for-all", "neural-architecture-search", "supernet", "proxyless-zoo", "safetensors"]
    data = ModelCardData(
        library_name="pytorch",
        license=license,
        datasets=[DATASETS[dataset][0]] if dataset in DATASETS else None,
        tags=tags,
    )
    source = f"hf-hub:{repo_id}" + ("" if revision == "main" else f"@{revision}")
    descriptions = {
        "supernet.safetensors": f"weights of the whole supernet (sha256 `{sn.sha256}`)",
        "supernet.json": "the space's full definition, the training recipe and figures, the weights' sha256",
        "predictor.safetensors": "the accuracy predictor's weights"
        + (f" (sha256 `{sn.predictor.sha256}`)" if sn.predictor else ""),
        "predictor.json": "the predictor's held-out fit figures and the supernet sha256 it was fit for",
        "subnet_accuracy.csv": "the measured subnets the predictor was fit on (`subnet`, `val_top1`)",
    }
    recipe = [f"| {md(k)} | {_value_text(v)} |" for k, v in sn.recipe.items()]
    lines = [
        f"# {md(sn.space.name)} elastic supernet",
        "",
        f"A **weight-sharing elastic supernet** (Once-for-All style), **not a single network**: one set of weights "
        f"serves all {sn.space.subnets:,} subnets of the {code(sn.space.name)} space, and a net for a new latency "
        "table is found by search over it and extracted with its inherited weights, with no training. Published with "
        "proxyless-zoo.",
        "",
        f"Weights sha256: `{sn.sha256}`",
        "",
        "## Space",
        "",
        *_supernet_space(sn),
        "",
        "## Training recipe",
        "",
        "Trained with `proxyless search elastic-train`: the sandwich rule with in-place distillation (each step the "
        "largest subnet learns from the labels, the smallest and random subnets from its predictions), as recorded "
        "in `supernet.json`:",
        "",
        *(["| setting | value |", "|---|---|", *recipe] if recipe else ["Not recorded in `supernet.json`."]),
        "",
        "## Recorded validation figures",
        "",
        *_supernet_figures(sn),
        "",
        "## Accuracy predictor",
        "",
        *_supernet_predictor(sn),
        "",
        "## Files",
        "",
        *[f"- `{f}`: {descriptions[f]}" for f in sn.files],
        "",
        "## Usage",
        "",
        *_supernet_usage(sn, source),
        "",
        "## Citation",
        "",
        "Cai, Gan, Wang, Zhang, Han. Once-for-All: Train One Network and Specialize it for Efficient Deployment. "
        "ICLR 2020; [arXiv:1908.09791](https://arxiv.org/abs/1908.09791). Cai, Zhu, Han. ProxylessNAS. ICLR 2019; "
        "[arXiv:1812.00332](https://arxiv.org/abs/1812.00332).",
        "",
        "```bibtex",
        OFA_CITATION,
        "",
        CITATION,
        "```",
        "",
    ]
    return f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines)
