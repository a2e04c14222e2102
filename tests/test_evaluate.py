"""Tests of canlib.evaluate against hand-worked cases and plainly written implementations.

evaluate_rank's fast path is compared with evaluate_rank_reference (the textbook algorithm,
in canlib.evaluate); the reference itself is checked on the hand-worked cases below.
"""

import warnings

import numpy as np
import pytest
import torch

from canlib.errors import ConfigError, NonFiniteError
from canlib.evaluate import (
    JUNK_PID,
    evaluate_rank,
    evaluate_rank_reference,
    kept,
    pairwise_distance,
    re_rank,
    summarize,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# --------------------------------------------------------------------------- helpers


def random_problem(rng, nq, ng, ids=6, cams=3, integer=False, dtype=np.float64):
    q_pids = rng.integers(1, ids + 1, nq)
    q_cams = rng.integers(0, cams, nq)
    g_pids = rng.integers(-1, ids + 1, ng)  # includes junk (-1) and distractors (0)
    g_cams = rng.integers(0, cams, ng)
    if integer:  # few distinct values: many ties
        dist = rng.integers(0, 5, (nq, ng)).astype(dtype)
    else:
        dist = rng.random((nq, ng)).astype(dtype)
    return dist, q_pids, g_pids, q_cams, g_cams


def reference_or_none(*problem, max_rank):
    """evaluate_rank_reference's result, or None when no query has a true match."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_rank beyond a tiny gallery
            return evaluate_rank_reference(*problem, max_rank=max_rank)
    except ValueError as err:
        assert "no query has a true match" in str(err)
        return None


def assert_same(ours, ref):
    assert ours["num_valid"] == ref["num_valid"]
    np.testing.assert_allclose(ours["cmc"], ref["cmc"], atol=1e-9, rtol=0)
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-9)
    assert ours["mINP"] == pytest.approx(ref["mINP"], abs=1e-9)


# --------------------------------------------------------------------------- evaluate_rank


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_agrees_with_textbook_on_random_problems(integer, dtype):
    rng = np.random.default_rng(1)
    for _ in range(25):
        nq, ng = int(rng.integers(1, 12)), int(rng.integers(1, 40))
        problem = random_problem(rng, nq, ng, integer=integer, dtype=dtype)
        ref_inputs = (problem[0].astype(np.float64),) + problem[1:]
        max_rank = int(rng.integers(1, 10))
        ref = reference_or_none(*ref_inputs, max_rank=max_rank)
        if ref is None:
            with pytest.raises(ValueError, match="no query has a true match"):
                evaluate_rank(*problem, max_rank=max_rank)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = evaluate_rank(*problem, max_rank=max_rank)
        assert_same(ours, ref)


def test_agrees_with_textbook_across_chunks_and_negative_distances():
    # chunk_elems=50 forces a chunk of 1-2 rows; negative and -0.0/0.0 values test the keys.
    rng = np.random.default_rng(2)
    dist, qp, gp, qc, gc = random_problem(rng, 15, 30, ids=4)
    dist = (dist - 0.5).astype(np.float32)
    dist[0, :5] = [-0.0, 0.0, -0.0, 0.0, 0.0]
    ref = evaluate_rank_reference(dist.astype(np.float64), qp, gp, qc, gc, 10)
    assert_same(evaluate_rank(dist, qp, gp, qc, gc, max_rank=10, chunk_elems=50), ref)
    assert_same(evaluate_rank(dist, qp, gp, qc, gc, max_rank=10), ref)


def test_hand_worked_case():
    # Query 0: pid 1, cam 0. Gallery (pid, cam, distance):
    #   g0 (1, 0, .1) same pid and camera: removed;  g1 (2, 1, .2) negative;
    #   g2 (1, 1, .3) match;  g3 (-1, 1, .05) junk: removed;  g4 (0, 2, .4) distractor;
    #   g5 (1, 2, .5) match.
    #   Ranked list: g1 g2 g4 g5 -> hits at positions 2 and 4 (1-based):
    #   AP = (1/2 + 2/4) / 2 = 0.5, first hit at rank 2, mINP = 2 / 4 = 0.5.
    # Query 1: pid 2, cam 0; distances g0 .9, g1 .6, g2 .1, g3 .2, g4 .6, g5 .3.
    #   Ranked list (junk g3 removed): g2 g5 g1 g4 g0 (g1 ties g4 at .6; g1 comes first
    #   by gallery order). One hit, at position 3: AP = 1/3, mINP = 1/3, first hit rank 3.
    # Query 2: pid 3 has no gallery image: skipped.
    # mAP = mINP = (1/2 + 1/3) / 2 = 5/12; CMC over 2 valid queries = [0, 1/2, 1, 1].
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.05, 0.4, 0.5],
            [0.9, 0.6, 0.1, 0.2, 0.6, 0.3],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ]
    )
    result = evaluate_rank(
        dist,
        np.array([1, 2, 3]),
        np.array([1, 2, 1, -1, 0, 1]),
        np.array([0, 0, 0]),
        np.array([0, 1, 1, 1, 2, 2]),
        max_rank=4,
    )
    np.testing.assert_allclose(result["cmc"], [0.0, 0.5, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(5 / 12)
    assert result["mINP"] == pytest.approx(5 / 12)
    assert result["num_valid"] == 2
    assert set(result) == {"cmc", "mAP", "mINP", "num_valid"}


def test_ties_are_broken_by_gallery_order():
    # Match and negative at the same distance: the one with the smaller gallery index ranks
    # first. Negative first -> match at position 2 -> AP 1/2; match first -> AP 1.
    pids, cams = np.array([1]), np.array([0])
    neg_first = evaluate_rank(
        np.array([[1.0, 1.0]]), pids, np.array([2, 1]), cams, np.array([1, 1]), 2
    )
    match_first = evaluate_rank(
        np.array([[1.0, 1.0]]), pids, np.array([1, 2]), cams, np.array([1, 1]), 2
    )
    assert neg_first["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(neg_first["cmc"], [0.0, 1.0])
    assert match_first["mAP"] == pytest.approx(1.0)


def test_same_camera_only_queries_are_skipped_and_single_gallery_item():
    # Query 0's only match shares its camera: skipped. Query 1 matches the only other item.
    dist = np.array([[0.5, 0.2], [0.3, 0.1]])
    result = evaluate_rank(
        dist, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([0, 1]), max_rank=2
    )
    assert result["num_valid"] == 1
    np.testing.assert_allclose(result["cmc"], [1.0, 1.0])
    single = evaluate_rank(
        np.array([[0.3]]), np.array([4]), np.array([4]), np.array([0]), np.array([1]), max_rank=1
    )
    assert single["mAP"] == 1.0 and single["num_valid"] == 1


def test_max_rank_beyond_gallery_warns_and_keeps_length():
    # One negative then the match: first hit at rank 2, so cmc = [0, 1, 1, 1, 1].
    with pytest.warns(UserWarning, match="max_rank=5 exceeds the gallery size 2"):
        result = evaluate_rank(
            np.array([[0.1, 0.2]]),
            np.array([1]),
            np.array([2, 1]),
            np.array([0]),
            np.array([1, 1]),
            max_rank=5,
        )
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1, 1])


def test_numpy_torch_and_memmap_inputs_agree(tmp_path):
    rng = np.random.default_rng(3)
    dist, qp, gp, qc, gc = random_problem(rng, 20, 50, dtype=np.float32)
    ref = evaluate_rank(dist, qp, gp, qc, gc, max_rank=5)
    as_torch = evaluate_rank(
        torch.from_numpy(dist),
        torch.from_numpy(qp),
        torch.from_numpy(gp),
        torch.from_numpy(qc),
        torch.from_numpy(gc),
        max_rank=5,
    )
    mm = np.memmap(tmp_path / "d.f32", dtype=np.float32, mode="w+", shape=dist.shape)
    mm[:] = dist
    mm.flush()
    ro = np.memmap(tmp_path / "d.f32", dtype=np.float32, mode="r", shape=dist.shape)
    as_memmap = evaluate_rank(ro, qp, gp, qc, gc, max_rank=5, chunk_elems=100)
    for other in (as_torch, as_memmap):
        assert_same(other, ref)


def test_distances_that_require_grad_are_accepted():
    rng = np.random.default_rng(13)
    dist, qp, gp, qc, gc = random_problem(rng, 10, 30, dtype=np.float32)
    with_grad = torch.from_numpy(dist).requires_grad_()
    for fn in (evaluate_rank, evaluate_rank_reference):
        assert_same(fn(with_grad, qp, gp, qc, gc, 5), evaluate_rank(dist, qp, gp, qc, gc, 5))


@cuda
def test_cuda_agrees_with_cpu():
    rng = np.random.default_rng(4)
    for integer in (False, True):
        dist, qp, gp, qc, gc = random_problem(rng, 30, 80, integer=integer, dtype=np.float32)
        cpu = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10)
        gpu = evaluate_rank(torch.from_numpy(dist).cuda(), qp, gp, qc, gc, max_rank=10)
        assert_same(gpu, cpu)


def test_single_shot_one_image_per_identity_equals_all_shot():
    # With one gallery image per identity a draw has no choice: CMC equals the usual one.
    rng = np.random.default_rng(5)
    dist = rng.random((6, 8))
    q_pids, g_pids = np.array([1, 2, 3, 4, 5, 6]), np.arange(1, 9)
    q_cams, g_cams = np.zeros(6, int), np.ones(8, int)
    single = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 8, protocol="cuhk03-single-shot")
    ref = evaluate_rank_reference(dist, q_pids, g_pids, q_cams, g_cams, 8)
    assert_same(single, ref)


def test_single_shot_probability_and_seed():
    # Query pid 1 (cam 0). Gallery (cam 1): pid 1 at distances .2 and .4, pid 2 at .1 and .3.
    # A draw keeps one image of each; the match ranks first only for (.2, .3): P = 1/4.
    # Rank 2 always holds it. mAP uses the full list .1 .2 .3 .4: (1/2 + 2/4) / 2 = 0.5.
    args = (
        np.array([[0.2, 0.4, 0.1, 0.3]]),
        np.array([1]),
        np.array([1, 1, 2, 2]),
        np.array([0]),
        np.array([1, 1, 1, 1]),
    )
    result = evaluate_rank(*args, max_rank=2, protocol="cuhk03-single-shot", repeats=4000, seed=7)
    assert result["cmc"][0] == pytest.approx(0.25, abs=0.03)  # sd 0.007 at 4000 draws
    assert result["cmc"][1] == 1.0
    assert result["mAP"] == pytest.approx(0.5)
    again = evaluate_rank(*args, max_rank=2, protocol="cuhk03-single-shot", repeats=4000, seed=7)
    assert again["cmc"][0] == result["cmc"][0]


@pytest.mark.parametrize(
    "case",
    [
        test_hand_worked_case,
        test_ties_are_broken_by_gallery_order,
        test_same_camera_only_queries_are_skipped_and_single_gallery_item,
        test_max_rank_beyond_gallery_warns_and_keeps_length,
    ],
)
def test_reference_passes_the_hand_worked_cases(case, monkeypatch):
    # The same hand-worked cases, with this module's evaluate_rank swapped for the reference.
    monkeypatch.setitem(globals(), "evaluate_rank", evaluate_rank_reference)
    case()


def test_kept_rule_by_hand():
    # Query pid 1, camera 0. Gallery (pid, camera): same pid and camera -> removed; same pid,
    # other camera -> kept (a true match); other pid, same camera -> kept; distractor -> kept;
    # junk -> removed, whatever its camera.
    g_pids = np.array([1, 1, 2, 0, -1, -1])
    g_cams = np.array([0, 1, 0, 0, 0, 1])
    assert JUNK_PID == -1
    assert kept(1, 0, g_pids, g_cams).tolist() == [False, True, True, True, False, False]
    mask = kept(
        torch.tensor([[1], [2]]),
        torch.tensor([[0], [0]]),
        torch.from_numpy(g_pids),
        torch.from_numpy(g_cams),
    )
    assert mask.tolist()[1] == [True, True, False, True, False, False]


def market_like(rng, nq, ng, ids, cams=4):
    """pids and cameras with junk (-1), distractors (0) and several true matches a query."""
    q_pids = rng.integers(1, ids + 1, nq)
    g_pids = np.where(rng.random(ng) < 0.15, rng.integers(-1, 1, ng), rng.integers(1, ids + 1, ng))
    return q_pids, g_pids, rng.integers(0, cams, nq), rng.integers(0, cams, ng)


@pytest.mark.parametrize("kind", ["integer", "coarse", "uniform"])
def test_agrees_with_reference_on_poor_models_with_many_ties(kind):
    # Distances with no signal (mAP far below a trained model's), so true matches rank
    # anywhere, with heavy ties ("integer": 4 values; "coarse": float32 on a grid of 1/8).
    # Small chunks split the queries and the tie counts over many passes.
    rng = np.random.default_rng(7)
    ids = market_like(rng, 60, 400, ids=8)
    if kind == "integer":
        dist = rng.integers(0, 4, (60, 400)).astype(np.int32)
    elif kind == "coarse":
        dist = (rng.integers(0, 16, (60, 400)) / 8).astype(np.float32)
    else:
        dist = rng.random((60, 400)).astype(np.float32)
    ref = evaluate_rank_reference(dist, *ids, max_rank=20)
    assert ref["mAP"] < 0.3 and ref["num_valid"] > 50
    for chunk_elems in (900, 1 << 22):
        ours = evaluate_rank(dist, *ids, max_rank=20, chunk_elems=chunk_elems)
        assert ours["num_valid"] == ref["num_valid"]
        assert np.array_equal(ours["cmc"], ref["cmc"])  # same integer first-hit ranks
        assert ours["mINP"] == ref["mINP"]  # same last-hit ranks, same arithmetic
        assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)  # summation order only


def test_extreme_values_and_dtypes_agree_with_reference():
    # +inf distances (also on true matches and on removed items, where the fast path puts
    # its own +inf), the largest int32 value, and narrow float types read as torch tensors.
    rng = np.random.default_rng(8)
    ids = market_like(rng, 30, 120, ids=5)
    dist = rng.integers(0, 3, (30, 120)).astype(np.float64)
    dist[rng.random(dist.shape) < 0.3] = np.inf
    big = np.where(np.isinf(dist), np.iinfo(np.int32).max, dist).astype(np.int32)
    half = torch.from_numpy(dist).to(torch.bfloat16)  # 0, 1, 2 and inf are exact
    for problem in (dist, big, half, torch.from_numpy(big).long()):
        assert_same(
            evaluate_rank(problem, *ids, max_rank=8, chunk_elems=500),
            evaluate_rank_reference(dist, *ids, max_rank=8),
        )


def test_summarize_in_percent():
    result = {"cmc": np.array([0.5, 0.75, 1.0]), "mAP": 0.25, "mINP": 0.125, "num_valid": 4}
    assert summarize(result, ranks=(1, 3)) == {
        "rank1": 50.0,
        "rank3": 100.0,
        "mAP": 25.0,
        "mINP": 12.5,
    }
    with pytest.raises(ValueError, match="rank 5"):
        summarize(result, ranks=(5,))


def test_bad_inputs_raise_clear_errors():
    d = np.zeros((2, 3))
    ids2, ids3 = np.array([1, 2]), np.array([1, 2, 3])
    with pytest.raises(ValueError, match="g_pids has length 2"):
        evaluate_rank(d, ids2, ids2, ids2, ids3)
    with pytest.raises(ValueError, match="no query rows"):
        evaluate_rank(np.zeros((0, 3)), [], ids3, [], ids3)
    bad = d.copy()
    bad[1, 1] = np.nan
    with pytest.raises(NonFiniteError, match="distmat contains NaN"):
        evaluate_rank(bad, ids2, ids3, np.zeros(2, int), np.ones(3, int), max_rank=3)
    with pytest.raises(ConfigError, match="cuhk03-single-shot"):
        evaluate_rank(d, ids2, ids3, ids2, ids3, protocol="cuhk03")
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(d, ids2, ids3, ids2, ids3, max_rank=0)


# --------------------------------------------------------------------------- distances


def test_pairwise_distance_matches_plain_formulas():
    rng = np.random.default_rng(6)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    g[0] = q[0]  # identical points: distance exactly 0, never NaN
    euclid = np.array([[np.sqrt(np.sum((a - b) ** 2)) for b in g] for a in q])
    cosine = np.array([[1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in g] for a in q])
    ours_e = pairwise_distance(q, g, "euclidean", chunk_size=3)
    ours_c = pairwise_distance(
        torch.from_numpy(q).float(), torch.from_numpy(g).float(), "cosine", chunk_size=2
    )
    np.testing.assert_allclose(ours_e.numpy(), euclid, atol=1e-6)
    assert ours_e[0, 0] == 0.0
    assert ours_c.dtype == torch.float32
    np.testing.assert_allclose(ours_c.numpy(), cosine, atol=1e-5)


def test_pairwise_distance_bad_inputs():
    q, g = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ConfigError, match="metric must be one of \\['cosine', 'euclidean'\\]"):
        pairwise_distance(q, g, "manhattan")
    with pytest.raises(ValueError, match="same feature size"):
        pairwise_distance(q, np.ones((4, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        pairwise_distance(np.ones((0, 3)), g)
    q[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="query_feats"):
        pairwise_distance(q, g)


@cuda
def test_pairwise_distance_cuda_agrees():
    q, g = torch.randn(9, 4, dtype=torch.float64), torch.randn(11, 4, dtype=torch.float64)
    for metric in ("cosine", "euclidean"):
        cpu = pairwise_distance(q, g, metric)
        gpu = pairwise_distance(q.cuda(), g.cuda(), metric)
        assert gpu.is_cuda
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-9)


# --------------------------------------------------------------------------- re-ranking


def plain_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. (CVPR 2017) transcribed from the paper's equations, dense and looped, with
    the reference code's conventions: squared distances divided by each column's maximum,
    N(p, k) = the k + 1 nearest items (p itself included), L1-normalised V."""
    nq = len(q_g)
    big = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    d = (big / big.max(axis=0)).T
    n = len(d)

    def neighbours(p, k):  # N(p, k)
        return set(np.argsort(d[p])[: k + 1].tolist())

    def reciprocal(p, k):  # Eq. 3: R(p, k) = {g in N(p, k) : p in N(g, k)}
        return {g for g in neighbours(p, k) if p in neighbours(g, k)}

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for p in range(n):
        r_p = reciprocal(p, k1)
        r_star = set(r_p)
        for q in r_p:  # Eq. 6: add R(q, k/2) when it overlaps R(p, k) enough
            r_q = reciprocal(q, half)
            if len(r_q & r_p) > 2 / 3 * len(r_q):  # paper: >=; reference code and canlib: >
                r_star |= r_q
        for g in r_star:  # Eq. 7: Gaussian kernel of the distance
            v[p, g] = np.exp(-d[p, g])
        v[p] /= v[p].sum()
    if k2 != 1:  # Eq. 11: local query expansion over the k2 nearest items
        v = np.array([v[np.argsort(d[p])[:k2]].mean(axis=0) for p in range(n)])
    jaccard = np.array(  # Eq. 10: 1 - sum(min) / sum(max)
        [
            [1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum() for g in range(nq, n)]
            for p in range(nq)
        ]
    )
    return (1 - lam) * jaccard + lam * d[:nq, nq:]  # Eq. 12


def euclidean(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


@pytest.mark.parametrize("k1,k2,lam", [(6, 3, 0.3), (5, 1, 0.5), (20, 6, 0.3), (3, 2, 0.0)])
def test_re_rank_agrees_with_paper_transcription(k1, k2, lam):
    rng = np.random.default_rng(k1 * 10 + k2)
    for trial in range(3):
        q, g = rng.normal(size=(5, 4)), rng.normal(size=(18 + trial, 4))
        args = (euclidean(q, g), euclidean(q, q), euclidean(g, g))
        expected = plain_rerank(*args, k1, k2, lam)
        ours = re_rank(*args, k1=k1, k2=k2, lambda_value=lam, chunk_elems=64)
        assert ours.shape == expected.shape and ours.dtype == np.float64
        np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_re_rank_torch_input_and_default_chunks():
    rng = np.random.default_rng(11)
    q, g = rng.normal(size=(6, 3)), rng.normal(size=(25, 3))
    args = [euclidean(q, g), euclidean(q, q), euclidean(g, g)]
    expected = plain_rerank(*args, 6, 3, 0.3)
    ours = re_rank(*(torch.from_numpy(a).float() for a in args), k1=6, k2=3)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)


@cuda
def test_re_rank_cuda_agrees_with_cpu():
    rng = np.random.default_rng(12)
    q, g = rng.normal(size=(6, 3)), rng.normal(size=(25, 3))
    args = [torch.from_numpy(a) for a in (euclidean(q, g), euclidean(q, q), euclidean(g, g))]
    cpu = re_rank(*args, k1=6, k2=3)
    gpu = re_rank(*(a.cuda() for a in args), k1=6, k2=3)
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-9)


