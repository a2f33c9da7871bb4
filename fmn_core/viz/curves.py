"""CMC curves (Table 1's rows as curves) and training curves from the per-epoch logs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from fmn_core.retrieval.evaluation import EvaluationResult
from fmn_core.viz._figure import save_figure


def plot_cmc(results: Mapping[str, EvaluationResult], path: str | Path, max_rank: int = 20,
             title: str = "CMC") -> Path:
    """One curve per method (GRN, LAN, FMN, FMN + re-ranking), ranks 1..max_rank."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        ranks = np.arange(1, min(max_rank, len(result.cmc)) + 1)
        axis.plot(ranks, 100 * result.cmc[: len(ranks)], marker="o", markersize=3,
                  linestyle="--" if "re-rank" in name else "-",
                  label=f"{name} (R1 {100 * result.rank(1):.1f}, mAP {100 * result.mAP:.1f})")
    axis.set(xlabel="rank", ylabel="matching rate (%)", title=title, ylim=(0, 100), xlim=(1, max_rank))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    return save_figure(figure, path)


def plot_training_curves(histories: Sequence[Sequence[dict]], path: str | Path,
                         title: str = "training (Algorithm 1)") -> Path:
    """Loss and training accuracy per epoch; stage 2 continues the epoch axis after stage 1."""
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset = 0
    for history in histories:
        if not history:
            continue
        stage = history[0].get("stage", "?")
        epochs = np.array([row["epoch"] for row in history]) + offset
        loss_axis.plot(epochs, [row["loss"] for row in history], marker="o", markersize=3,
                       label=f"stage {stage} total" if stage == 2 else "stage 1 (GRN, eq. 4)")
        if "rank" in history[0]:
            loss_axis.plot(epochs, [row["rank"] for row in history], linestyle=":", label="stage 2 ranking (eq. 5)")
        acc_axis.plot(epochs, [100 * row["acc"] for row in history], marker="o", markersize=3,
                      label="GRN" if stage == 1 else "LAN")
        if "grn_acc" in history[0]:
            acc_axis.plot(epochs, [100 * row["grn_acc"] for row in history], linestyle=":", label="GRN (frozen)")
        offset = epochs[-1]
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_axis.set(xlabel="epoch", ylabel="training accuracy (%)", title="accuracy", ylim=(0, 100))
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, path)
