"""Table 1 of the paper for one dataset: GRN, LAN and FMN rows (plus FMN + re-ranking)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from fmn_core.retrieval.descriptors import DescriptorTable
from fmn_core.retrieval.distance import pairwise_distance
from fmn_core.retrieval.evaluation import EvaluationResult, evaluate
from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE, re_ranking_features
from fmn_core.utils.errors import FMNInputError, InputFileNotFoundError

ROW_NAMES = {"grn": "GRN", "lan": "LAN", "fmn": "FMN"}


def evaluate_descriptors(table: DescriptorTable, rerank: bool = False, k1: int = K1, k2: int = K2,
                         lambda_value: float = LAMBDA_VALUE, max_rank: int = 50,
                         device: str = "cpu") -> dict[str, EvaluationResult]:
    """One evaluation per descriptor kind (squared Euclidean distance), plus FMN + re-ranking if asked.

    Re-ranking uses :func:`re_ranking_features`, so it never holds an N x N matrix.
    """
    if not any(kind in table.features for kind in ROW_NAMES):
        raise FMNInputError(f"the table holds no descriptor column ({', '.join(ROW_NAMES)}): evaluate a table "
                            "written by fmn extract (or the pipeline's query / gallery descriptor tables), not a split "
                            "table")
    query, gallery = table.subset("query"), table.subset("gallery")
    if len(query) == 0 or len(gallery) == 0:
        raise FMNInputError(f"nothing to evaluate: {len(query)} query and {len(gallery)} gallery rows (give the query "
                            "and the gallery descriptors, e.g. query_descriptors.parquet gallery_descriptors.parquet)")
    labels = (query.meta["pid"].to_numpy(), gallery.meta["pid"].to_numpy(), query.meta["camid"].to_numpy(),
              gallery.meta["camid"].to_numpy())
    results = {}
    for kind, name in ROW_NAMES.items():
        if kind in table.features:
            distmat = pairwise_distance(query.features[kind], gallery.features[kind], device=device)
            results[name] = evaluate(distmat, *labels, max_rank=max_rank)
    if rerank:
        if "fmn" not in table.features:
            raise FMNInputError("re-ranking needs the FMN descriptors, which this table lacks")
        distmat = re_ranking_features(query.features["fmn"], gallery.features["fmn"], k1, k2, lambda_value, device)
        results["FMN + re-ranking"] = evaluate(distmat, *labels, max_rank=max_rank)
    return results


def results_markdown(results: dict[str, EvaluationResult]) -> str:
    """A Markdown table like the paper's Table 1: rank-1/5/10/20, mAP and mINP in percent.

    The last column counts the queries evaluated and those skipped (no true match
    under another camera): a skipped query is in no average, so it must be seen.
    """
    lines = ["| method | rank-1 | rank-5 | rank-10 | rank-20 | mAP | mINP | queries (skipped) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, result in results.items():
        s = result.summary()
        lines.append(f"| {name} | {s['rank1']:.2f} | {s['rank5']:.2f} | {s['rank10']:.2f} | {s['rank20']:.2f} | "
                     f"{s['mAP']:.2f} | {s['mINP']:.2f} | {result.num_valid} ({result.num_skipped}) |")
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value): how seed studies are reported."""
    if not values:
        raise FMNInputError("mean_std needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_mean_std(values: Sequence[float]) -> str:
    """``"84.78 ± 1.20"``, or ``"n/a"`` for no values."""
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def read_metrics(path: str | Path) -> dict:
    """A metrics.json written by the evaluation (``fmn evaluate --json``, the pipeline's evaluation_metrics)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"metrics not found: expected the evaluation's JSON at {path}")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FMNInputError(f"{path} is not a metrics file ({exc}); evaluate again to write it") from exc
    if not isinstance(metrics, dict):
        raise FMNInputError(f"{path}: expected a JSON object of rows (GRN, LAN, FMN, ...), "
                            f"got {type(metrics).__name__}")
    return metrics