def test_re_rank_bad_inputs():
    q_g, q_q, g_g = np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"q_q must have shape \(2, 2\)"):
        re_rank(q_g, np.zeros((3, 3)), g_g)
    with pytest.raises(ValueError, match="g_g must have shape"):
        re_rank(q_g, q_q, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="k1 must be a positive integer"):
        re_rank(q_g, q_q, g_g, k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        re_rank(q_g, q_q, g_g, lambda_value=1.5)
    q_g[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        re_rank(q_g, q_q, g_g)


def test_top1_breakdown_by_hand():
    from canlib.evaluate import top1_breakdown

    # Gallery: 0 pid 1 cam 0 | 1 pid 2 cam 1 | 2 pid 0 (distractor) cam 1 | 3 pid -1 junk
    # | 4 pid 3 cam 0
    g_pids, g_cams = [1, 2, 0, -1, 3], [0, 1, 1, 0, 0]
    groups = {1: 7, 2: 7, 3: 8}
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.0, 0.9],  # q pid 1 cam 1: junk (0.0) removed -> item 0, same id
            [0.5, 0.1, 0.3, 0.0, 0.9],  # q pid 1 cam 1: item 1 (pid 2, group 7) -> same group
            [0.5, 0.1, 0.3, 0.0, 0.9],  # q pid 2 cam 1: item 1 same pid same cam removed -> item 2
            [0.5, 0.4, 0.3, 0.0, 0.2],  # q pid 2 cam 1: item 4 (pid 3, group 8, cam 0) -> other cam
            [
                0.2,
                0.9,
                0.9,
                0.0,
                0.2,
            ],  # q pid 5 cam 0: tie 0/4 -> item 0 (pid 1, cam 0) same camera
        ]
    )
    counts = top1_breakdown(distmat, [1, 1, 2, 2, 5], g_pids, [1, 1, 1, 1, 0], g_cams, groups)
    assert counts == {
        "same id": 1,
        "same group": 1,
        "distractor": 1,
        "other id, same camera": 1,
        "other id, other camera": 1,
    }
