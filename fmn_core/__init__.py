"""Feature Mask Network for person re-identification (Ding, Khan, Tang, Porikli).

Plain PyTorch; nothing here imports Dagster, DVC or Great Expectations.
The modules follow the paper: ``data`` (section 4.1), ``models`` (3.1-3.2),
``losses`` and ``engine`` (3.3, Algorithm 1, 4.2), ``retrieval`` (3.4-3.5 and
the evaluation protocol of 4.2), ``viz`` (Figures 1 and 4).

The two functions re-ID code most often needs are re-exported here::

    import fmn_core
    result = fmn_core.evaluate(distmat, q_pids, g_pids, q_camids, g_camids)
    reranked = fmn_core.re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)

Every error raised for input that cannot be used derives from ``fmn_core.FMNInputError`` (a ``ValueError``).
"""

from fmn_core._version import __version__
from fmn_core.retrieval.evaluation import EvaluationResult, evaluate
from fmn_core.retrieval.reranking import re_ranking, re_ranking_features
from fmn_core.utils.errors import FMNInputError

__all__ = ["EvaluationResult", "FMNInputError", "__version__", "evaluate", "re_ranking", "re_ranking_features"]
