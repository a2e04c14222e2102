"""Peak memory of evaluation at Market-1501 size with CAN's 4096-d test embeddings.

Each case runs in a fresh process (``spawn``), so that its peak resident set size
(``resource.getrusage(...).ru_maxrss``, the largest RSS the process ever had) is its own:

* ``rank (model-like)``: ``pairwise_distance`` (cosine) of 3,368 query x 19,732 gallery
  features (Market-1501's gallery with its 3,819 junk images, 15,913 without), then
  ``evaluate_rank``. Features are identity centre + noise (``NOISE`` times the centre's
  length), L2-normalised, so that ranking looks like a trained model's (mAP about 0.8).
* ``rank (random)``: the same with no identity signal, the worst case of ``evaluate_rank``'s
  candidate filter (see ``benchmarks/eval_speed.py``).
* ``re_rank``: the three Euclidean distance matrices (query-gallery, query-query and the
  19,732 x 19,732 gallery-gallery one, 1.5 GiB of float32) and k-reciprocal re-ranking
  (k1=20, k2=6, lambda=0.3).

Pids and cameras follow Market-1501's test split: 750 ids over 6 cameras, about 4.5 queries
per id, 2,793 distractors (pid 0) and 3,819 junk images (pid -1) in the gallery. The
embedding size is the CAN test embedding: 4096 = 256 (m, eq. 4) x 16 stripes (global + 3
+ 5 + 7 parts; paper §3.2).

The table gives, per case: the features' size, the RSS just before the evaluation starts
(imports and features: "baseline"), the process's peak RSS, the difference (what the
evaluation itself adds on top of its inputs) and the wall time.

Usage: ``python benchmarks/memory_bound.py [--quick] [--threads 1] [--dim 4096]``
(``--quick``: a tenth of the size, a smoke test).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

NUM_QUERY = 3368
NUM_GALLERY = 19732
NUM_JUNK = 3819
NUM_DISTRACTORS = 2793
NUM_IDS = 750
NUM_CAMS = 6
NOISE = 4.0
"""Noise length over centre length; in 4096-d, 4 puts same-id cosines (about 1 / 17) near the
largest of ~20k chance cosines (sd 1/64), as a trained model's mAP of about 0.8 needs."""
CASES = ("rank (model-like)", "rank (random)", "re_rank")


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (psutil, or /proc on Linux)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Largest resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def market_like_ids(
    scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pids and cameras shaped like Market-1501's query and gallery (sizes times ``scale``).

    Returns:
        ``(q_pids, q_camids, g_pids, g_camids)``; gallery pids -1 (junk) and 0 (distractors)
        included. Ids are 1..N; every query id has gallery images.
    """
    nq, ng = round(NUM_QUERY * scale), round(NUM_GALLERY * scale)
    n_junk, n_dis = round(NUM_JUNK * scale), round(NUM_DISTRACTORS * scale)
    n_ids = max(2, round(NUM_IDS * scale))
    q_pids = np.concatenate([np.arange(1, n_ids + 1), rng.integers(1, n_ids + 1, nq - n_ids)])
    n_true = ng - n_junk - n_dis
    g_true = np.concatenate([np.arange(1, n_ids + 1), rng.integers(1, n_ids + 1, n_true - n_ids)])
    g_pids = np.concatenate([g_true, np.zeros(n_dis, np.int64), np.full(n_junk, -1)])
    return (
        q_pids,
        rng.integers(0, NUM_CAMS, nq),
        g_pids,
        rng.integers(0, NUM_CAMS, ng),
    )


def features(
    pids: np.ndarray, dim: int, signal: bool, seed: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, dim) float32 L2-normalised features: identity centre (if ``signal``) + noise.

    Junk and distractors get noise only. Filled in blocks of rows, so that building them
    adds little beyond the result to the peak that the evaluation is measured against.
    Centres come from ``seed`` so that query and gallery share them.
    """
    centres = np.random.default_rng(seed).standard_normal((pids.max() + 1, dim), np.float32)
    centres /= np.sqrt(dim)
    out = np.empty((len(pids), dim), np.float32)
    for start in range(0, len(pids), 1024):
        block = rng.standard_normal((min(1024, len(pids) - start), dim), dtype=np.float32)
        block *= NOISE / np.sqrt(dim)
        ids = pids[start : start + len(block)]
        if signal:
            block[ids > 0] += centres[ids[ids > 0]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def run_case(case: str, scale: float, dim: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """One case, in the calling process: build inputs, measure, return a table row."""
    import torch

    from canlib.evaluate import evaluate_rank, pairwise_distance, re_rank

    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    q_pids, q_cams, g_pids, g_cams = market_like_ids(scale, rng)
    signal = case != "rank (random)"
    qf = features(q_pids, dim, signal, seed + 1, rng)
    gf = features(g_pids, dim, signal, seed + 1, rng)
    inputs_mb = (qf.nbytes + gf.nbytes) / 2**20
    baseline = current_rss_mb()
    start = time.perf_counter()
    if case.startswith("rank"):
        distmat = pairwise_distance(qf, gf, "cosine")
        result = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
        note = f"mAP {result['mAP']:.3f}"
    else:
        q_g = pairwise_distance(qf, gf, "euclidean")
        q_q = pairwise_distance(qf, qf, "euclidean")
        g_g = pairwise_distance(gf, gf, "euclidean")
        final = re_rank(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3)
        note = f"output {tuple(final.shape)}"
    seconds = time.perf_counter() - start
    # The kernel updates the high-water mark lazily; it can trail the RSS read just now.
    peak = max(peak_rss_mb(), current_rss_mb())
    return {
        "case": case,
        "size": f"{len(q_pids)} x {len(g_pids)} x {dim}",
        "inputs MiB": inputs_mb,
        "baseline MiB": baseline,
        "peak MiB": peak,
        "added MiB": peak - baseline,
        "seconds": seconds,
        "note": note,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--dim", type=int, default=4096, help="feature size (default 4096)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    rows = []
    for case in args.cases:
        # A fresh process per case: ru_maxrss never goes down, so cases must not share one.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(run_case, case, scale, args.dim, args.threads).result())
        print(f"done: {case}", file=sys.stderr, flush=True)
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        cells = [
            f"{v:,.0f}" if k.endswith("MiB") else f"{v:.1f}" if k == "seconds" else str(v)
            for k, v in row.items()
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
