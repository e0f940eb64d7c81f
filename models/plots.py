"""PNG figures of the factory: weight histograms before/after pruning or clustering, per-class ROC curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def weight_histogram(before: np.ndarray, after: np.ndarray, title: str, path: Path) -> Path:
    """Overlaid histograms of all Conv/Dense kernel weights before and after the recipe."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
    lim = float(np.percentile(np.abs(before), 99.9)) if before.size else 1.0
    bins = np.linspace(-lim, lim, 121)
    for ax, data, label in ((axes[0], before, "before"), (axes[1], after, "after")):
        zeros = float(np.mean(data == 0)) if data.size else 0.0
        ax.hist(data, bins=bins, color="#4477aa" if label == "before" else "#cc6677")
        ax.set_title(
            f"{label}: {data.size:,} weights, {zeros:.0%} zero, {len(np.unique(data)):,} distinct", fontsize=8
        )
        ax.set_yscale("log")
        ax.set_xlabel("weight value")
    axes[0].set_ylabel("count (log)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def roc_curves(y: np.ndarray, probs: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    """One-vs-rest ROC curve per class, with its AUC in the legend."""
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for c, name in enumerate(class_names):
        positives = y == c
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, c])
        ax.plot(fpr, tpr, lw=1, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
