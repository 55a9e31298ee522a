"""The CIFAR-10 ProxylessNAS network: a PyramidNet whose residual blocks hold tree-structured cells.

It has its own spec format, ``"format": "proxyless-tree-arch/1"``, because its blocks are trees of layers,
not a chain of MBConvs. Layer strings list the layer's steps in the order they run, joined by ``_``:

- pre-steps ``bn``, ``relu``, ``relu6``; then the weight op and its options; then post-steps (same words);
- weight ops: ``conv`` (kxk conv), ``dconv`` (kxk depthwise conv, then 1x1 conv), ``avg`` / ``max`` (pooling),
  ``id`` (identity);
- options: ``k<kernel>`` ``s<stride>`` ``d<dilation>`` ``g<groups>`` ``c<out channels>`` ``bias`` ``shuffle``.

``bn_relu_conv_k3_s2_g2_c92_shuffle`` is BN -> ReLU -> grouped 3x3 stride-2 conv to 92 channels -> channel
shuffle. A tree cell is written ``node := [header] "(" branch {", " branch} ")"``, ``branch := layer
[" -> " node]``, the header being ``:``-joined words: a split type (``copy``/``split``), a merge type
(``add``/``concat``), and ``bn`` when branches have their own BNs; no header means one plain branch.

A block is ``{"layers": [...]}`` (the authors' TransitionBlock) or ``{"shortcut", "in_bottle", "cell",
"out_bottle", "final_bn"}`` (ResidualTreeBlock). ``to_json`` / ``from_json`` round-trip exactly, and
``PyramidTreeNet`` keeps the authors' module names so their checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.arch import ArchError, check_fields
from zoo.layers import LinearClassifier

FORMAT = "proxyless-tree-arch/1"
Shape = tuple[int, int, int]  # channels, height, width

_STEPS = ("bn", "relu", "relu6")
_ACTS = ("relu", "relu6")
_CONV_OPTS = frozenset({"k", "s", "d", "g", "c", "bias", "shuffle"})
_OPTIONS = {"conv": _CONV_OPTS, "dconv": _CONV_OPTS, "avg": frozenset("ks"), "max": frozenset("ks"), "id": frozenset()}
_REQUIRED = {"conv": "kc", "dconv": "kc", "avg": "k", "max": "k", "id": ""}
_OPT_RE = re.compile(r"^([ksdgc])(\d+)$")
_TOKEN_RE = re.compile(r"\s*(->|[(),:]|[a-z0-9_]+)")
_SPLITS, _MERGES = ("copy", "split"), ("add", "concat")


def _branch_inputs(split: str | None, channels: int, n: int, where: str) -> list[int]:
    """Channels each branch gets: the whole input (copy / single branch) or consecutive chunks, larger first."""
    if split != "split":
        return [channels] * n
    if channels < n:
        raise ArchError(f"{where}: cannot split {channels} channels into {n} branches")
    return [channels // n + (i < channels % n) for i in range(n)]


@dataclass(frozen=True)
class LayerSpec:
    """One authors' layer (ConvLayer, DepthConvLayer, PoolingLayer, IdentityLayer) as its steps in order."""

    op: str
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    out_channels: int = 0  # conv / dconv only: the other ops keep their input channels
    bias: bool = False
    shuffle: bool = False
    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in _OPTIONS:
            raise ArchError(f"bad layer {self.op!r}: weight op must be one of {sorted(_OPTIONS)}")
        steps = self.pre + self.post
        if any(s not in _STEPS for s in steps) or steps.count("bn") > 1 or sum(s in _ACTS for s in steps) > 1:
            raise ArchError(f"bad layer {self}: steps must be at most one 'bn' and one of {_ACTS}")
        conv = self.op in ("conv", "dconv")
        if min(self.kernel, self.stride, self.dilation, self.groups) < 1 or (conv and self.out_channels < 1):
            raise ArchError(f"bad layer {self}: kernel, stride, dilation, groups and channels must be >= 1")
        if not conv and (self.out_channels or self.dilation != 1 or self.groups != 1 or self.bias or self.shuffle):
            raise ArchError(f"bad layer {self.op!r}: only conv/dconv take channels, dilation, groups, bias, shuffle")
        if self.op == "id" and (self.kernel != 1 or self.stride != 1):
            raise ArchError("bad layer 'id': identity takes no kernel or stride")

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        if not isinstance(text, str):
            raise ArchError(f"bad layer string {text!r}: expected a string")
        tokens = text.split("_")
        ops = [i for i, t in enumerate(tokens) if t in _OPTIONS]
        if len(ops) != 1:
            raise ArchError(f"bad layer string {text!r}: needs exactly one weight op of {sorted(_OPTIONS)}")
        at, op = ops[0], tokens[ops[0]]
        pre, rest = tokens[:at], tokens[at + 1 :]
        n_opts = next((i for i, t in enumerate(rest) if t in _STEPS), len(rest))
        opts, post = rest[:n_opts], rest[n_opts:]
        if any(t not in _STEPS for t in pre + post):
            raise ArchError(f"bad layer string {text!r}: only {_STEPS} may come before the op or after its options")
        values: dict[str, int | bool] = {}
        for t in opts:
            m = _OPT_RE.match(t)
            key = m[1] if m else t
            if key not in _OPTIONS[op] or key in values:
                raise ArchError(f"bad layer string {text!r}: option {t!r} is unknown, repeated or not for {op!r}")
            values[key] = int(m[2]) if m else True
        missing = [k for k in _REQUIRED[op] if k not in values]
        if missing:
            raise ArchError(f"bad layer string {text!r}: {op!r} needs option(s) {missing}")
        names = {"k": "kernel", "s": "stride", "d": "dilation", "g": "groups", "c": "out_channels"}
        return cls(op, pre=tuple(pre), post=tuple(post), **{names.get(k, k): v for k, v in values.items()})

    def __str__(self) -> str:
        opts = [] if self.op == "id" else [f"k{self.kernel}"]
        opts += [f"{p}{v}" for p, v in (("s", self.stride), ("d", self.dilation), ("g", self.groups)) if v != 1]
        opts += [f"c{self.out_channels}"] if self.op in ("conv", "dconv") else []
        opts += [name for name in ("bias", "shuffle") if getattr(self, name)]
        return "_".join((*self.pre, self.op, *opts, *self.post))

    @property
    def padding(self) -> int:
        """Authors' rule: convs pad (k - 1) // 2 * dilation; pools pad (k - 1) // 2 only at stride 1."""
        if self.op in ("avg", "max"):
            return (self.kernel - 1) // 2 if self.stride == 1 else 0
        return (self.kernel - 1) // 2 * self.dilation

    def out_channels_for(self, channels: int) -> int:
        return self.out_channels if self.op in ("conv", "dconv") else channels

    def trace(self, shape: Shape, where: str) -> tuple[Shape, int]:
        """Output shape and conv MACs on an input of ``shape``; ArchError if the layer cannot take it."""
        c, h, w = shape
        cout, k, g = self.out_channels_for(c), self.kernel, self.groups
        if c % g or cout % g:
            raise ArchError(f"{where}: {self} needs in ({c}) and out ({cout}) channels divisible by groups {g}")
        span = self.dilation * (k - 1) + 1
        ho, wo = ((x + 2 * self.padding - span) // self.stride + 1 for x in (h, w))
        if ho < 1 or wo < 1:
            raise ArchError(f"{where}: {self} gets a {h}x{w} input, too small for its kernel and stride")
        macs = ho * wo * cout * (c // g) * (k * k if self.op == "conv" else 1)
        if self.op == "dconv":
            macs += ho * wo * c * k * k
        return (cout, ho, wo), macs if self.op in ("conv", "dconv") else 0


@dataclass(frozen=True)
class TreeSpec:
    """A tree node: input -> branches (edge layer, optional child node) -> merged output."""

    branches: tuple[tuple[LayerSpec, TreeSpec | None], ...]
    split: str | None = None
    merge: str | None = None
    branch_bn: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "branches", tuple(tuple(b) for b in self.branches))
        if self.split not in (None, *_SPLITS) or self.merge not in (None, *_MERGES):
            raise ArchError(f"bad tree node: split {self.split!r} / merge {self.merge!r} not in {_SPLITS} / {_MERGES}")
        if not self.branches or (self.split is None) != (self.merge is None):
            raise ArchError("bad tree node: needs branches, and a split type exactly when it has a merge type")
        if self.split is None and len(self.branches) != 1:
            raise ArchError(f"bad tree node: {len(self.branches)} branches need a split and a merge type")

    @classmethod
    def parse(cls, text: str) -> TreeSpec:
        return _TreeParser(text).parse()

    def __str__(self) -> str:
        header = ":".join(w for w in (self.split, self.merge, "bn" if self.branch_bn else None) if w)
        return header + "(" + ", ".join(f"{e} -> {c}" if c else str(e) for e, c in self.branches) + ")"

    def trace(self, shape: Shape, where: str) -> tuple[Shape, int]:
        c, h, w = shape
        outs, macs = [], 0
        sizes = _branch_inputs(self.split, c, len(self.branches), where)
        for i, ((edge, child), ci) in enumerate(zip(self.branches, sizes, strict=True)):
            y, m = edge.trace((ci, h, w), f"{where}.edges.{i}")
            z, mc = child.trace(y, f"{where}.child_nodes.{i}") if child else (y, 0)
            if self.branch_bn and z != y:
                raise ArchError(f"{where}: branch {i} has a branch BN (bn(z) + y) but changes shape {y} -> {z}")
            outs.append(z)
            macs += m + mc
        if self.merge == "concat":
            if len({o[1:] for o in outs}) > 1:
                raise ArchError(f"{where}: concat of branches with different sizes {outs}")
            return (sum(o[0] for o in outs), *outs[0][1:]), macs
        if len(set(outs)) > 1:
            raise ArchError(f"{where}: add of branches with different shapes {outs}")
        return outs[0], macs


class _TreeParser:
    """Recursive descent over the tree notation (see the module docstring)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ArchError(f"bad tree cell {text!r}: expected a string")
        self.text, self.tokens, pos = text, [], 0
        while pos < len(text.rstrip()):
            m = _TOKEN_RE.match(text, pos)
            if not m:
                raise self.error(f"unexpected character {text[pos:].lstrip()[0]!r} at {pos}")
            self.tokens.append(m[1])
            pos = m.end()
        self.at = 0

    def error(self, msg: str) -> ArchError:
        return ArchError(f"bad tree cell {self.text!r}: {msg}")

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected and token != expected) or (not expected and not token[0].isalnum()):
            raise self.error(f"expected {expected or 'a word'!r} at token {self.at}, got {token!r}")
        self.at += 1
        return token

    def parse(self) -> TreeSpec:
        node = self.node()
        if self.peek() is not None:
            raise self.error(f"trailing {self.peek()!r} after the tree")
        return node

    def node(self) -> TreeSpec:
        header = []
        if self.peek() != "(":
            header.append(self.take())
            while self.peek() == ":":
                self.take(":")
                header.append(self.take())
        if any(w not in (*_SPLITS, *_MERGES, "bn") for w in header) or len(set(header)) != len(header):
            raise self.error(f"bad node header {':'.join(header)!r}")
        self.take("(")
        branches = [self.branch()]
        while self.peek() == ",":
            self.take(",")
            branches.append(self.branch())
        self.take(")")
        split = next((w for w in header if w in _SPLITS), None)
        merge = next((w for w in header if w in _MERGES), None)
        return TreeSpec(tuple(branches), split, merge, "bn" in header)

    def branch(self) -> tuple[LayerSpec, TreeSpec | None]:
        edge = LayerSpec.parse(self.take())
        if self.peek() != "->":
            return edge, None
        self.take("->")
        return edge, self.node()


@dataclass(frozen=True)
class TransitionSpec:
    """The authors' TransitionBlock: layers in sequence (stem, and the head's BN-ReLU-pool)."""

    layers: tuple[LayerSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [str(x) for x in self.layers]}

    def trace(self, shape: Shape, where: str) -> tuple[Shape, int]:
        macs = 0
        for j, layer in enumerate(self.layers):
            shape, m = layer.trace(shape, f"{where}.layers.{j}")
            macs += m
        return shape, macs


@dataclass(frozen=True)
class TreeBlockSpec:
    """The authors' ResidualTreeBlock: shortcut(x) + [final_bn](out_bottle(cell(in_bottle(x))))."""

    shortcut: LayerSpec
    in_bottle: LayerSpec
    cell: TreeSpec
    out_bottle: LayerSpec
    final_bn: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v if isinstance(v, bool) else str(v) for k, v in d.items()}

    def trace(self, shape: Shape, where: str) -> tuple[Shape, int]:
        s, ms = self.shortcut.trace(shape, f"{where}.shortcut")
        mid, mi = self.in_bottle.trace(shape, f"{where}.in_bottle")
        cell, mc = self.cell.trace(mid, f"{where}.cell")
        r, mo = self.out_bottle.trace(cell, f"{where}.out_bottle")
        if s[1:] != r[1:] or s[0] > r[0]:
            raise ArchError(f"{where}: shortcut {s} cannot be zero-padded and added to the residual {r}")
        return r, ms + mi + mc + mo


