"""Distances, ranking metrics (CMC, mAP, mINP) and k-reciprocal re-ranking.

The metrics follow the protocol that Market-1501, DukeMTMC-reID, MSMT17 and CUHK03 (new
protocol) share: for each query, gallery items with the query's pid *and* camera are removed,
junk items (pid :data:`JUNK_PID` = -1) are removed (both in :func:`kept`, the one place of
that rule), distractors (pid ``0``) are ordinary negatives, and a query left with no true match
is skipped (``num_valid`` counts the others). Ties in distance are broken by gallery order, as
a stable sort of each row would break them.

:func:`evaluate_rank_reference` is the textbook definition: argsort each row stably, walk
the sorted list. :func:`evaluate_rank` gives the same numbers (exactly, ties included) without
ordering any gallery indices, because the metrics only need the rank of each true match:

* The rank of true match ``j`` of query ``i`` in the stably sorted list is the number of kept
  items ``g`` with ``d[i, g] < d[i, j]``, plus those with ``d[i, g] == d[i, j]`` and ``g < j``.
* The first count: each row of a chunk of queries, its removed items replaced by the largest
  value of the dtype, is sorted as *values* (numpy's SIMD sort on the CPU, torch's on a GPU:
  no index array, no stable sort), and each match's distance is binary-searched in its row.
* The second count is needed only where another kept item has exactly the match's distance
  (searching on both sides tells); it is counted directly on those rows.

The cost is one value sort per row, about as fast for a model without signal (mAP near 0) as
for a good one (``benchmarks/README.md``). Extra memory is bounded by the chunk: under 20 bytes
per entry of a chunk of ``chunk_elems`` distances (4M by default), whatever the size of
``distmat``; a float32 ``np.memmap`` or a CUDA tensor is read one chunk of rows at a time.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from canlib.errors import ConfigError, NonFiniteError
from canlib.rules import (
    DISTANCE_METRICS,
    JUNK_PID,  # gallery items with this pid never count (kept reads it)
)

logger = logging.getLogger(__name__)

__all__ = [
    "JUNK_PID",
    "evaluate_rank",
    "evaluate_rank_reference",
    "kept",
    "pairwise_distance",
    "ranked_gallery",
    "re_rank",
    "summarize",
    "top1_breakdown",
]

ArrayLike = np.ndarray | torch.Tensor

METRICS = DISTANCE_METRICS  # the one list, in canlib.rules
PROTOCOLS = ("market1501", "cuhk03-single-shot")
# Default bound on the number of distance entries handled at once (4M entries: 16 MB of
# float32 distances, about 60 MB of temporaries). Ours.
_CHUNK_ELEMS = 1 << 22


# --------------------------------------------------------------------------- inputs


def _as_1d_int(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D int64 numpy array, raising a ValueError naming ``name``."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and np.any(np.mod(arr, 1) != 0):
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


def _shape2d(x: ArrayLike, name: str) -> tuple[int, int]:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}.")
    return int(x.shape[0]), int(x.shape[1])


def _check_positive_int(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _device_of(x: ArrayLike) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _rows(x: ArrayLike, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a distance matrix (numpy, memmap included, or tensor) as a
    tensor on its device: detached from autograd, refused if it holds a NaN, half precision
    widened to float32 (exact; numpy has no bfloat16)."""
    if isinstance(x, torch.Tensor):
        chunk = x[start:stop].detach()
    else:
        rows = np.asarray(x[start:stop])
        if not rows.flags.writeable or not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows).copy()
        chunk = torch.from_numpy(rows)
    # A finite sum proves there is no NaN; only an infinite or NaN sum needs the full check.
    if chunk.is_floating_point() and not torch.isfinite(chunk.sum()) and torch.isnan(chunk).any():
        raise NonFiniteError("distmat contains NaN distances; expected finite values.")
    if chunk.dtype in (torch.float16, torch.bfloat16):
        chunk = chunk.float()
    return chunk


# --------------------------------------------------------------------------- distances


