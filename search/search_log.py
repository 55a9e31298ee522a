"""What a search run records per epoch: JSON history, a CSV of alpha/probabilities, TensorBoard, and a PNG.

``history.json`` is a list of epoch records (losses, E[LAT], the argmax arch and its latency, alpha and
probabilities per layer); ``probs.csv`` has one row per (epoch, layer, candidate). Both are rewritten atomically
each epoch, so a killed run leaves readable files; the history also travels in the checkpoint for ``--resume``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from zoo.arch import BlockSpec
from zoo.files import atomic_write


def op_label(block: BlockSpec) -> str:
    """Short candidate name for tables and plots: ``k5e3`` or ``zero``."""
    return "zero" if block.zero else f"k{block.kernel}e{block.expand}"


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