BlockSpec = TransitionSpec | TreeBlockSpec


def _block_from_dict(d: Any, i: int) -> BlockSpec:
    if isinstance(d, dict) and set(d) == {"layers"} and isinstance(d["layers"], list):
        return TransitionSpec(tuple(LayerSpec.parse(x) for x in d["layers"]))
    keys = {f.name for f in fields(TreeBlockSpec)}
    if not isinstance(d, dict) or not set(d) <= keys or not {"shortcut", "in_bottle", "cell", "out_bottle"} <= set(d):
        raise ArchError(f"block {i}: expected {{'layers': [...]}} or a dict with keys {sorted(keys)}, got {d!r:.80}")
    if not isinstance(d.get("final_bn", True), bool):
        raise ArchError(f"block {i}: final_bn must be true or false, got {d['final_bn']!r}")
    layers = {k: LayerSpec.parse(d[k]) for k in ("shortcut", "in_bottle", "out_bottle")}
    return TreeBlockSpec(cell=TreeSpec.parse(d["cell"]), final_bn=d.get("final_bn", True), **layers)


@dataclass(frozen=True)
class TreeArchSpec:
    """A whole PyramidTreeNet: blocks -> flatten -> classifier (parallel to ``zoo.arch.ArchSpec``)."""

    name: str
    blocks: tuple[BlockSpec, ...]
    in_chans: int = 3
    input_size: int = 32
    num_classes: int = 10
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        check_fields(self, {"in_chans": 1, "input_size": 1, "num_classes": 1})
        if not self.blocks:
            raise ArchError(f"{self.name}: needs blocks")
        self.trace()

    def trace(self) -> tuple[Shape, int]:
        """Feature map shape before the flatten, and conv MACs; ArchError names the first layer that misfits."""
        shape, macs = (self.in_chans, self.input_size, self.input_size), 0
        for i, block in enumerate(self.blocks):
            shape, m = block.trace(shape, f"{self.name}: blocks.{i}")
            macs += m
        return shape, macs

    @property
    def head_channels(self) -> int:
        """Width of the classifier's input (the flattened last feature map), as ``ArchSpec.head_channels``."""
        c, h, w = self.trace()[0]
        return c * h * w

    def with_classes(self, num_classes: int) -> TreeArchSpec:
        return replace(self, num_classes=num_classes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["blocks"] = [b.to_dict() for b in self.blocks]
        if not d["extra"]:
            del d["extra"]
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TreeArchSpec:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ArchError(f"not a {FORMAT} arch spec (format={d.get('format') if isinstance(d, dict) else d!r})")
        d = {k: v for k, v in d.items() if k != "format"}
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ArchError(f"tree arch spec has unknown keys: {sorted(unknown)}")
        if "name" not in d or not isinstance(d.get("blocks"), list):
            raise ArchError("tree arch spec needs a 'name' and a list of 'blocks'")
        d["blocks"] = tuple(_block_from_dict(b, i) for i, b in enumerate(d["blocks"]))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TreeArchSpec:
        return cls.from_dict(json.loads(text))


def count_tree_macs(spec: TreeArchSpec) -> int:
    """MACs of one forward pass at the spec's input size: convolutions and the classifier (BN/pools excluded)."""
    return spec.trace()[1] + spec.head_channels * spec.num_classes


# ---- the authors' JSON -------------------------------------------------------------------------------------


def _get(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ArchError(f"authors' config {where}: missing {key!r}")
    return d[key]


def _authors_layer(d: dict[str, Any], cin: int, where: str) -> LayerSpec:
    """One authors' layer dict, checking the channels it claims against those that reach it."""
    name = _get(d, "name", where)
    if _get(d, "in_channels", where) != cin:
        raise ArchError(f"authors' config {where}: in_channels {d['in_channels']} but {cin} channels arrive")
    if d.get("dropout_rate", 0):
        raise ArchError(f"authors' config {where}: dropout_rate {d['dropout_rate']} is not supported")
    steps, act = str(_get(d, "ops_order", where)).split("_"), d.get("act_func")
    if sorted(steps) != ["act", "bn", "weight"] or act not in (None, *_ACTS):
        raise ArchError(f"authors' config {where}: unsupported ops_order {d['ops_order']!r} or act_func {act!r}")
    marks = {"bn": "bn" if d.get("use_bn") else None, "act": act}
    w = steps.index("weight")
    pre, post = (tuple(marks[s] for s in part if marks[s]) for part in (steps[:w], steps[w + 1 :]))
    order = {"pre": pre, "post": post}
    if name in ("ConvLayer", "DepthConvLayer"):
        layer = LayerSpec(
            "conv" if name == "ConvLayer" else "dconv",
            kernel=int(_get(d, "kernel_size", where)),
            stride=int(d.get("stride", 1)),
            dilation=int(d.get("dilation", 1)),
            groups=int(d.get("groups", 1)),
            out_channels=int(_get(d, "out_channels", where)),
            bias=bool(d.get("bias", False)),
            shuffle=bool(d.get("has_shuffle", False)),
            **order,
        )
    elif name == "PoolingLayer" and d.get("pool_type") in ("avg", "max"):
        layer = LayerSpec(d["pool_type"], int(_get(d, "kernel_size", where)), int(d.get("stride", 1)), **order)
    elif name == "IdentityLayer":
        layer = LayerSpec("id", **order)
    else:
        raise ArchError(f"authors' config {where}: unsupported layer {name!r} (pool_type {d.get('pool_type')!r})")
    if d.get("out_channels", cin) != layer.out_channels_for(cin):
        raise ArchError(f"authors' config {where}: {name} claims {d['out_channels']} out channels from {cin}")
    return layer


def _authors_node(d: dict[str, Any], cin: int, where: str) -> tuple[TreeSpec, int]:
    if _get(d, "in_channels", where) != cin or d.get("path_drop_rate", 0):
        raise ArchError(f"authors' config {where}: in_channels {d['in_channels']} vs {cin}, or nonzero path_drop_rate")
    edges, children = _get(d, "edges", where), _get(d, "child_nodes", where)
    if len(children) != len(edges):
        raise ArchError(f"authors' config {where}: {len(edges)} edges but {len(children)} child_nodes")
    split, merge = d.get("split_type"), d.get("merge_type")
    branches, outs = [], []
    for i, ci in enumerate(_branch_inputs(split, cin, len(edges), where)):
        edge = _authors_layer(edges[i], ci, f"{where}.edges.{i}")
        y = edge.out_channels_for(ci)
        child, z = _authors_node(children[i], y, f"{where}.child_nodes.{i}") if children[i] else (None, y)
        branches.append((edge, child))
        outs.append(z)
    node = TreeSpec(tuple(branches), split, merge, bool(d.get("has_branch_bn", False)))
    cout = sum(outs) if merge == "concat" else outs[0]
    if d.get("out_channels") != cout:
        raise ArchError(f"authors' config {where}: out_channels {d.get('out_channels')} but the branches give {cout}")
    return node, cout


def _authors_block(d: dict[str, Any], cin: int, where: str) -> tuple[BlockSpec, int]:
    kind = _get(d, "name", where)
    if kind == "TransitionBlock":
        layers = []
        for j, x in enumerate(_get(d, "layers", where)):
            layers.append(_authors_layer(x, cin, f"{where}.layers.{j}"))
            cin = layers[-1].out_channels_for(cin)
        return TransitionSpec(tuple(layers)), cin
    if kind != "ResidualTreeBlock" or d.get("cell_drop_rate", 0):
        raise ArchError(f"authors' config {where}: unsupported block {kind!r} (or nonzero cell_drop_rate)")
    shortcut = _authors_layer(_get(d, "shortcut", where), cin, f"{where}.shortcut")
    in_bottle = _authors_layer(_get(d, "in_bottle", where), cin, f"{where}.in_bottle")
    cell, mid = _authors_node(_get(d, "cell", where), in_bottle.out_channels_for(cin), f"{where}.cell")
    out_bottle = _authors_layer(_get(d, "out_bottle", where), mid, f"{where}.out_bottle")
    block = TreeBlockSpec(shortcut, in_bottle, cell, out_bottle, bool(d.get("final_bn", False)))
    return block, out_bottle.out_channels_for(mid)


def _authors_in_chans(blocks: Any) -> int:
    """The network's input channels: those its first layer claims."""
    if not isinstance(blocks, list) or not blocks or not isinstance(blocks[0], dict):
        raise ArchError("authors' config: 'blocks' must be a non-empty list of blocks")
    first = blocks[0]
    if first.get("name") == "TransitionBlock":
        return int(_get((_get(first, "layers", "blocks.0") or [None])[0], "in_channels", "blocks.0.layers.0"))
    return int(_get(_get(first, "in_bottle", "blocks.0"), "in_channels", "blocks.0.in_bottle"))


def arch_from_authors_tree_config(config: dict[str, Any], name: str, input_size: int = 32) -> TreeArchSpec:
    """Translate the authors' ``PyramidTreeNet`` config (the CIFAR-10 network) into our tree spec."""
    if not isinstance(config, dict) or config.get("name") != "PyramidTreeNet":
        got = config.get("name") if isinstance(config, dict) else config
        raise ArchError(f"expected a PyramidTreeNet config, got {got!r:.80}")
    blocks_cfg, cls = _get(config, "blocks", "net"), _get(config, "classifier", "net")
    in_chans = cin = _authors_in_chans(blocks_cfg)
    blocks = []
    for i, b in enumerate(blocks_cfg):
        block, cin = _authors_block(b, cin, f"blocks.{i}")
        blocks.append(block)
    if cls.get("name") != "LinearLayer" or cls.get("use_bn") or cls.get("act_func") or not cls.get("bias", True):
        raise ArchError("authors' config classifier: only a plain LinearLayer with bias is supported")
    bn = config.get("bn") or {"eps": 1e-5, "momentum": 0.1}
    spec = TreeArchSpec(
        name=name,
        blocks=tuple(blocks),
        in_chans=in_chans,
        input_size=input_size,
        num_classes=int(_get(cls, "out_features", "classifier")),
        bn_eps=float(bn["eps"]),
        bn_momentum=float(bn["momentum"]),
        dropout=float(cls.get("dropout_rate", 0.0)),
    )
    if _get(cls, "in_features", "classifier") != spec.head_channels:
        raise ArchError(f"authors' config classifier: in_features {cls['in_features']} but {spec.head_channels} arrive")
    return spec


def load_authors_tree_config(path: str | Path, name: str | None = None) -> TreeArchSpec:
    path = Path(path)
    return arch_from_authors_tree_config(json.loads(path.read_text()), name or path.stem)


# ---- the network -------------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """View channels as (groups, C / groups), swap the two axes, flatten back (ShuffleNet)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class TreeLayer(nn.Module):
    """One authors' layer: its BN / activation / weight steps in the spec's order, under the authors' names."""

    def __init__(self, layer: LayerSpec, cin: int, eps: float, momentum: float) -> None:
        super().__init__()
        cout, k, s, d, g = layer.out_channels_for(cin), layer.kernel, layer.stride, layer.dilation, layer.groups
        if "bn" in layer.pre + layer.post:  # registered first, as in the authors' state_dicts
            self.bn = nn.BatchNorm2d(cin if "bn" in layer.pre else cout, eps=eps, momentum=momentum)
        act = next((a for a in layer.pre + layer.post if a in _ACTS), None)
        if act:  # never in place: a pre-activation without BN would overwrite an input other branches share
            self.act = nn.ReLU() if act == "relu" else nn.ReLU6()
        if layer.op == "conv":
            self.conv = nn.Conv2d(cin, cout, k, s, layer.padding, d, g, bias=layer.bias)
        elif layer.op == "dconv":
            self.depth_conv = nn.Conv2d(cin, cin, k, s, layer.padding, d, groups=cin, bias=False)
            self.point_conv = nn.Conv2d(cin, cout, 1, groups=g, bias=layer.bias)
        elif layer.op == "avg":
            self.pool = nn.AvgPool2d(k, s, layer.padding, count_include_pad=False)
        elif layer.op == "max":
            self.pool = nn.MaxPool2d(k, s, layer.padding)
        self.op = layer.op
        self.shuffle_groups = g if layer.shuffle else 1
        pre, post = (tuple("act" if x in _ACTS else x for x in part) for part in (layer.pre, layer.post))
        self.order = (*pre, "weight", *post)

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "conv":
            x = self.conv(x)
        elif self.op == "dconv":
            x = self.point_conv(self.depth_conv(x))
        elif self.op != "id":
            x = self.pool(x)
        return channel_shuffle(x, self.shuffle_groups) if self.shuffle_groups > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.order:
            x = self.bn(x) if step == "bn" else self.act(x) if step == "act" else self.weight(x)
        return x


class TreeNode(nn.Module):
    """Split/copy the input to branches (edge -> child node [-> branch BN + edge output]), then add/concat."""

    def __init__(self, node: TreeSpec, shape: Shape, eps: float, momentum: float) -> None:
        super().__init__()
        c, h, w = shape
        self.split_type, self.merge_type = node.split, node.merge
        self.split_sizes = _branch_inputs(node.split, c, len(node.branches), "")
        edges, children, bns = [], [], []
        for (edge, child), ci in zip(node.branches, self.split_sizes, strict=True):
            y = edge.trace((ci, h, w), "")[0]
            edges.append(TreeLayer(edge, ci, eps, momentum))
            children.append(TreeNode(child, y, eps, momentum) if child else None)  # None keeps authors' indices
            bns.append(nn.BatchNorm2d(y[0], eps=eps, momentum=momentum))
        self.edges = nn.ModuleList(edges)
        self.child_nodes = nn.ModuleList(children)
        self.branch_bns = nn.ModuleList(bns) if node.branch_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = torch.split(x, self.split_sizes, 1) if self.split_type == "split" else [x] * len(self.edges)
        outs = []
        for i, edge in enumerate(self.edges):
            y = edge(inputs[i])
            child = self.child_nodes[i]
            z = child(y) if child is not None else y
            outs.append(self.branch_bns[i](z) + y if self.branch_bns is not None else z)
        if self.merge_type == "concat":
            return torch.cat(outs, 1)
        out = outs[0]
        for o in outs[1:]:  # in branch order, as the authors sum
            out = out + o
        return out


class TransitionBlock(nn.Module):
    def __init__(self, block: TransitionSpec, shape: Shape, eps: float, momentum: float) -> None:
        super().__init__()
        layers = []
        for layer in block.layers:
            layers.append(TreeLayer(layer, shape[0], eps, momentum))
            shape = layer.trace(shape, "")[0]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ResidualTreeBlock(nn.Module):
    """shortcut(x), zero-padded to the residual's channels, plus final_bn(out_bottle(cell(in_bottle(x))))."""

    def __init__(self, block: TreeBlockSpec, shape: Shape, eps: float, momentum: float) -> None:
        super().__init__()
        mid = block.in_bottle.trace(shape, "")[0]
        cell = block.cell.trace(mid, "")[0]
        self.shortcut = TreeLayer(block.shortcut, shape[0], eps, momentum)
        self.in_bottle = TreeLayer(block.in_bottle, shape[0], eps, momentum)
        self.out_bottle = TreeLayer(block.out_bottle, cell[0], eps, momentum)  # before cell: the authors' order
        self.cell = TreeNode(block.cell, mid, eps, momentum)
        cout = block.out_bottle.out_channels_for(cell[0])
        self.final_bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum) if block.final_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut(x)
        r = self.out_bottle(self.cell(self.in_bottle(x)))
        if self.final_bn is not None:
            r = self.final_bn(r)
        if r.shape[1] > s.shape[1]:
            s = F.pad(s, (0, 0, 0, 0, 0, r.shape[1] - s.shape[1]))
        return s + r


class PyramidTreeNet(nn.Module):
    """blocks -> flatten -> classifier, with the authors' module names (``blocks.N...``, ``classifier.linear``)."""

    def __init__(self, spec: TreeArchSpec) -> None:
        super().__init__()
        self.spec = spec
        eps, mom = spec.bn_eps, spec.bn_momentum
        blocks, shape = [], (spec.in_chans, spec.input_size, spec.input_size)
        for b in spec.blocks:
            kind = TransitionBlock if isinstance(b, TransitionSpec) else ResidualTreeBlock
            blocks.append(kind(b, shape, eps, mom))
            shape = b.trace(shape, "")[0]
        self.blocks = nn.ModuleList(blocks)
        self.classifier = LinearClassifier(spec.head_channels, spec.num_classes, spec.dropout)
        self.info = None  # set by the registry: zoo.registry.ModelInfo

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))
