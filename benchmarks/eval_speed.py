"""Evaluation speed: canlib.evaluate against the textbook algorithm, at Market-1501 size.

Builds synthetic problems shaped like real test splits and prints a Markdown table (median
and min of ``--repeats`` runs, peak extra memory (host resident memory; on ``--device cuda``
the CUDA allocator's peak for canlib's rows), speed-up over the textbook algorithm,
``canlib.evaluate.evaluate_rank_reference``, measured in the same run). Every method's
result is checked against the reference's.

* Market-1501 size: 3,368 queries x 15,913 gallery, 750 ids, 6 cameras, about 4.5 queries per
  id (one per camera the id appears in), 2,793 distractors (pid 0) and 1,000 junk (pid -1)
  in the gallery. Distances come from features (id centre + noise of sd 1, 64-D, cosine),
  tuned to look like a trained model (mAP about 0.85, rank-1 0.98, mINP 0.48); a second
  "random" problem has no signal at all (mAP near 0: true matches rank anywhere), as an
  untrained model or a synthetic check gives.
* MSMT17 size: 11,659 x 82,161 (3.8 GB of float32 distances), 3,060 ids, 15 cameras. The
  distance matrix is built chunk-wise into one float32 array; the reference is not run there.
* Re-ranking at Market size (k1=20, k2=6, lambda=0.3), from Euclidean distances.

``--baseline REV`` also times ``evaluate_rank`` from ``canlib/evaluate.py`` at git revision
REV (for example ``main``), alternating calls with the current one so that both see the same
load: on a shared machine only such same-run ratios mean much.

Usage: ``python benchmarks/eval_speed.py [--quick] [--repeats N] [--device cpu|cuda]
[--skip-msmt] [--skip-rerank] [--threads 2] [--baseline REV]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from canlib.evaluate import evaluate_rank, evaluate_rank_reference, pairwise_distance, re_rank


def load_baseline(rev: str):
    """``canlib/evaluate.py`` as of git revision ``rev``, imported as a separate module, so
    that an older evaluate_rank can be timed in the same run as the current one."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:canlib/evaluate.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "evaluate_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("evaluate_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split(rng, num_q, num_g, ids, cams, distractors, junk):
    """pids and camera ids shaped like a re-id test split."""
    q_pids, q_cams = [], []
    while len(q_pids) < num_q:  # each id queried once per camera it shows in (~4.5 cameras)
        pid = int(rng.integers(1, ids + 1))
        for cam in rng.choice(
            cams, size=int(rng.integers(3, 7)) if cams >= 6 else cams, replace=False
        ):
            q_pids.append(pid)
            q_cams.append(int(cam))
    q_pids, q_cams = np.array(q_pids[:num_q]), np.array(q_cams[:num_q])
    real = num_g - distractors - junk
    g_pids = np.concatenate(
        [
            np.arange(1, ids + 1),
            rng.integers(1, ids + 1, real - ids),
            np.zeros(distractors, int),
            -np.ones(junk, int),
        ]
    )
    g_pids = g_pids[rng.permutation(num_g)]
    return q_pids, g_pids, q_cams, rng.integers(0, cams, num_g)


def features(rng, pids, centres, noise):
    f = centres[np.where(pids > 0, pids, 0)] + noise * rng.standard_normal(
        (len(pids), centres.shape[1])
    )
    rand = pids <= 0  # distractors and junk: somebody else entirely
    f[rand] = rng.standard_normal((int(rand.sum()), centres.shape[1]))
    return torch.from_numpy(f.astype(np.float32))


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms (MB)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.extra_mb = (self.peak - self.base) / 2**20


def measure(
    fn: Callable[[], object], repeats: int, sync: bool
) -> tuple[list[float], float, object]:
    """Wall times of ``repeats`` calls and the peak extra memory: host RSS on the CPU, the
    CUDA allocator's peak above what was allocated before the call on a GPU (``sync``)."""
    times, peak, out = [], 0.0, None
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with PeakRSS() as mem:
            start = time.perf_counter()
            out = fn()
            if sync:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        extra = (torch.cuda.max_memory_allocated() - before) / 2**20 if sync else mem.extra_mb
        peak = max(peak, extra)
    return times, peak, out


def row(problem, device, method, times, peak, ratio=""):
    return (
        f"| {problem} | {device} | {method} | {statistics.median(times):.3f} | {min(times):.3f} "
        f"| {peak:.0f} | {ratio} |"
    )


def check_same(ours, ref):
    assert ours["num_valid"] == ref["num_valid"], (ours["num_valid"], ref["num_valid"])
    assert np.allclose(ours["cmc"], ref["cmc"], atol=1e-9, rtol=0)
    assert abs(ours["mAP"] - ref["mAP"]) < 1e-9 and abs(ours["mINP"] - ref["mINP"]) < 1e-9


def bench_rank(name, distmat, ids, args, lines, baseline=None):
    """Time evaluate_rank (and the baseline module's, calls alternating so that both see the
    same load) against the reference; return {method: median seconds}."""
    on = torch.device(args.device)
    dm = torch.from_numpy(distmat).to(on) if on.type == "cuda" else distmat
    ref_t, ref_mem, ref = measure(
        lambda: evaluate_rank_reference(distmat, *ids), max(1, args.repeats // 3), False
    )
    lines.append(row(name, "cpu", "textbook (evaluate_rank_reference)", ref_t, ref_mem))
    methods = {"canlib evaluate_rank": evaluate_rank}
    if baseline is not None:
        methods = {f"evaluate_rank at {args.baseline}": baseline.evaluate_rank, **methods}
    times = {label: [] for label in methods}
    peaks = dict.fromkeys(methods, 0.0)
    for _ in range(args.repeats):
        for label, fn in methods.items():
            t, mem, out = measure(lambda fn=fn: fn(dm, *ids), 1, on.type == "cuda")
            check_same(out, ref)
            times[label] += t
            peaks[label] = max(peaks[label], mem)
    for label, t in times.items():
        ratio = statistics.median(ref_t) / statistics.median(t)
        lines.append(row(name, args.device, label, t, peaks[label], f"{ratio:.1f}x"))
    print(
        f"  {name}: mAP {ref['mAP']:.4f}, rank-1 {ref['cmc'][0]:.4f}, mINP {ref['mINP']:.4f} "
        f"(identical from every method)"
    )
    return {label: statistics.median(t) for label, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (CI smoke)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--skip-msmt", action="store_true")
    parser.add_argument("--skip-rerank", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--baseline", metavar="REV", help="also time evaluate_rank of git revision REV (e.g. main)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU; none is available")
    torch.set_num_threads(args.threads)
    scale = 10 if args.quick else 1
    rng = np.random.default_rng(0)
    lines = [
        "| problem | device | method | median s | min s | peak extra MB | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    nq, ng, ids = 3368 // scale, 15913 // scale, 750 // scale
    q_pids, g_pids, q_cams, g_cams = split(rng, nq, ng, ids, 6, 2793 // scale, 1000 // scale)
    ids_args = (q_pids, g_pids, q_cams, g_cams)
    centres = rng.standard_normal((ids + 1, 64))
    qf, gf = features(rng, q_pids, centres, 1.0), features(rng, g_pids, centres, 1.0)
    market = pairwise_distance(qf, gf, "cosine").numpy()
    label = f"Market-size {nq}x{ng}"
    baseline = load_baseline(args.baseline) if args.baseline else None
    good = bench_rank(f"{label}, model-like", market, ids_args, args, lines, baseline)
    poor = bench_rank(
        f"{label}, random", rng.random((nq, ng), dtype=np.float32), ids_args, args, lines, baseline
    )
    for method, seconds in good.items():
        print(f"  {method}: random takes {poor[method] / seconds:.1f}x the model-like time")

    if not args.skip_msmt:
        mq, mg, mids = 11659 // scale, 82161 // scale, 3060 // scale
        m_ids = split(rng, mq, mg, mids, 15, mg // 20, mg // 40)
        centres = rng.standard_normal((mids + 1, 64))
        mqf, mgf = features(rng, m_ids[0], centres, 1.0), features(rng, m_ids[1], centres, 1.0)
        msmt = np.empty((mq, mg), dtype=np.float32)  # filled chunk-wise: no float64 copy
        for s in range(0, mq, 1024):
            msmt[s : s + 1024] = pairwise_distance(mqf[s : s + 1024], mgf, "cosine").numpy()
        dm = torch.from_numpy(msmt).to(args.device)
        methods = {"canlib evaluate_rank": evaluate_rank}
        if baseline is not None:
            methods = {f"evaluate_rank at {args.baseline}": baseline.evaluate_rank, **methods}
        for method, fn in methods.items():
            t, mem, res = measure(
                lambda fn=fn: fn(dm, *m_ids), max(1, args.repeats // 2), args.device == "cuda"
            )
            name = f"MSMT-size {mq}x{mg}, model-like"
            lines.append(row(name, args.device, method, t, mem, "(reference not run)"))
        print(f"  MSMT-size: mAP {res['mAP']:.4f}, rank-1 {res['cmc'][0]:.4f}")
        del msmt, dm

    if not args.skip_rerank:
        qf_d, gf_d = qf.to(args.device), gf.to(args.device)
        dists = [
            pairwise_distance(a, b, "euclidean")
            for a, b in ((qf_d, gf_d), (qf_d, qf_d), (gf_d, gf_d))
        ]
        if args.device == "cpu":
            dists = [d.numpy() for d in dists]
        t, mem, rr = measure(lambda: re_rank(*dists), 1, args.device == "cuda")
        rr = rr.cpu().numpy() if isinstance(rr, torch.Tensor) else rr
        after = evaluate_rank(rr, *ids_args)
        lines.append(row(f"{label}, re_rank k1=20 k2=6", args.device, "canlib re_rank", t, mem))
        print(f"  re-ranking: mAP {after['mAP']:.4f} after, rank-1 {after['cmc'][0]:.4f}")

    print(
        f"\ntorch {torch.__version__}, numpy {np.__version__}, "
        f"{torch.get_num_threads()} torch threads, "
        f"device {args.device}\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
