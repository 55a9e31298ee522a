"""What a search run records per epoch: JSON history, a CSV of alpha/probabilities, TensorBoard, and a PNG.

``history.json`` is a list of epoch records (losses, E[LAT], the argmax arch and its latency, alpha, probabilities
and normalized entropy per layer); ``probs.csv`` has one row per (epoch, layer, candidate). Both are rewritten
atomically each epoch, so a killed run leaves readable files; the history also travels in the checkpoint for
``--resume``. ``convergence`` sums a finished search up: whether its derived net was decided or a coin toss.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.arch import BlockSpec
from zoo.files import atomic_write

# A layer's choice is a near-tie when it leads its runner-up by less than this in log-probability (= in alpha):
# p(runner-up) / p(chosen) > 0.905. Adam moves an alpha by up to about lr per step, so a few dozen noisy alpha
# steps at lr 1e-2 (or a hundred at the authors' 1e-3) can close such a lead.
TIE_MARGIN = 0.1


def op_label(block: BlockSpec) -> str:
    """Short candidate name for tables and plots: ``k5e3`` or ``zero``."""
    return "zero" if block.zero else f"k{block.kernel}e{block.expand}"


def layer_entropy(probs: Sequence[Sequence[float]], counts: Sequence[int]) -> list[float]:
    """Entropy of each layer's distribution over its ``counts[i]`` candidates, divided by log(count): 1 is
    uniform (nothing learnt), 0 a single candidate."""
    out = []
    for row, n in zip(probs, counts, strict=True):
        h = -sum(p * math.log(p) for p in row[:n] if p > 0)
        out.append(h / math.log(n) if n > 1 else 0.0)
    return out


@dataclass(frozen=True)
class NearTie:
    """A layer of the derived net whose choice leads its runner-up by less than ``TIE_MARGIN``."""

    layer: int
    chosen: str
    runner_up: str
    margin: float  # log p(chosen) - log p(runner-up)


@dataclass(frozen=True)
class Convergence:
    """How settled a search ended: per-layer entropy per search epoch, the argmax changes of the last epoch, and
    the derived net's near-ties (``warning`` says so when there are any)."""

    entropy: list[list[float]]  # [search epoch][layer], normalized (1 = uniform)
    final_mean_entropy: float
    argmax_changed_last_epoch: int | None  # layers whose argmax differs from the previous epoch's (None: no such)
    near_ties: list[NearTie]
    warning: str | None


def convergence(history: Sequence[dict[str, Any]], labels: Sequence[Sequence[str]], path: Sequence[int]) -> Convergence:
    """The convergence report of a finished search whose derived net is ``path`` (one index per layer)."""
    counts = [len(row) for row in labels]
    search = [e for e in history if e["phase"] == "search"]
    entropy = [[round(h, 4) for h in layer_entropy(e["probs"], counts)] for e in search]
    final = history[-1]["probs"]
    changed = None
    if len(history) > 1:
        before = [_argmax(row[:n]) for row, n in zip(history[-2]["probs"], counts, strict=True)]
        changed = sum(b != _argmax(row[:n]) for b, row, n in zip(before, final, counts, strict=True))
    ties = [tie for i, j in enumerate(path) if (tie := _near_tie(i, j, final[i][: counts[i]], labels[i]))]
    mean = sum(entropy[-1]) / len(entropy[-1]) if entropy else 1.0
    warning = None
    if ties:
        warning = (
            f"the derived net is decided by near-ties in {len(ties)} of {len(path)} layers "
            f"({', '.join(str(t.layer) for t in ties)}: the choice leads the runner-up by < {TIE_MARGIN} in "
            f"log-probability; mean normalized entropy {mean:.2f}); another seed may well derive another net"
        )
    return Convergence(entropy, round(mean, 4), changed, ties, warning)


