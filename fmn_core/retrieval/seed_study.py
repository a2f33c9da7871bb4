"""Seed studies: Table 1 as mean ± std over training seeds, pooled only over runs of one recipe on one test set.

An orchestrator (fmn_assets' evaluation_metrics) or a script collects one
``scores[method][metric]`` per seed; runs may be pooled when their
:func:`recipe_fingerprint` agrees: the same training recipe with the seed aside,
evaluated on the same images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fmn_core.retrieval.results import format_mean_std, mean_std

#: TrainConfig fields that change from run to run without changing the recipe
NOT_RECIPE = ("seed", "device", "processes", "amp")
#: the rows a study summarises, as flat statistics (``fmn_rank1_mean``, ``grn_mAP_std``, ...)
STUDY_ROWS = ("FMN", "FMN + re-ranking", "GRN")


def recipe_fingerprint(train_config: Mapping[str, Any], meta: pd.DataFrame) -> str:
    """What a seed study may pool over: the training recipe (seed aside) and the evaluated images."""
    recipe = {k: v for k, v in sorted(train_config.items()) if k not in NOT_RECIPE}
    images = meta.assign(path=meta["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    digest.update(pd.util.hash_pandas_object(images, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def seed_study_statistics(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]],
                          metrics: Sequence[str] = ("rank1", "mAP")) -> dict[str, float]:
    """Mean and std of each study row over the seeds that all have it: ``{"fmn_rank1_mean": 84.78, ...}``."""
    stats = {}
    for name in STUDY_ROWS:
        if not all(name in scores for scores in per_seed.values()):
            continue
        key = name.lower().replace(" + re-ranking", "_reranked")
        for metric in metrics:
            mean, std = mean_std([scores[name][metric] for scores in per_seed.values()])
            stats[f"{key}_{metric}_mean"], stats[f"{key}_{metric}_std"] = round(mean, 2), round(std, 2)
    return stats


def seed_study_markdown(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]],
                        metrics: Sequence[str] = ("rank1", "mAP")) -> str:
    """Table 1 as mean ± std over training seeds: ``per_seed[seed][method][metric]`` in percent."""
    methods = list(dict.fromkeys(m for scores in per_seed.values() for m in scores))
    header = " | ".join(metrics)
    lines = [f"| method | {header} | seeds |", "|---|" + "---:|" * (len(metrics) + 1)]
    for method in methods:
        found = [scores[method] for scores in per_seed.values() if method in scores]
        cells = " | ".join(format_mean_std([f[m] for f in found]) for m in metrics)
        lines.append(f"| {method} | {cells} | {len(found)} |")
    seeds = ", ".join(str(s) for s in sorted(per_seed))
    return "\n".join(lines) + f"\n\ntraining seeds: {seeds}"
