"""Training-step speed of CAN under the engine's speed switches, in one process.

Variants (each a switch of ``canlib.engine``, not a fork of it):

  a  baseline: fp32, eager, torch's default (foreach) Adam, torch DataLoader workers
     decoding each batch with PIL (``data.pipeline=cpu``)
  b  a + bf16 autocast + channels_last + fused Adam (all three act on CUDA only)
  c  b + GPU-resident data: the training set decoded once into a uint8 tensor on the
     device (``data.pipeline=gpu``)

Every variant augments the batch on the device with the same batched code (issue 18 removed
the per-image CPU augmentation the baseline used before); the numbers in
``benchmarks/README.md`` measured before that change are marked so.
  d  c + ``torch.compile`` of the training forward (``train.compile=true``)

Every variant runs with cuDNN autotuning, as the engine does for any non-deterministic CUDA
run, so the baseline is the engine's fp32 path and its ratios are conservative.

For each variant and batch size it times ``--steps`` consecutive training steps after a
warm-up, as one window between two CUDA events (``time.perf_counter`` on the CPU), so no
synchronisation is added between steps, and prints images/s, step time, peak memory,
achieved TFLOP/s, its share of the matmul peak measured in the same run, and the projected
wall time of the paper's 600-epoch recipe with identity epochs (93 steps of 32 on
Market-1501) and image epochs (404 steps). The warm-up includes cuDNN's algorithm search and
``torch.compile``'s compilation.

Data: the built-in synthetic dataset at its ``market`` size (12,801 training crops at 128x64
over 753 ids, like Market-1501's 12,936 over 751), generated once into ``--data``. Test-set
timing: its query and gallery records are repeated in order up to Market-1501's exact
counts (3,368 query, 19,732 gallery images): every image is decoded, resized and embedded,
so the cost is that of the real test set; the metrics of an untrained model are not shown.

Usage:
    python benchmarks/train_speed.py --device cuda                  # the paper's setting
    python benchmarks/train_speed.py --quick                        # CPU, small model, minutes
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from canlib import engine
from canlib.config import ExperimentConfig
from canlib.data.sampling import PKSampler
from canlib.evaluate import evaluate_rank, pairwise_distance
from canlib.repro.experiments import profile
from canlib.synthetic import ensure_synthetic

FAST = ["train.amp=true", "train.channels_last=true", "train.fused_adam=true"]
VARIANTS = {
    "a": [
        "train.amp=false",
        "train.channels_last=false",
        "train.fused_adam=false",
        "data.pipeline=cpu",
    ],
    "b": FAST + ["data.pipeline=cpu"],
    "c": FAST + ["data.pipeline=gpu"],
    "d": FAST + ["data.pipeline=gpu", "train.compile=true"],
}
MARKET_STEPS = {"identities": 751 // 8, "images": 12936 // 32}
MARKET_TEST = {"query": 3368, "gallery": 19732}


def repeat_to(records: list, count: int) -> list:
    """``records`` repeated in order and cut to ``count`` items."""
    return list(itertools.islice(itertools.cycle(records), count))


def base_config(args: argparse.Namespace) -> ExperimentConfig:
    """The paper profile on the market-sized synthetic set (``--quick``: the synthetic profile)."""
    if args.quick:
        data = ["data.dataset=synthetic", f"data.synthetic_size={args.size}"]
    else:
        data = [
            "data.dataset=synthetic",
            "data.synthetic_size=market",
            f"data.data_root={args.data}",
        ]
    overrides = data + [
        f"train.device={args.device}",
        "model.pretrained=false",
        f"data.num_workers={args.workers}",
    ]
    return profile("synthetic" if args.quick else "paper", overrides)


def flops_per_image(cfg: ExperimentConfig, num_classes: int, device: torch.device) -> float:
    """FLOPs of one image's forward + backward, counted by torch's FlopCounterMode.

    The count depends on the model and input size only, so one eager fp32 count serves
    every variant (the counter cannot see inside a compiled graph).
    """
    parts = engine.build_training(cfg.with_overrides(VARIANTS["a"]), num_classes, device)
    batch = cfg.data.p * cfg.data.k
    images = torch.randn(batch, 3, cfg.data.height, cfg.data.width, device=device)
    pids = torch.arange(batch, device=device) // cfg.data.k % num_classes
    counter = FlopCounterMode(display=False)
    with counter:
        parts.criterion(parts.forward(images), pids)["total"].backward()
    return float(counter.get_total_flops()) / batch


def matmul_peak(device: torch.device) -> float:
    """Measured dense matmul throughput in TFLOP/s (bf16 on CUDA, fp32 on CPU), best of 3."""
    n = 8192 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if device.type == "cuda" else 4
    best = 0.0
    for _ in range(3):
        timer = _Timer(device)
        with timer:
            for _ in range(reps):
                a @ b
        best = max(best, 2 * n**3 * reps / timer.seconds / 1e12)
    return best


class _Timer:
    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.end.record()
            torch.cuda.synchronize(self.device)
            self.seconds = self.start.elapsed_time(self.end) / 1000
        else:
            self.seconds = time.perf_counter() - self.t0


def time_variant(cfg: ExperimentConfig, data, steps: int, warmup: int) -> dict[str, float]:
    """Mean time of ``steps`` consecutive steps of ``cfg`` after ``warmup``, and peak memory."""
    device = engine.resolve_device(cfg.train.device)
    gc.collect()  # the previous variant's model, optimiser and cache go before this one starts
    if device.type == "cuda":
        torch.cuda.empty_cache()
    engine.configure_backends(cfg, device)
    torch.manual_seed(0)
    parts = engine.build_training(cfg, data.num_train_pids, device)
    if cfg.train.compile:
        parts.forward = torch.compile(parts.forward)
    sampler = PKSampler([r[1] for r in data.train], p=cfg.data.p, k=cfg.data.k, seed=0)
    pipeline = engine.build_pipeline(cfg, data.train, device, progress=False)
    batches = itertools.chain.from_iterable(pipeline(sampler, e) for e in itertools.count())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        engine.train_step(parts, *next(batches))
    timer = _Timer(device)
    with timer:  # one window: the steps run back to back, as in training
        for _ in range(steps):
            engine.train_step(parts, *next(batches))
    step = timer.seconds / steps
    batch = cfg.data.p * cfg.data.k
    return {
        "step_s": step,
        "images_per_s": batch / step,
        "peak_mib": (
            torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda"
            else engine.memory_usage(device)["peak_rss_mib"]
        ),
    }


def time_test_set(
    cfg: ExperimentConfig, data, device: torch.device, market_size: bool = True
) -> dict[str, float]:
    """Seconds to embed the query and gallery (repeated to Market-1501's counts) and score them."""
    parts = engine.build_training(cfg, data.num_train_pids, device)
    model = parts.model.eval()
    query, gallery = list(data.query), list(data.gallery)
    if market_size:
        query = repeat_to(query, MARKET_TEST["query"])
        gallery = repeat_to(gallery, MARKET_TEST["gallery"])
    engine.extract_features(model, query[: cfg.eval.batch_size], cfg, device=device)  # warm-up
    start = time.perf_counter()
    qf, q_pids, q_cams = engine.extract_features(model, query, cfg, device=device)
    gf, g_pids, g_cams = engine.extract_features(model, gallery, cfg, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    features = time.perf_counter() - start
    start = time.perf_counter()
    # --quick's gallery can be smaller than the CMC's 50 ranks, which evaluate_rank warns of.
    max_rank = min(cfg.eval.max_rank, len(gallery))
    evaluate_rank(pairwise_distance(qf, gf), q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {
        "query": len(query),
        "gallery": len(gallery),
        "features_s": features,
        "metrics_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="synthetic profile model, CPU-sized")
    parser.add_argument("--variants", default="abcd")
    parser.add_argument("--batches", default="32,64,128", help="P x K batch sizes (K = 4)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per variant (default 100; 5 with --quick): long "
        "against the DataLoader's 2 x workers prefetched batches",
    )
    parser.add_argument("--warmup", type=int, default=None, help="default 10; 2 with --quick")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--data",
        default="data/market-sized-synthetic",
        help="where the market-sized synthetic dataset is generated and kept",
    )
    parser.add_argument(
        "--size",
        default="default",
        help="synthetic size with --quick (default 'default'; 'smoke' for a test)",
    )
    parser.add_argument("--skip-test-set", action="store_true")
    args = parser.parse_args(argv)
    args.steps = args.steps or (5 if args.quick else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    device = torch.device(args.device)
    base = base_config(args)
    if not args.quick:  # generated once (about a minute), with a progress bar
        ensure_synthetic(args.data, size="market", progress=True)
    data = engine.build_data(base)
    peak = matmul_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name}; measured matmul peak {peak:.3f} TFLOP/s "
        f"({'bf16' if device.type == 'cuda' else 'fp32'}); torch {torch.__version__}"
    )
    print(
        f"model: {base.model.name} {base.model.backbone} at {base.data.height}x{base.data.width}; "
        f"{len(data.train)} training images, {data.num_train_pids} ids\n"
    )
    print(
        "| variant | batch | images/s | step ms | peak MiB | GFLOP/img | TFLOP/s | % peak "
        "| 600 ep. (93 steps) | 600 ep. (404 steps) | vs a |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    flops = flops_per_image(base, data.num_train_pids, device)
    for batch in [int(b) for b in args.batches.split(",")]:
        baseline = None
        for key in args.variants:
            cfg = base.with_overrides(VARIANTS[key] + [f"data.p={batch // 4}", "data.k=4"])
            try:
                r = time_variant(cfg, data, args.steps, args.warmup)
            except Exception as error:  # noqa: BLE001 (e.g. no compiler for torch.compile: report, go on)
                reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
                print(f"| {key} | {batch} | failed: {type(error).__name__}: {reason} |")
                continue
            baseline = baseline or r["images_per_s"]
            tflops = flops * r["images_per_s"] / 1e12
            ident = 600 * MARKET_STEPS["identities"] * 32 / r["images_per_s"] / 60
            image = 600 * MARKET_STEPS["images"] * 32 / r["images_per_s"] / 60
            print(
                f"| {key} | {batch} | {r['images_per_s']:.0f} | {1000 * r['step_s']:.1f} | "
                f"{r['peak_mib']:.0f} | {flops / 1e9:.1f} | {tflops:.3f} | "
                f"{100 * tflops / peak:.0f}% | {ident:.0f} min | {image:.0f} min | "
                f"{r['images_per_s'] / baseline:.2f}x |"
            )
            sys.stdout.flush()
    if not args.skip_test_set:
        test = time_test_set(base.with_overrides(VARIANTS["b"]), data, device, not args.quick)
        print(
            f"\ntest set on {name}: {test['query']} query + {test['gallery']} gallery images "
            f"embedded in {test['features_s']:.1f} s ({args.workers} decoding workers), "
            f"scored in {test['metrics_s']:.2f} s; "
            f"total {test['features_s'] + test['metrics_s']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