def pairwise_distance(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    metric: str = "cosine",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Distance matrix between query and gallery features, computed in chunks of queries.

    Args:
        query_feats: (Q, D) features, numpy or torch (CPU or CUDA).
        gallery_feats: (G, D) features, same kind.
        metric: ``'cosine'`` (1 - cosine similarity of L2-normalised features, in [0, 2]) or
            ``'euclidean'`` (true Euclidean distance; the squared form is clamped at 0 before
            the square root so rounding never gives a NaN). Default ``'cosine'``.
        chunk_size: queries per chunk; default keeps each chunk's temporaries near 4M
            entries, so extra memory is bounded whatever Q is (the (Q, G) result aside).

    Returns:
        (Q, G) float32 tensor on the features' device (float64 if the features are float64).

    Raises:
        ConfigError: unknown ``metric``.
        ValueError: wrong shapes or an empty input.
        NonFiniteError: non-finite features.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {list(METRICS)}, got {metric!r}.")
    q, g = _feature_pair(query_feats, gallery_feats)
    nq, ng = q.shape[0], g.shape[0]
    if metric == "cosine":
        g = F.normalize(g, dim=1)
    else:
        g_sq = (g * g).sum(dim=1)
    step = chunk_size or max(1, _CHUNK_ELEMS // ng)
    out = torch.empty((nq, ng), dtype=q.dtype, device=q.device)
    for s in range(0, nq, step):
        qc = q[s : s + step]
        if metric == "cosine":
            out[s : s + step] = 1.0 - F.normalize(qc, dim=1) @ g.T
        else:
            sq = (qc * qc).sum(dim=1, keepdim=True) + g_sq[None, :] - 2.0 * (qc @ g.T)
            out[s : s + step] = sq.clamp_(min=0.0).sqrt_()
        # Finite features can still overflow (squared norms of ~1e20 in float32).
        if not torch.isfinite(out[s : s + step].sum()):
            raise NonFiniteError(
                f"distances of queries {s}..{min(s + step, nq) - 1} overflowed to inf or NaN; "
                "features this large need float64 or normalising first."
            )
    return out


def _feature_pair(
    query_feats: ArrayLike, gallery_feats: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets as finite tensors of one float dtype on the queries' device."""
    nq, dq = _shape2d(query_feats, "query_feats")
    ng, dg = _shape2d(gallery_feats, "gallery_feats")
    if dq != dg:
        raise ValueError(
            f"query_feats and gallery_feats must have the same feature size, got {dq} and {dg}."
        )
    if nq == 0 or ng == 0:
        raise ValueError(
            f"query_feats and gallery_feats must be non-empty, got {nq} and {ng} rows."
        )
    q = torch.as_tensor(query_feats)
    g = torch.as_tensor(gallery_feats, device=q.device)
    if not q.is_floating_point() or q.dtype in (torch.float16, torch.bfloat16):
        q, g = q.float(), g.float()
    g = g.to(q.dtype)
    for t, name in ((q, "query_feats"), (g, "gallery_feats")):
        if not torch.isfinite(t).all():
            raise NonFiniteError(
                f"{name} contains NaN or infinite values; expected finite features."
            )
    return q, g


# --------------------------------------------------------------------------- protocol


def kept(q_pids: Any, q_camids: Any, g_pids: Any, g_camids: Any) -> Any:
    """Whether a gallery item takes part in a query's ranked list (Market-1501 protocol).

    The one place of the filtering rule: an item is removed when it is junk (pid
    :data:`JUNK_PID`) or has the query's pid *and* camera; everything else (distractors with
    pid 0 included) is ranked. Elementwise with broadcasting, on numpy arrays or torch tensors:
    ``kept(q_pids[:, None], q_camids[:, None], g_pids, g_camids)`` is the (Q, G) mask.
    """
    return (g_pids != JUNK_PID) & ((g_pids != q_pids) | (g_camids != q_camids))


def _true_matches(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(query, gallery) index pairs of the true matches: same pid and :func:`kept`.

    Sorted by query, then gallery index. Found through the gallery sorted by pid, so the cost
    is the number of same-pid pairs, not Q x G.
    """
    by_pid = np.argsort(g_pids, kind="stable")
    lo = np.searchsorted(g_pids[by_pid], q_pids, side="left")
    counts = np.searchsorted(g_pids[by_pid], q_pids, side="right") - lo
    q_idx = np.repeat(np.arange(len(q_pids)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    g_idx = by_pid[np.repeat(lo, counts) + within]
    match = kept(q_pids[q_idx], q_camids[q_idx], g_pids[g_idx], g_camids[g_idx])
    return q_idx[match], g_idx[match]


def _ranked_list(
    row: np.ndarray, q_pid: int, q_camid: int, g_pids: np.ndarray, g_camids: np.ndarray
) -> np.ndarray:
    """Gallery indices of one query's ranked list: the kept items, nearest first, ties in
    gallery order (a stable sort)."""
    order = np.argsort(row, kind="stable")
    return order[kept(q_pid, q_camid, g_pids[order], g_camids[order])]


def _walk(hits: np.ndarray) -> tuple[int, float, float]:
    """Walk one ranked list's hit flags (at least one True): (0-based position of the first
    hit, AP, INP). AP averages, over the hits, (hits so far) / (1-based position); INP is
    (number of hits) / (1-based position of the last hit)."""
    positions = np.flatnonzero(hits)
    found = np.arange(1, len(positions) + 1)
    ap = float(np.mean(found / (positions + 1)))
    return int(positions[0]), ap, len(positions) / float(positions[-1] + 1)


def _host_row(distmat: ArrayLike, i: int) -> np.ndarray:
    """Row ``i`` of ``distmat`` as a numpy array on the host, refused if it holds a NaN."""
    return _rows(distmat, i, i + 1)[0].cpu().numpy()


def _summary(
    first_hits: np.ndarray, aps: np.ndarray, inps: np.ndarray, max_rank: int
) -> dict[str, Any]:
    """The result dict from per-valid-query first-hit positions (0-based), APs and INPs."""
    if len(aps) == 0:
        raise ValueError(
            "no query has a true match in the gallery (a match needs the same pid, another "
            f"camera and pid != {JUNK_PID}); check q_pids/g_pids/q_camids/g_camids."
        )
    hits_at = np.bincount(np.minimum(first_hits, max_rank), minlength=max_rank + 1)
    return {
        "cmc": np.cumsum(hits_at[:max_rank]) / len(aps),
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "num_valid": len(aps),
    }


# --------------------------------------------------------------------------- ranking


def _validate_rank_inputs(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four id arrays as int64 numpy arrays, after checking shapes and ``max_rank``."""
    nq, ng = _shape2d(distmat, "distmat")
    if nq == 0:
        raise ValueError("distmat has no query rows (shape (0, G)); expected at least one query.")
    if ng == 0:
        raise ValueError("distmat has no gallery columns (shape (Q, 0)); expected a gallery.")
    arrays = []
    for arr, name, n in (
        (q_pids, "q_pids", nq),
        (g_pids, "g_pids", ng),
        (q_camids, "q_camids", nq),
        (g_camids, "g_camids", ng),
    ):
        a = _as_1d_int(arr, name)
        if len(a) != n:
            raise ValueError(f"{name} has length {len(a)} but distmat has shape {(nq, ng)}.")
        arrays.append(a)
    _check_positive_int("max_rank", max_rank)
    if max_rank > ng:
        warnings.warn(
            f"max_rank={max_rank} exceeds the gallery size {ng}; cmc[k] for k >= {ng} "
            "equals 1 (every valid query has found its first match by then).",
            stacklevel=3,
        )
    return tuple(arrays)


def evaluate_rank_reference(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
) -> dict[str, Any]:
    """The textbook evaluation, written plainly: the definition :func:`evaluate_rank` equals.

    For each query: argsort its row stably (ties keep gallery order), drop the items that
    :func:`kept` removes, and walk the list. CMC: the query counts at every k at or beyond
    its first true match. AP: the mean, over its true matches, of (matches so far) / (1-based
    position). INP (Ye et al.): (number of true matches) / (1-based position of the last).
    Queries without a true match are skipped; the metrics are means over the others.

    Same inputs, result and errors as ``evaluate_rank(..., protocol='market1501')``; one row
    at a time on the host, and much slower (``benchmarks/README.md``). The tests and
    ``benchmarks/eval_speed.py`` check the fast path against it.
    """
    q_pids, g_pids, q_camids, g_camids = _validate_rank_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    first_hits, aps, inps = [], [], []
    for i in range(len(q_pids)):
        ranked = _ranked_list(_host_row(distmat, i), q_pids[i], q_camids[i], g_pids, g_camids)
        hits = g_pids[ranked] == q_pids[i]
        if hits.any():
            first, ap, inp = _walk(hits)
            first_hits.append(first)
            aps.append(ap)
            inps.append(inp)
    return _summary(np.array(first_hits, dtype=np.int64), np.array(aps), np.array(inps), max_rank)


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    *,
    protocol: str = "market1501",
    repeats: int = 10,
    seed: int = 0,
    chunk_elems: int = _CHUNK_ELEMS,
) -> dict[str, Any]:
    """CMC, mAP and mINP of a query-gallery distance matrix.

    ``protocol='market1501'`` (default; also DukeMTMC-reID, MSMT17, CUHK03 new protocol): the
    protocol of the module docstring. Equal to :func:`evaluate_rank_reference` (the textbook
    algorithm), faster: see the module docstring.

    ``protocol='cuhk03-single-shot'``: the old CUHK03 single-gallery-shot CMC (as torchreid's
    ``eval_cuhk03``): after the same removals, one gallery image per identity is drawn at
    random, the CMC of that reduced list is computed, and this is averaged over ``repeats``
    draws. Ours: draws come from ``np.random.default_rng(seed)`` (torchreid uses the unseeded
    global RNG, so its numbers change between runs); mAP and mINP use the full list, as
    torchreid's mAP does.

    Args:
        distmat: (Q, G) distances, numpy (a float32 ``np.memmap`` is read in chunks) or
            torch (CPU or CUDA; CUDA sorts the rows on the GPU). Must not contain NaN.
        q_pids: (Q,) query identity ids. g_pids: (G,) gallery ids (-1 junk, 0 distractor).
        q_camids: (Q,) query camera ids. g_camids: (G,) gallery camera ids.
        max_rank: length of the returned CMC; default 50. Larger than G warns (1 beyond G).
        protocol: ``'market1501'`` or ``'cuhk03-single-shot'``.
        repeats: draws for ``'cuhk03-single-shot'``; default 10 (torchreid's).
        seed: seed of the draws for ``'cuhk03-single-shot'``; default 0.
        chunk_elems: distance entries processed at once (bounds extra memory); default 4M.

    Returns:
        ``{'cmc': (max_rank,) float64 array of fractions, 'mAP': float, 'mINP': float,
        'num_valid': int}``; mAP and mINP in [0, 1], averaged over the valid queries.

    Raises:
        ValueError: mismatched lengths, empty inputs, a bad ``max_rank``, or no valid query.
        ConfigError: unknown ``protocol``.
        NonFiniteError: NaN in ``distmat``.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}.")
    q_pids, g_pids, q_camids, g_camids = _validate_rank_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    if protocol == "cuhk03-single-shot":
        if repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
        return _evaluate_single_shot(
            distmat, q_pids, g_pids, q_camids, g_camids, max_rank, repeats, seed
        )
    return _evaluate_all_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_elems)


def _evaluate_all_shot(
    distmat: ArrayLike,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    chunk_elems: int,
) -> dict[str, Any]:
    """The Market-1501 metrics, equal to :func:`evaluate_rank_reference` (see the module
    docstring for how).

    Queries are taken in chunks of about ``chunk_elems`` distances: :func:`_match_ranks`
    gives the rank of every true match of the chunk, and :func:`_metrics_from_ranks` turns
    them into each valid query's first-hit position, AP and INP.
    """
    num_q, num_g = int(distmat.shape[0]), int(distmat.shape[1])
    match_q, match_g = _true_matches(q_pids, g_pids, q_camids, g_camids)
    rows_per_chunk = max(1, chunk_elems // num_g)
    first_hits, aps, inps = [np.zeros(0, np.int64)], [np.zeros(0)], [np.zeros(0)]
    for start in range(0, num_q, rows_per_chunk):
        stop = min(num_q, start + rows_per_chunk)
        dist = _rows(distmat, start, stop)  # read (and NaN-checked) even without a match
        lo, hi = np.searchsorted(match_q, [start, stop])
        if lo == hi:  # no query of the chunk has a true match
            continue
        keep = kept(q_pids[start:stop, None], q_camids[start:stop, None], g_pids, g_camids)
        ranks = _match_ranks(dist, keep, match_q[lo:hi] - start, match_g[lo:hi], chunk_elems)
        first, ap, inp = _metrics_from_ranks(match_q[lo:hi], ranks)
        first_hits.append(first)
        aps.append(ap)
        inps.append(inp)
    return _summary(np.concatenate(first_hits), np.concatenate(aps), np.concatenate(inps), max_rank)


def _match_ranks(
    dist: torch.Tensor, keep: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk_elems: int
) -> np.ndarray:
    """0-based rank of each true match ``(rows[m], cols[m])`` in its query's ranked list.

    Args:
        dist: (B, G) distances of a chunk of queries (CPU or CUDA).
        keep: (B, G) bool, :func:`kept` for the chunk.
        rows, cols: (M,) chunk row and gallery column of each true match, sorted by row.
        chunk_elems: bound on the entries of the temporaries of the tie count.

    Returns:
        (M,) int64: the number of kept items of the match's row with a smaller distance,
        plus those with an equal distance and a smaller gallery index.
    """
    index = (torch.as_tensor(rows, device=dist.device), torch.as_tensor(cols, device=dist.device))
    values = dist[index].cpu().numpy()
    ordered = _sorted_kept(dist, keep)
    bounds = np.searchsorted(rows, np.arange(len(ordered) + 1))  # each row's matches
    smaller, equal = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    for i in np.flatnonzero(np.diff(bounds)):
        mine = slice(bounds[i], bounds[i + 1])
        smaller[mine] = np.searchsorted(ordered[i], values[mine], side="left")
        equal[mine] = np.searchsorted(ordered[i], values[mine], side="right") - smaller[mine]
    # The match itself is one of the equal items. Others (ties) come before it when their
    # gallery index is smaller; rare for float distances, so they are counted directly.
    tied = np.flatnonzero(equal > 1)
    if len(tied):
        smaller[tied] += _ties_before(dist, keep, rows[tied], cols[tied], chunk_elems)
    return smaller


def _sorted_kept(dist: torch.Tensor, keep: np.ndarray) -> np.ndarray:
    """Each row's distances in increasing order (values only), the items that ``keep``
    removes replaced by the dtype's largest value so that they sort last.

    On the CPU numpy's sort, which uses the CPU's SIMD instructions (about 10x faster than
    torch's CPU sort at Market-1501 size); on a GPU torch's, copied back to the host.
    """
    largest = torch.inf if dist.is_floating_point() else torch.iinfo(dist.dtype).max
    if dist.is_cuda:
        filled = torch.where(torch.as_tensor(keep, device=dist.device), dist, largest)
        return torch.sort(filled, dim=1).values.cpu().numpy()
    filled = np.where(keep, dist.numpy(), largest)
    filled.sort(axis=1)
    return filled


def _ties_before(
    dist: torch.Tensor, keep: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk_elems: int
) -> np.ndarray:
    """For each item ``(rows[t], cols[t])``: the kept items of its row with exactly its
    distance and a smaller gallery index. A few rows at a time, to bound memory."""
    columns = np.arange(keep.shape[1])
    step = max(1, chunk_elems // keep.shape[1])
    counts = []
    for start in range(0, len(rows), step):
        r, c = rows[start : start + step], cols[start : start + step]
        row_dist = dist[torch.as_tensor(r, device=dist.device)].cpu().numpy()
        own = row_dist[np.arange(len(r)), c]
        same = (row_dist == own[:, None]) & keep[r] & (columns < c[:, None])
        counts.append(np.count_nonzero(same, axis=1))
    return np.concatenate(counts)


def _metrics_from_ranks(
    queries: np.ndarray, ranks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first-hit position, AP, INP) of each query that has true matches, from the query and
    0-based rank of each true match (what :func:`_walk` computes from a ranked list)."""
    order = np.lexsort((ranks, queries))  # by query, then rank
    queries, ranks = queries[order], ranks[order]
    _, first, counts = np.unique(queries, return_index=True, return_counts=True)
    found = np.arange(1, len(ranks) + 1) - np.repeat(first, counts)  # matches so far
    ap = np.add.reduceat(found / (ranks + 1), first) / counts
    return ranks[first], ap, counts / (ranks[first + counts - 1] + 1)


def _evaluate_single_shot(
    distmat: ArrayLike,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """Old CUHK03 single-gallery-shot metric; a plain per-query loop (CUHK03 is small)."""
    rng = np.random.default_rng(seed)
    cmc_sum = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(len(q_pids)):
        ranked = _ranked_list(_host_row(distmat, i), q_pids[i], q_camids[i], g_pids, g_camids)
        hits = g_pids[ranked] == q_pids[i]
        if not hits.any():
            continue
        _, ap, inp = _walk(hits)
        aps.append(ap)
        inps.append(inp)
        # Group the ranked list by identity; each draw keeps one random position per identity.
        pids_sorted, group_of = np.unique(g_pids[ranked], return_inverse=True)
        members = [np.flatnonzero(group_of == k) for k in range(len(pids_sorted))]
        own = int(np.searchsorted(pids_sorted, q_pids[i]))
        for _ in range(repeats):
            picks = np.array([grp[rng.integers(len(grp))] for grp in members])
            # Rank of the query's identity in the reduced list = identities drawn ahead of it.
            rank = int(np.sum(picks < picks[own]))
            cmc_sum[rank:] += 1.0  # empty slice when rank >= max_rank
    # mAP, mINP and num_valid as in the all-shot protocol (raises if no query is valid).
    result = _summary(np.zeros(len(aps), np.int64), np.array(aps), np.array(inps), max_rank)
    result["cmc"] = cmc_sum / (len(aps) * repeats)
    return result


def summarize(result: dict[str, Any], ranks: tuple[int, ...] = (1, 3, 5, 10)) -> dict[str, float]:
    """Table-ready metrics in percent: ``{'rank1': .., 'rank3': .., 'mAP': .., 'mINP': ..}``.

    Args:
        result: the dict returned by :func:`evaluate_rank`.
        ranks: 1-based CMC ranks to report; default (1, 3, 5, 10). Each must be <= len(cmc).
    """
    cmc = result["cmc"]
    out = {}
    for r in ranks:
        if not 1 <= r <= len(cmc):
            raise ValueError(f"rank {r} is outside the cmc, which has length {len(cmc)}.")
        out[f"rank{r}"] = 100.0 * float(cmc[r - 1])
    out["mAP"] = 100.0 * float(result["mAP"])
    out["mINP"] = 100.0 * float(result["mINP"])
    return out


def ranked_gallery(
    distmat_row: np.ndarray,
    q_pid: int,
    q_cam: int,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    topk: int = 10,
) -> list[tuple[int, bool]]:
    """The top-k gallery items of one query under the Market-1501 protocol, as
    :func:`evaluate_rank` ranks them (:func:`kept` items only, ties in gallery order).

    Args:
        distmat_row: (G,) distances from the query to the gallery.
        q_pid, q_cam: the query's pid and camera.
        g_pids, g_cams: (G,) gallery pids and cameras.
        topk: how many to return (fewer if fewer remain). Default 10.

    Returns:
        ``[(gallery index, is_hit), ...]`` nearest first; a hit has the query's pid.
    """
    d, g_pids, g_cams = (np.asarray(a).ravel() for a in (distmat_row, g_pids, g_cams))
    if not len(d) == len(g_pids) == len(g_cams):
        raise ValueError(
            f"distmat_row, g_pids and g_cams must have one length, got "
            f"{len(d)}, {len(g_pids)}, {len(g_cams)}"
        )
    ranked = _ranked_list(d, q_pid, q_cam, g_pids, g_cams)[:topk]
    return [(int(i), bool(g_pids[i] == q_pid)) for i in ranked]


TOP1_KINDS = (
    "same id",
    "same group",
    "distractor",
    "other id, same camera",
    "other id, other camera",
)


def top1_breakdown(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    group_of: dict[int, int] | None = None,
) -> dict[str, int]:
    """What each query's first-ranked gallery item is, under the Market-1501 protocol.

    A diagnostic for "why is rank-1 low": the top item (as :func:`ranked_gallery` ranks it)
    is counted as the same identity, another identity of the same *group* (``group_of`` maps
    pid -> group, e.g. the synthetic dataset's look-alike families), a distractor (pid 0), or
    another identity from the query's camera or from another camera.

    Returns:
        Counts per kind in :data:`TOP1_KINDS` order, summing to the number of queries that
        have at least one gallery item left.
    """
    num_q, _ = _shape2d(distmat, "distmat")
    q_pids, g_pids = _as_1d_int(q_pids, "q_pids"), _as_1d_int(g_pids, "g_pids")
    q_camids, g_camids = _as_1d_int(q_camids, "q_camids"), _as_1d_int(g_camids, "g_camids")
    groups = group_of or {}
    counts = dict.fromkeys(TOP1_KINDS, 0)
    for i in range(num_q):
        first = ranked_gallery(
            _host_row(distmat, i), q_pids[i], q_camids[i], g_pids, g_camids, topk=1
        )
        if not first:
            continue
        top = first[0][0]
        pid, qpid = int(g_pids[top]), int(q_pids[i])
        if pid == qpid:
            kind = "same id"
        elif pid == 0:
            kind = "distractor"
        elif qpid in groups and groups.get(pid) == groups[qpid]:
            kind = "same group"
        elif g_camids[top] == q_camids[i]:
            kind = "other id, same camera"
        else:
            kind = "other id, other camera"
        counts[kind] += 1
    return counts


# --------------------------------------------------------------------------- re-ranking


def _block(
    x: ArrayLike, rows: slice, cols: slice, transpose: bool, dev: torch.device
) -> torch.Tensor:
    """``x[rows, cols]`` (transposed if asked) as a float tensor on ``dev``."""
    part = x[rows, cols]
    t = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(part))
    t = t.to(dev)
    if t.dtype != torch.float64:
        t = t.float()
    return t.T if transpose else t


def _squared_columns(
    q_g: ArrayLike, q_q: ArrayLike, g_g: ArrayLike, start: int, stop: int, dev: torch.device
) -> torch.Tensor:
    """Columns ``start:stop`` of ``D**2``, as rows: ``(D[:, start:stop] ** 2).T``, (B, N).

    ``D = [[q_q, q_g], [q_g.T, g_g]]`` is the (N, N) matrix over queries then gallery.
    """
    nq = int(q_g.shape[0])
    parts = []
    if start < nq:  # query columns i: D[:Q, i] = q_q[:, i], D[Q:, i] = q_g[i, :]
        qs = slice(start, min(stop, nq))
        parts.append(
            torch.cat(
                [_block(q_q, slice(None), qs, True, dev), _block(q_g, qs, slice(None), False, dev)],
                1,
            )
        )
    if stop > nq:  # gallery columns Q+j: D[:Q, Q+j] = q_g[:, j], D[Q:, Q+j] = g_g[:, j]
        gs = slice(max(start, nq) - nq, stop - nq)
        parts.append(
            torch.cat(
                [_block(q_g, slice(None), gs, True, dev), _block(g_g, slice(None), gs, True, dev)],
                1,
            )
        )
    rows = torch.cat(parts, 0)
    return rows * rows


def _gather_d(
    q_g: ArrayLike, q_q: ArrayLike, g_g: ArrayLike, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """``D[a, b]`` for index arrays ``a``, ``b`` into the (N, N) matrix, as float64 numpy."""
    nq = int(q_g.shape[0])
    out = np.empty(len(a), dtype=np.float64)
    for sel, x, ia, ib in (
        ((a < nq) & (b < nq), q_q, a, b),
        ((a < nq) & (b >= nq), q_g, a, b - nq),
        ((a >= nq) & (b < nq), q_g, b, a - nq),  # D[Q+j, i] = q_g[i, j]
        ((a >= nq) & (b >= nq), g_g, a - nq, b - nq),
    ):
        if not sel.any():
            continue
        if isinstance(x, torch.Tensor):
            ta = torch.as_tensor(ia[sel], device=x.device)
            tb = torch.as_tensor(ib[sel], device=x.device)
            out[sel] = x[ta, tb].double().cpu().numpy()
        else:
            out[sel] = x[ia[sel], ib[sel]]
    return out


def _reciprocal(rank: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Mask (len(rows), k): is ``rank[i, m]`` a k-reciprocal neighbour of ``i``?

    ``rank[i, :k]`` is N(i, k-1) with ``i`` itself usually first, as in the reference code
    (k = k1 + 1); ``j`` is reciprocal when ``i`` is in ``rank[j, :k]`` too.
    """
    fwd = rank[rows, :k]
    return (rank[fwd, :k] == rows[:, None, None]).any(-1)


def _expanded_sets(
    rank: np.ndarray, rows: np.ndarray, kf: int, kh: int
) -> tuple[np.ndarray, np.ndarray]:
    """R*(i, k1) for ``rows``: index matrix and mask of the members, duplicates masked out.

    R(i, k1) is expanded by R(c, round(k1/2)) for each c in R(i, k1) whose half set overlaps
    R(i, k1) in more than 2/3 of its members (strictly more, as the reference code; the paper
    writes >=).
    """
    n = rank.shape[0]
    fwd = rank[rows, :kf]
    in_r = _reciprocal(rank, rows, kf)  # (B, kf)
    half = rank[fwd, :kh]  # (B, kf, kh): N(c, k1/2) for each candidate c
    in_half = _reciprocal(rank, fwd.reshape(-1), kh).reshape(fwd.shape + (kh,))
    member = (half[..., None] == fwd[:, None, None, :]) & in_r[:, None, None, :]
    overlap = (member.any(-1) & in_half).sum(-1)
    take = in_r & (overlap > 2.0 / 3 * in_half.sum(-1))
    idx = np.concatenate([fwd, half.reshape(len(rows), -1)], 1)
    mask = np.concatenate([in_r, (take[..., None] & in_half).reshape(len(rows), -1)], 1)
    idx = np.sort(np.where(mask, idx, n), axis=1)
    mask = idx < n
    mask[:, 1:] &= idx[:, 1:] != idx[:, :-1]
    return idx, mask


def _validate_rerank(
    q_g: ArrayLike, q_q: ArrayLike, g_g: ArrayLike, k1: int, k2: int, lambda_value: float
) -> tuple[int, int]:
    nq, ng = _shape2d(q_g, "q_g")
    if nq == 0 or ng == 0:
        raise ValueError(f"q_g must be non-empty, got shape {(nq, ng)}.")
    if _shape2d(q_q, "q_q") != (nq, nq):
        raise ValueError(f"q_q must have shape {(nq, nq)} to match q_g, got {tuple(q_q.shape)}.")
    if _shape2d(g_g, "g_g") != (ng, ng):
        raise ValueError(f"g_g must have shape {(ng, ng)} to match q_g, got {tuple(g_g.shape)}.")
    _check_positive_int("k1", k1)
    _check_positive_int("k2", k2)
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}.")
    return nq, ng


def re_rank(
    q_g: ArrayLike,
    q_q: ArrayLike,
    g_g: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_elems: int = _CHUNK_ELEMS,
) -> ArrayLike:
    """k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
    k-reciprocal Encoding", CVPR 2017, https://arxiv.org/abs/1701.08398).

    Paper: d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g), where d_J is the Jaccard distance
    between Gaussian-kernel encodings V of the expanded k-reciprocal sets R*(p, k1), locally
    expanded over the k2 nearest neighbours. Conventions of the reference code
    (zhunzhong07/person-re-ranking, python-version; torchreid's ``rerank.py``), followed here:
    the input distances are squared and each column of the (N, N) matrix over queries then
    gallery is divided by its maximum before use; N(p, k) holds k + 1 items (p itself first);
    the half-size expansion uses round(k1 / 2) (NumPy rounding) and a strict "> 2/3" overlap;
    V rows are L1-normalised; d_J = 1 - sum(min) / (2 - sum(min)); the d in d* is the
    normalised squared distance. Ties among distances are broken arbitrarily, as there.

    Ours: no dense (N, N) matrix is held. The (N, N) work (squaring, normalising, a top-k of
    max(k1 + 1, k2) per column) runs in chunks of columns on the inputs' device; V is a scipy
    sparse matrix (CPU) whose inverted index gives the Jaccard sums, chunked over queries.
    Extra memory: ``chunk_elems`` * 24 bytes, 8 * N * (k1 + 1) bytes of neighbour lists and 12
    bytes per nonzero of V (Market-1501: a few hundred MB, against 1.5 GB for one dense
    float32 (N, N) matrix and several for the reference code).

    Args:
        q_g: (Q, G) query-gallery distances (e.g. Euclidean), numpy or torch (CPU or CUDA).
        q_q: (Q, Q) query-query distances, same kind.
        g_g: (G, G) gallery-gallery distances, same kind (a float32 memmap works).
        k1: k of the k-reciprocal sets; default 20 (paper).
        k2: size of the local query expansion; default 6 (paper); 1 turns it off.
        lambda_value: weight of the original distance; default 0.3 (paper).
        chunk_elems: distance entries per dense chunk; default 4M.

    Returns:
        (Q, G) re-ranked distances, float32 (float64 if ``q_g`` is float64): numpy if ``q_g``
        is numpy, else a tensor on ``q_g``'s device.
    """
    nq, ng = _validate_rerank(q_g, q_q, g_g, k1, k2, lambda_value)
    n = nq + ng
    dev = _device_of(q_g)
    kf, kh, ke = min(k1 + 1, n), min(int(np.around(k1 / 2.0)) + 1, n), min(k2, n)
    rank, colmax = _initial_ranks(q_g, q_q, g_g, max(kf, ke), dev, chunk_elems)
    v = _encode(q_g, q_q, g_g, rank, colmax, kf, kh, chunk_elems)
    if k2 != 1:
        rows = np.repeat(np.arange(n), ke)
        expand = sp.csr_matrix(
            (np.full(n * ke, 1.0 / ke), (rows, rank[:, :ke].ravel())), shape=(n, n)
        )
        v = (expand @ v).tocsr()
    final = _final_distances(v, q_g, colmax, lambda_value, chunk_elems)
    if isinstance(q_g, torch.Tensor):
        return torch.from_numpy(final).to(q_g.device)
    return final


def _initial_ranks(
    q_g: ArrayLike, q_q: ArrayLike, g_g: ArrayLike, k: int, dev: torch.device, chunk_elems: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbour lists of every item (rows of the normalised matrix) and column maxima.

    Row i of the reference's normalised matrix is column i of D**2 divided by its maximum;
    the maxima are returned so that any entry can be rebuilt later without storing it.
    """
    n = int(q_g.shape[0] + q_g.shape[1])
    step = max(1, chunk_elems // n)
    rank = np.empty((n, k), dtype=np.int64)
    colmax = np.empty(n, dtype=np.float64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = _squared_columns(q_g, q_q, g_g, start, stop, dev)
        # Unlike ranking, re-ranking divides by column maxima: an inf would turn into NaN.
        if not torch.isfinite(rows.sum()):
            raise NonFiniteError(
                "re_rank distances contain NaN or infinite values; expected finite distances."
            )
        maxima = rows.max(dim=1).values
        colmax[start:stop] = maxima.double().cpu().numpy()
        rows = rows / torch.where(maxima > 0, maxima, torch.ones_like(maxima))[:, None]
        rank[start:stop] = (
            torch.topk(rows, k, dim=1, largest=False, sorted=True).indices.cpu().numpy()
        )
    colmax[colmax == 0] = 1.0  # an all-zero column stays zero rather than becoming NaN
    return rank, colmax


def _encode(
    q_g: ArrayLike,
    q_q: ArrayLike,
    g_g: ArrayLike,
    rank: np.ndarray,
    colmax: np.ndarray,
    kf: int,
    kh: int,
    chunk_elems: int,
) -> sp.csr_matrix:
    """Sparse V: V[i, j] proportional to exp(-d(i, j)) over j in R*(i, k1), rows summing to 1."""
    n = rank.shape[0]
    step = max(1, chunk_elems // (kf * kf * kh))
    parts_i, parts_j, parts_w = [], [], []
    for s in range(0, n, step):
        rows = np.arange(s, min(n, s + step))
        idx, mask = _expanded_sets(rank, rows, kf, kh)
        ii = np.broadcast_to(rows[:, None], idx.shape)[mask]
        jj = idx[mask]
        # Normalised squared distance of the reference: D[j, i]**2 / max(D[:, i]**2).
        w = np.exp(-(_gather_d(q_g, q_q, g_g, jj, ii) ** 2) / colmax[ii])
        w /= np.bincount(ii - s, weights=w, minlength=len(rows))[ii - s]
        parts_i.append(ii)
        parts_j.append(jj)
        parts_w.append(w)
    i, j, w = (np.concatenate(p) for p in (parts_i, parts_j, parts_w))
    return sp.csr_matrix((w, (i, j)), shape=(n, n))


def _final_distances(
    v: sp.csr_matrix, q_g: ArrayLike, colmax: np.ndarray, lambda_value: float, chunk_elems: int
) -> np.ndarray:
    """(1 - lambda) d_J + lambda d over query rows and gallery columns, chunked over queries.

    The overlap sum(min(V[q, k], V[Q + g, k])) over k is accumulated through V's inverted
    index (column k -> gallery items with V[g, k] != 0), never through a dense V.
    """
    nq, ng = int(q_g.shape[0]), int(q_g.shape[1])
    dtype = np.float64 if q_g.dtype in (np.float64, torch.float64) else np.float32
    vq = v[:nq].tocsr()
    inv = v[nq:].tocsc()
    col_len = np.diff(inv.indptr)
    work = np.bincount(vq.tocoo().row, weights=col_len[vq.indices], minlength=nq)
    step = int(max(1, min(chunk_elems // ng, chunk_elems // max(1.0, work.max()))))
    out = np.empty((nq, ng), dtype=dtype)
    for s in range(0, nq, step):
        b = min(step, nq - s)
        block = vq[s : s + b].tocoo()
        lens = col_len[block.col]
        rep = np.repeat(np.arange(len(block.col)), lens)
        within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        pos = inv.indptr[block.col][rep] + within
        mins = np.minimum(block.data[rep], inv.data[pos])
        flat = block.row[rep] * ng + inv.indices[pos]
        overlap = np.bincount(flat, weights=mins, minlength=b * ng).reshape(b, ng)
        jaccard = 1.0 - overlap / (2.0 - overlap)
        original = _rows(q_g, s, s + b).double().cpu().numpy() ** 2 / colmax[s : s + b, None]
        out[s : s + b] = (1.0 - lambda_value) * jaccard + lambda_value * original
    return out
