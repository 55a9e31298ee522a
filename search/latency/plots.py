"""Predicted-vs-measured scatter plots (matplotlib, Agg), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.files import atomic_output


def scatter(
    path: str | Path, measured: np.ndarray, series: dict[str, np.ndarray], title: str, xlabel: str, ylabel: str
) -> None:
    """One marker series per ``series`` entry against ``measured``, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    values = np.concatenate([measured, *series.values()])
    lo, hi = float(values.min()), float(values.max())
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, label="y = x")
    for (label, predicted), marker in zip(series.items(), ("o", "x", "+"), strict=False):
        ax.scatter(measured, predicted, s=16, marker=marker, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
