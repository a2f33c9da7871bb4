"""k-reciprocal re-ranking: a hand-worked case, agreement with the plain reference, both entry points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.reference import re_ranking_reference
from fmn_core.retrieval.distance import pairwise_distance
from fmn_core.retrieval.reranking import re_ranking, re_ranking_features


def squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def test_hand_worked_line():
    """Query at 0; gallery a=1, b=5, c=6 on a line; k1 = k2 = 1, lambda = 0.5.

    Squared twice, the distances from q are 0, 1, 625, 1296; the 2 nearest of q are {q, a}, of a {a, q},
    of b {b, c}, of c {c, b}, so R(q) = {q, a}; the k1/2 = 0 sets are the items themselves and are
    always accepted. V(q) spreads over {q, a} with weights exp(-0) and exp(-1/1296), V(a) over {a, q}
    with exp(-0) and exp(-1/625); b and c share nothing with q (Jaccard distance 1).
    """
    q = np.array([[0.0]])
    g = np.array([[1.0], [5.0], [6.0]])
    out = re_ranking(squared(q, g), squared(q, q), squared(g, g), k1=1, k2=1, lambda_value=0.5)
    wq = math.exp(-1 / 1296)
    wa = math.exp(-1 / 625)
    v_q = {"q": 1 / (1 + wq), "a": wq / (1 + wq)}
    v_a = {"a": 1 / (1 + wa), "q": wa / (1 + wa)}
    s = min(v_q["q"], v_a["q"]) + min(v_q["a"], v_a["a"])
    jaccard_a = 1 - s / (2 - s)
    expected = [0.5 * jaccard_a + 0.5 * 1 / 1296, 0.5 * 1 + 0.5 * 625 / 1296, 0.5 * 1 + 0.5 * 1296 / 1296]
    assert out.shape == (1, 3) and out.dtype == np.float32
    assert np.allclose(out[0], expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(30))
def test_agrees_with_the_plain_reference(seed):
    rng = np.random.default_rng(seed)
    nq, ng, dim = int(rng.integers(1, 12)), int(rng.integers(2, 35)), int(rng.integers(2, 6))
    k1, k2, lam = int(rng.integers(1, 25)), int(rng.integers(1, 8)), float(rng.random())
    if seed % 3 == 0:
        features = rng.integers(0, 3, size=(nq + ng, dim)).astype(np.float32)  # ties and duplicates
    else:
        features = rng.normal(size=(nq + ng, dim)).astype(np.float32 if seed % 2 else np.float64)
    q, g = features[:nq], features[nq:]
    qg, qq, gg = squared(q, g), squared(q, q), squared(g, g)
    if seed % 5 == 0:
        qq, gg = qq - 1e-7, gg - 1e-7  # tiny negative distances, as rounding leaves on a diagonal
    if (np.max(np.block([[qq, qg], [qg.T, gg]]) ** 2, axis=0) == 0).any():
        pytest.skip("degenerate: all items identical")
    reference = re_ranking_reference(qg, qq, gg, k1, k2, lam)
    assert np.abs(re_ranking(qg, qq, gg, k1, k2, lam) - reference).max() < 1e-4


def test_default_parameters_on_a_larger_problem():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 16))
    features = (centres[rng.integers(0, 30, 260)] + 0.3 * rng.normal(size=(260, 16))).astype(np.float32)
    q, g = features[:60], features[60:]
    qg, qq, gg = (pairwise_distance(a, b) for a, b in ((q, g), (q, q), (g, g)))
    reference = re_ranking_reference(qg, qq, gg)
    assert np.abs(re_ranking(qg, qq, gg) - reference).max() < 1e-4


def test_feature_path_equals_matrix_path():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 32)).astype(np.float32)
    q, g = features[:70], features[70:]
    qg, qq, gg = (pairwise_distance(a, b) for a, b in ((q, g), (q, q), (g, g)))
    from_matrices = re_ranking(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    from_features = re_ranking_features(q, g, k1=20, k2=6, lambda_value=0.3)
    assert np.abs(from_matrices - from_features).max() < 1e-4
    assert np.array_equal(np.argsort(from_matrices, axis=1)[:, :10], np.argsort(from_features, axis=1)[:, :10])


def test_k_larger_than_the_gallery_uses_every_item():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(3, 4)), rng.normal(size=(4, 4))
    qg, qq, gg = squared(q, g), squared(q, q), squared(g, g)
    out = re_ranking(qg, qq, gg, k1=50, k2=20)
    assert np.abs(out - re_ranking_reference(qg, qq, gg, k1=50, k2=20)).max() < 1e-4


def test_bad_input_is_refused():
    good = np.ones((2, 3)), np.ones((2, 2)), np.ones((3, 3))
    with pytest.raises(ValueError, match="q_g_dist has 1 NaN"):
        re_ranking(np.array([[np.nan, 1.0, 1.0], [1.0, 1.0, 1.0]]), *good[1:])
    with pytest.raises(ValueError, match=r"expected q_g \(Q x G\)"):
        re_ranking(np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="k1 and k2 must be at least 1"):
        re_ranking(*good, k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(*good, lambda_value=1.5)
    with pytest.raises(ValueError, match="every distance involving item 0 is zero"):
        re_ranking(np.zeros((1, 2)), np.zeros((1, 1)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        re_ranking_features(np.array([[np.inf, 0.0]]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="expected query"):
        re_ranking_features(np.zeros((2, 3)), np.zeros((2, 4)))
