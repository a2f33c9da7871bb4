"""CMC / mAP / mINP: hand-worked cases, agreement with the plain reference, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.reference import evaluate_reference
from fmn_core.retrieval import evaluate


def test_same_camera_same_id_is_removed_and_nothing_else():
    # gallery: 0 = same id same cam (junk for this query), 1 = other id, 2 = same id other cam,
    #          3 = distractor (pid 0), 4 = pid -1 (an ordinary label here)
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    result = evaluate(distmat, [7], [7, 3, 7, 0, -1], [0], [0, 1, 1, 2, 2])
    # after removing gallery 0 the ranking is [3, 7, 0, -1]: first true match at rank 2
    assert result.first_match_rank.tolist() == [1]
    assert result.cmc[:4].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert result.mAP == pytest.approx(0.5)  # precision 1/2 at the only true match
    assert result.mINP == pytest.approx(0.5)
    assert len(result.cmc) == 5  # max_rank cut to the gallery size


def test_distractors_and_minus_one_are_ordinary_labels():
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]])
    result = evaluate(distmat, [0, -1], [0, -1, 5], [0, 0], [1, 1, 1])
    assert result.num_valid == 2
    assert result.query_ap.tolist() == [pytest.approx(1.0), pytest.approx(1.0)]


def test_queries_without_valid_match_are_skipped_and_counted():
    distmat = np.array([[0.1, 0.9, 0.5], [0.2, 0.1, 0.3], [0.3, 0.2, 0.1]])
    # query 0: its only gallery match shares its camera -> skipped; query 1: no such id -> skipped
    result = evaluate(distmat, [1, 2, 3], [1, 3, 3], [0, 0, 0], [0, 1, 1])
    assert result.num_valid == 1 and result.num_skipped == 2
    assert np.isnan(result.query_ap[0]) and np.isnan(result.query_ap[1])
    assert result.first_match_rank.tolist() == [-1, -1, 0]
    # query 2 ranks gallery [2, 1, 0]: matches at 1 and 2 -> AP 1, INP 2/2
    assert result.mAP == pytest.approx(1.0) and result.mINP == pytest.approx(1.0)
    assert result.ap.tolist() == [pytest.approx(1.0)]


def test_average_precision_and_inp_hand_computed():
    # ranking: false, true, false, true, false -> precision 1/2 and 2/4 -> AP 0.5; INP = 2/4
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    result = evaluate(distmat, [1], [9, 1, 9, 1, 9], [0], [1, 1, 1, 1, 1])
    assert result.mAP == pytest.approx(0.5) and result.mINP == pytest.approx(0.5)
    assert result.rank(1) == 0.0 and result.rank(2) == 1.0
    interpolated = evaluate(distmat, [1], [9, 1, 9, 1, 9], [0], [1, 1, 1, 1, 1],
                            average_precision="market1501_interpolated")
    # official Market-1501 code: mean over matches of (precision before + precision at) / 2
    # match 1 at rank 2: (0/1 + 1/2) / 2; match 2 at rank 4: (1/3 + 2/4) / 2
    assert interpolated.mAP == pytest.approx(((0 + 0.5) / 2 + (1 / 3 + 0.5) / 2) / 2)
    first_hit = evaluate(np.array([[0.1, 0.2]]), [1], [1, 9], [0], [1, 1], average_precision="market1501_interpolated")
    assert first_hit.mAP == pytest.approx(1.0)  # precision before the first item counts as 1


def test_ties_follow_argsort_order():
    distmat = np.array([[0.5, 0.5, 0.5, 0.1]], dtype=np.float32)
    q, g = [1], [2, 1, 1, 3]
    result = evaluate(distmat, q, g, [0], [1, 1, 1, 1])
    cmc, m_ap, m_inp = evaluate_reference(distmat, q, g, [0], [1, 1, 1, 1])
    assert result.mAP == pytest.approx(m_ap, abs=1e-12) and result.mINP == pytest.approx(m_inp, abs=1e-12)
    assert np.allclose(result.cmc, cmc)


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_the_plain_reference(seed):
    rng = np.random.default_rng(seed)
    nq, ng = rng.integers(1, 40), rng.integers(3, 120)
    pids = rng.integers(-1, 8, size=nq + ng)
    cams = rng.integers(0, 4, size=nq + ng)
    kind = seed % 3
    distmat = (rng.integers(0, 5, size=(nq, ng)).astype(np.float32) if kind == 0 else
               np.round(rng.random((nq, ng)), 2) if kind == 1 else rng.random((nq, ng)))
    try:
        cmc, m_ap, m_inp = evaluate_reference(distmat, pids[:nq], pids[nq:], cams[:nq], cams[nq:])
    except ValueError:
        with pytest.raises(ValueError, match="none of the"):
            evaluate(distmat, pids[:nq], pids[nq:], cams[:nq], cams[nq:])
        return
    result = evaluate(distmat, pids[:nq], pids[nq:], cams[:nq], cams[nq:])
    assert abs(result.mAP - m_ap) < 1e-6 and abs(result.mINP - m_inp) < 1e-6
    assert np.abs(result.cmc - cmc).max() < 1e-6


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN or infinite entries .*query 0, gallery 1"):
        evaluate(np.array([[0.1, np.nan]]), [1], [1, 1], [0], [1, 1])
    with pytest.raises(ValueError, match="g_pids has 3 entries but distmat is 1 x 2"):
        evaluate(np.zeros((1, 2)), [1], [1, 1, 1], [0], [1, 1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.zeros(3), [1], [1, 1, 1], [0], [1, 1, 1])
    with pytest.raises(ValueError, match="none of the 1 queries has a true match"):
        evaluate(np.zeros((1, 2)), [1], [2, 3], [0], [1, 1])


@st.composite
def problems(draw):
    nq = draw(st.integers(1, 8))
    ng = draw(st.integers(2, 25))
    pids = draw(st.lists(st.integers(0, 4), min_size=nq + ng, max_size=nq + ng))
    cams = draw(st.lists(st.integers(0, 2), min_size=nq + ng, max_size=nq + ng))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    distmat = np.stack([rng.permutation(ng) for _ in range(nq)]).astype(np.float64)  # no ties within a row
    perm = rng.permutation(ng)
    return distmat, np.array(pids[:nq]), np.array(pids[nq:]), np.array(cams[:nq]), np.array(cams[nq:]), perm


@settings(max_examples=150, deadline=None)
@given(problems())
def test_cmc_monotone_bounded_and_map_invariant_to_gallery_order(problem):
    distmat, qp, gp, qc, gc, perm = problem
    try:
        result = evaluate(distmat, qp, gp, qc, gc)
    except ValueError:
        return
    assert np.all(np.diff(result.cmc) >= 0)
    assert np.all((result.cmc >= 0) & (result.cmc <= 1))
    assert 0 <= result.mAP <= 1 and 0 <= result.mINP <= 1
    shuffled = evaluate(distmat[:, perm], qp, gp[perm], qc, gc[perm])
    assert shuffled.mAP == pytest.approx(result.mAP, abs=1e-12)
    assert np.allclose(shuffled.cmc, result.cmc)


def test_seed_study_reports_mean_and_sample_std_per_method():
    from fmn_core.retrieval.results import format_mean_std, mean_std
    from fmn_core.retrieval.seed_study import seed_study_markdown

    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([5.0]) == (5.0, 0.0)
    assert format_mean_std([]) == "n/a" and format_mean_std([84.0, 86.0]) == "85.00 ± 1.41"
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    table = seed_study_markdown({0: {"GRN": {"rank1": 80.0, "mAP": 60.0}, "FMN": {"rank1": 90.0, "mAP": 70.0}},
                                 2: {"GRN": {"rank1": 82.0, "mAP": 62.0}}})
    assert "| GRN | 81.00 ± 1.41 | 61.00 ± 1.41 | 2 |" in table
    assert "| FMN | 90.00 ± 0.00 | 70.00 ± 0.00 | 1 |" in table and "training seeds: 0, 2" in table


def test_seed_study_statistics_cover_the_rows_every_seed_has_and_the_fingerprint_ignores_the_seed():
    import pandas as pd

    from fmn_core.retrieval.seed_study import recipe_fingerprint, seed_study_statistics

    per_seed = {0: {"GRN": {"rank1": 80.0, "mAP": 60.0}, "FMN": {"rank1": 90.0, "mAP": 70.0}},
                1: {"GRN": {"rank1": 82.0, "mAP": 62.0}, "FMN": {"rank1": 92.0, "mAP": 71.0},
                    "FMN + re-ranking": {"rank1": 93.0, "mAP": 80.0}}}
    stats = seed_study_statistics(per_seed)
    assert stats == {"fmn_rank1_mean": 91.0, "fmn_rank1_std": 1.41, "fmn_mAP_mean": 70.5, "fmn_mAP_std": 0.71,
                     "grn_rank1_mean": 81.0, "grn_rank1_std": 1.41, "grn_mAP_mean": 61.0, "grn_mAP_std": 1.41}
    meta = pd.DataFrame({"path": ["/a/x/1.jpg", "/a/x/2.jpg"], "pid": [1, 2], "camid": [0, 1],
                         "split": ["query", "gallery"]})
    moved = meta.assign(path=["/b/1.jpg", "/b/2.jpg"])  # the same images elsewhere
    config = {"arch": "efficientnet_lite0", "seed": 0, "device": "cpu", "alpha": 0.5}
    assert recipe_fingerprint(config, meta) == recipe_fingerprint({**config, "seed": 7, "device": "cuda"}, moved)
    assert recipe_fingerprint(config, meta) != recipe_fingerprint({**config, "alpha": 0.3}, meta)
    assert recipe_fingerprint(config, meta) != recipe_fingerprint(config, meta.iloc[:1])


def test_figure4_rows_pick_queries_the_grn_misses_and_the_fmn_finds():
    from fmn_core.retrieval.descriptors import DescriptorTable
    from fmn_core.viz.ranked_lists import figure4_rows

    # three queries (pids 1, 2, 3, camera 0); the gallery holds each identity under camera 1 and pid 1 also under
    # camera 0 (same camera: skipped by the protocol, so never ranked)
    query = pd_frame(["q1", "q2", "q3"], [1, 2, 3], [0, 0, 0], "query")
    gallery = pd_frame(["g1", "g2", "g3", "g1same"], [1, 2, 3, 1], [1, 1, 1, 0], "gallery")
    eye = np.eye(3, dtype=np.float32)
    # GRN: queries 2 and 3 find each other's identity first (wrong); FMN gets all three right
    grn_q, grn_g = eye[[0, 1, 2]], np.stack([eye[0], eye[2] * 0.9 + eye[1] * 0.1, eye[1], eye[0]])
    fmn_q, fmn_g = eye, np.stack([eye[0], eye[1], eye[2], eye[0]])
    q = DescriptorTable(query, {"grn": grn_q, "fmn": fmn_q})
    g = DescriptorTable(gallery, {"grn": grn_g / np.linalg.norm(grn_g, axis=1, keepdims=True), "fmn": fmn_g})
    rows = figure4_rows(q, g, count=3, top=3)
    # the two the GRN misses first, then query 1 to fill the third row pair
    assert [r.label for r in rows] == ["GRN\npid 2", "FMN\npid 2", "GRN\npid 3", "FMN\npid 3", "GRN\npid 1",
                                       "FMN\npid 1"]
    assert rows[0].correct[0] is False and rows[1].correct[0] is True  # the GRN misses, the FMN finds
    assert rows[4].gallery_paths[0].endswith("g1") and not any(p.endswith("g1same") for p in rows[4].gallery_paths)


def pd_frame(paths, pids, camids, split):
    import pandas as pd

    return pd.DataFrame({"path": paths, "pid": pids, "camid": camids, "split": [split] * len(paths)})


def test_distances_of_read_only_arrays_need_no_copy_by_the_caller_and_warn_nothing():
    import warnings

    from fmn_core.retrieval.distance import pairwise_distance

    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    a.flags.writeable = False  # as an Arrow-backed descriptor column comes back
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distances = pairwise_distance(a, a)
    assert distances.shape == (3, 3) and distances[0, 1] == 8.0 and not a.flags.writeable