def _argmax(row: Sequence[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)


def _near_tie(layer: int, chosen: int, probs: Sequence[float], labels: Sequence[str]) -> NearTie | None:
    others = [j for j in range(len(probs)) if j != chosen and probs[j] > 0]
    if not others or probs[chosen] <= 0:
        return None
    best = max(others, key=probs.__getitem__)
    margin = math.log(probs[chosen]) - math.log(probs[best])
    return NearTie(layer, labels[chosen], labels[best], round(margin, 4)) if abs(margin) < TIE_MARGIN else None


class SearchLog:
    """Epoch records of one run; only the main rank creates one (``out`` is written)."""

    def __init__(self, out: Path, labels: list[list[str]], tensorboard: bool, epochs_done: int = 0) -> None:
        """``epochs_done``: epochs a resumed run already logged; TensorBoard drops its points from later epochs
        (written after that checkpoint) so a resume does not plot them twice."""
        self.out, self.labels = out, labels
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=epochs_done + 1)

    def record(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the files for ``history``; send its last entry to TensorBoard."""
        atomic_write(self.out / "history.json", json.dumps(history, indent=1))
        atomic_write(self.out / "probs.csv", self._csv(history))
        entry = history[-1]
        if self.writer is not None:
            step = entry["epoch"]
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(f"search/{key}", value, step)
            for i, row in enumerate(entry["probs"]):
                for label, p in zip(self.labels[i], row[: len(self.labels[i])], strict=True):
                    self.writer.add_scalar(f"probs/layer{i:02d}/{label}", p, step)
            self.writer.flush()

    def _csv(self, history: list[dict[str, Any]]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["epoch", "phase", "layer", "candidate", "alpha", "prob"])
        for e in history:
            for i, (alphas, probs) in enumerate(zip(e["alpha"], e["probs"], strict=True)):
                n = len(self.labels[i])  # rows are padded to the widest layer
                for label, a, p in zip(self.labels[i], alphas[:n], probs[:n], strict=True):
                    w.writerow([e["epoch"], e["phase"], i, label, f"{a:.6g}", f"{p:.6g}"])
        return buf.getvalue()

    def plot(
        self,
        history: list[dict[str, Any]],
        path: Path,
        target: float | None,
        unit: str,
        derived: tuple[list[str], float] | None = None,
    ) -> None:
        """How the chosen ops evolve: per layer and epoch the argmax op's colour, faint while it is uncertain
        (opacity = its probability above uniform), the final choice on the right; below, E[LAT] against T.
        ``derived`` (its ops and latency), where the derived net is not the final argmax, is shown instead."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        if not history:
            return
        names = sorted({label for layer in self.labels for label in layer}, key=_label_order)
        palette = {name: plt.cm.tab10(i % 10)[:3] for i, name in enumerate(names)}
        n, epochs = len(self.labels), [e["epoch"] for e in history]
        image = [[(1.0, 1.0, 1.0)] * len(history) for _ in range(n)]
        finals = []
        for t, e in enumerate(history):
            for i, labels in enumerate(self.labels):
                probs = e["probs"][i][: len(labels)]
                j = max(range(len(labels)), key=probs.__getitem__)
                strength = min(1.0, max(0.15, (probs[j] - 1 / len(labels)) / (1 - 1 / len(labels)) * 4))
                image[i][t] = tuple(1 - strength * (1 - c) for c in palette[labels[j]])
                if t == len(history) - 1:
                    finals.append(labels[j])
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), height_ratios=(2, 1), sharex=True)
        top.imshow(
            image, aspect="auto", interpolation="nearest", extent=(epochs[0] - 0.5, epochs[-1] + 0.5, n - 0.5, -0.5)
        )
        top.set_yticks(range(n), [f"layer {i}" for i in range(n)], fontsize=7)
        right = top.twinx()
        right.set_ylim(n - 0.5, -0.5)
        shown = "final choice" if derived is None else "derived net (most probable within the target)"
        right.set_yticks(range(n), finals if derived is None else derived[0], fontsize=7)
        top.set_title(f"argmax op per layer (faint = uncertain); right: {shown}", fontsize=9)
        top.legend(
            handles=[Patch(color=palette[m], label=m) for m in names],
            fontsize=7,
            ncol=len(names),
            loc="lower center",
            bbox_to_anchor=(0.5, 1.08),
            frameon=False,
        )
        bottom.plot(epochs, [e["expected_latency"] for e in history], label="E[LAT]")
        bottom.plot(epochs, [e["argmax_latency"] for e in history], label="argmax arch")
        if derived is not None:
            bottom.plot([epochs[-1]], [derived[1]], "o", color="C2", label="derived net")
        if target is not None:
            bottom.axhline(target, color="k", linestyle="--", linewidth=1, label="target")
        bottom.set_ylabel(unit)
        bottom.set_xlabel("epoch")
        bottom.legend(fontsize=7)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        atomic_write(path, buf.getvalue())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _label_order(label: str) -> tuple[int, int]:
    return (99, 0) if label == "zero" else (int(label[1]), int(label[3:]))
