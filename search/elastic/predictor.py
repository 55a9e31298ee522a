"""Accuracy predictor: a small MLP from a subnet's encoding to its supernet-inherited validation accuracy.

Once-for-All's design: per layer a one-hot kernel and a one-hot expand ratio (zeros where the layer is skipped),
three hidden layers of 400 ReLU units, and an output added to a fixed base accuracy (the training mean). It is
fit on subnets whose inherited accuracy was measured (BN recalibrated, val split); ``PredictorFit`` records its
RMSE and Kendall tau on held-out subnets. Evolution then ranks tens of thousands of subnets in seconds.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from search.elastic.space import ElasticSpace, Subnet
from search.training.stats import kendall_tau
from zoo.files import atomic_output, atomic_write
from zoo.inputs import one_line
from zoo.supernet_folder import read_format_json
from zoo.weights import WeightsError, sha256_file

WEIGHTS = "predictor.safetensors"
CONFIG = "predictor.json"
FORMAT = "proxyless-acc-predictor/1"


def encode(space: ElasticSpace, subnets: list[Subnet]) -> torch.Tensor:
    """[N, layers * (kernels + expands)] one-hot features, zero for skipped layers."""
    nk, ne = len(space.kernels), len(space.expands)
    n_layers = len(space.layers())
    out = torch.zeros(len(subnets), n_layers * (nk + ne))
    for row, s in enumerate(subnets):
        for i in space.active(s):
            base = i * (nk + ne)
            out[row, base + space.kernels.index(s.kernels[i])] = 1.0
            out[row, base + nk + space.expands.index(s.expands[i])] = 1.0
    return out


class AccuracyPredictor(nn.Module):
    def __init__(self, features: int, hidden: int = 400, layers: int = 3, base: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        blocks.append(nn.Linear(width, 1, bias=False))
        self.mlp = nn.Sequential(*blocks)
        self.register_buffer("base", torch.tensor(float(base)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(1) + self.base


@dataclass(frozen=True)
class PredictorFit:
    """How well the predictor ranks and scores subnets it never saw (accuracies as fractions)."""

    train_subnets: int
    heldout_subnets: int
    rmse: float
    kendall_tau: float
    heldout_std: float  # spread of the held-out accuracies: an RMSE means something only well below it


def fit_predictor(
    space: ElasticSpace,
    subnets: list[Subnet],
    accuracies: list[float],
    heldout: float = 0.2,
    epochs: int = 300,
    seed: int = 0,
) -> tuple[AccuracyPredictor, PredictorFit]:
    """Adam lr 1e-3, wd 1e-4 (OFA's), full batch; ``heldout`` of the subnets are kept out for the figures."""
    if len(subnets) != len(accuracies) or len(subnets) < 10:
        raise ValueError(f"need >= 10 subnets with one accuracy each, got {len(subnets)} and {len(accuracies)}")
    bad = next((i for i, a in enumerate(accuracies) if not 0.0 <= a <= 1.0), None)  # NaN fails both comparisons
    if bad is not None:
        raise ValueError(f"subnet {subnets[bad]} has accuracy {accuracies[bad]!r}; accuracies are fractions in [0, 1]")
    order = list(range(len(subnets)))
    random.Random(seed).shuffle(order)
    n_test = max(2, round(heldout * len(order)))
    test, train = order[:n_test], order[n_test:]
    x, y = encode(space, subnets), torch.tensor(accuracies, dtype=torch.float32)
    torch.manual_seed(seed)
    model = AccuracyPredictor(x.shape[1], base=float(y[train].mean()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        loss = ((model(x[train]) - y[train]) ** 2).mean()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x[test])
    fit = PredictorFit(
        train_subnets=len(train),
        heldout_subnets=len(test),
        rmse=float(((pred - y[test]) ** 2).mean().sqrt()),
        kendall_tau=kendall_tau(pred.tolist(), y[test].tolist()),
        heldout_std=float(y[test].std()),
    )
    return model, fit


def save_predictor(model: AccuracyPredictor, fit: PredictorFit, folder: str | Path, extra: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_output(folder / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
        config = {"format": FORMAT, "fit": asdict(fit), **extra, "weights_sha256": sha256_file(tmp)}
        atomic_write(folder / CONFIG, json.dumps(config, indent=1, allow_nan=False) + "\n")


def load_predictor(
    space: ElasticSpace, folder: str | Path, supernet_sha256: str | None = None
) -> tuple[AccuracyPredictor, dict[str, Any]] | None:
    """The predictor stored in ``folder``, or None if there is none; with ``supernet_sha256``, refused unless it
    was fit for that supernet (a predictor of other weights ranks subnets by accuracies they no longer have)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not os.path.lexists(folder / CONFIG):
        return None
    config = read_format_json(folder / CONFIG, FORMAT)
    if supernet_sha256 is not None and config.get("supernet_sha256") != supernet_sha256:
        raise WeightsError(
            f"{folder / CONFIG}: fit for another supernet (sha256 {str(config.get('supernet_sha256'))[:12]}...): "
            f"fit it again with `proxyless search elastic-predictor --supernet {folder}`"
        )
    weights = folder / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != config.get("weights_sha256"):
        raise WeightsError(f"{weights}: not the predictor its {CONFIG} names (missing, or its sha256 differs)")
    model = AccuracyPredictor(encode(space, [space.smallest()]).shape[1])
    try:
        model.load_state_dict(load_file(weights))
    except (SafetensorError, RuntimeError) as e:  # truncated, or fit for a space of another shape
        raise WeightsError(f"{weights}: not a predictor for elastic space {space.name!r} ({one_line(e)})") from None
    return model.eval(), config
