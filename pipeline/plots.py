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

COUNTED_CLASSES = 30  # a confusion matrix of more classes shows rates by colour, without each cell's count


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
    cell = 0.75 if k <= COUNTED_CLASSES else max(0.12, 0.75 * COUNTED_CLASSES / k)  # 120 dog breeds fit a page
    fig = Figure(figsize=(1.0 + cell * k, 0.8 + cell * 0.93 * k))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(k if k <= COUNTED_CLASSES else 0):  # more cells than that: the colour alone
        for j in range(k):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    small = {} if k <= COUNTED_CLASSES else {"fontsize": 5}
    ax.set_xticks(range(k), class_names, rotation=45 if k <= COUNTED_CLASSES else 90, ha="right", **small)
    ax.set_yticks(range(k), class_names, **small)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (accuracy {np.trace(counts) / max(counts.sum(), 1):.4f})")
    return _save(fig, path)


def prediction_grid_png(
    images, true, pred, class_names: Sequence[str], path: str | Path, n: int = 18
) -> Path:
    """The first ``n`` images titled "true\\npred", mistakes in red (d2l's ``predict_ch3``); grey
    (N, H, W) or (N, 1, H, W), or colour (N, 3, H, W)."""
    images = torch.as_tensor(images)[:n].cpu()
    colour = images.dim() == 4 and images.shape[1] == 3
    images = (images.permute(0, 2, 3, 1) if colour else images.reshape(len(images), *images.shape[-2:])).numpy()
    true, pred = torch.as_tensor(true)[:n].tolist(), torch.as_tensor(pred)[:n].tolist()
    cols = min(len(images), 9)
    rows = max(1, -(-len(images) // cols))
    fig = Figure(figsize=(1.5 * cols, 1.9 * rows))
    for i, (image, t, p) in enumerate(zip(images, true, pred)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image, cmap=None if colour else "gray_r")
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


def _two_panels() -> tuple[Figure, object, object]:
    fig = Figure(figsize=(10, 4.2))
    return fig, fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)


def _save_panels(fig: Figure, axes, title: str | None, path: str | Path) -> Path:
    for ax in axes:
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def predictions_png(true, predicted, path: str | Path, label: str, title: str | None = None) -> Path:
    """Out-of-fold predictions against the truth, and the residuals against the predictions
    (in the metric's space, e.g. log prices), with the diagonal and zero for reference."""
    true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    fig, left, right = _two_panels()
    left.scatter(true, predicted, s=6, alpha=0.4)
    low, high = np.nanmin([true.min(), predicted.min()]), np.nanmax([true.max(), predicted.max()])
    left.plot([low, high], [low, high], color="C3", linewidth=1)
    left.set(xlabel=f"true {label}", ylabel=f"predicted {label}", title="out-of-fold predictions")
    right.scatter(predicted, predicted - true, s=6, alpha=0.4)
    right.axhline(0, color="C3", linewidth=1)
    right.set(xlabel=f"predicted {label}", ylabel="residual (predicted - true)", title="residuals")
    return _save_panels(fig, (left, right), title, path)


def roc_png(positive, probability, path: str | Path, title: str | None = None) -> Path:
    """A binary classifier's ROC curve (with its AUC) and its calibration: the observed rate of
    the positive class against the predicted probability, in ten bins."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    positive, probability = np.asarray(positive).astype(int), np.asarray(probability, dtype=float)
    fig, left, right = _two_panels()
    fpr, tpr, _ = roc_curve(positive, probability)
    left.plot(fpr, tpr)
    left.set(xlabel="false positive rate", ylabel="true positive rate",
             title=f"ROC (AUC {roc_auc_score(positive, probability):.4f})")
    observed, predicted = calibration_curve(positive, probability, n_bins=10, strategy="quantile")
    right.plot(predicted, observed, marker="o")
    right.set(xlabel="predicted probability", ylabel="observed rate", title="calibration")
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    return _save_panels(fig, (left, right), title, path)


def sweep_png(board: Sequence[dict], grid: Sequence[str], path: str | Path, metric: str) -> Path:
    """A sweep's mean valid score against each swept param: one panel per param."""
    fig = Figure(figsize=(4.2 * len(grid), 3.6))
    for i, name in enumerate(grid):
        ax = fig.add_subplot(1, len(grid), i + 1)
        values = [str(row["params"][name]) for row in board]
        levels = sorted(set(values), key=lambda v: (_number(v) is None, _number(v) or 0, v))
        x = [levels.index(v) for v in values]
        ax.scatter(x, [row["mean_valid"] for row in board], s=16, alpha=0.6)
        ax.set_xticks(range(len(levels)), levels, rotation=30 if len(levels) > 4 else 0)
        ax.set_xlabel(name)
        ax.set_ylabel(f"mean valid {metric}" if i == 0 else "")
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def show_in_terminal(path: str | Path, width: int = 100) -> None:
    """Print a PNG in the terminal with plotext's image support (colour cells, no window)."""
    import plotext as plt

    plt.clf()
    plt.image_plot(str(path))
    plt.plotsize(width, width // 3)
    plt.theme("clear")
    plt.show()
