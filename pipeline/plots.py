"""Report figures as PNG files: confusion matrix, prediction grid (d2l's predict_ch3), learning curves.

Uses matplotlib's Agg backend through the object API (no pyplot state), so it works headless and
never touches the caller's figures. Every file lands through :func:`atomic_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.workspace import atomic_path


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def confusion_matrix_png(
    confusion, class_names: Sequence[str], path: str | Path, title: str | None = None
) -> Path:
    """Counts in each cell; colour is the row-normalised rate, so rare classes stay readable."""
    counts = np.asarray(confusion, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig = Figure(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (accuracy {np.trace(counts) / max(counts.sum(), 1):.4f})")
    return _save(fig, path)


def prediction_grid_png(
    images, true, pred, class_names: Sequence[str], path: str | Path, n: int = 18
) -> Path:
    """The first ``n`` images titled "true\\npred", mistakes in red (d2l's ``predict_ch3``)."""
    images = torch.as_tensor(images)[:n]
    images = images.reshape(len(images), *images.shape[-2:]).cpu().numpy()  # drop a channel axis
    true, pred = torch.as_tensor(true)[:n].tolist(), torch.as_tensor(pred)[:n].tolist()
    cols = min(len(images), 9)
    rows = max(1, -(-len(images) // cols))
    fig = Figure(figsize=(1.5 * cols, 1.9 * rows))
    for i, (image, t, p) in enumerate(zip(images, true, pred)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image, cmap="gray_r")
        ax.set_title(f"{class_names[t]}\n{class_names[p]}", fontsize=8, color="black" if t == p else "red")
        ax.axis("off")
    return _save(fig, path)


def learning_curves_png(
    curves: Sequence[dict], path: str | Path, ylabel: str, log_scale: bool = True, title: str | None = None
) -> Path:
    """One colour per run/fold: train solid, valid dashed, epochs from 1 on x (d2l's ``train_ch3`` look).

    ``curves``: dicts ``{"label": str, "train": [float], "valid": [float] | None}``.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(curves))]
    for curve, colour in zip(curves, colours):
        train = list(curve["train"])
        ax.plot(range(1, len(train) + 1), train, color=colour, label=f"{curve['label']} train")
        valid = curve.get("valid")
        if valid:
            ax.plot(range(1, len(valid) + 1), list(valid), color=colour, linestyle="--",
                    label=f"{curve['label']} valid")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=8, ncol=2 if len(curves) > 3 else 1)
    if title:
        ax.set_title(title)
    return _save(fig, path)
