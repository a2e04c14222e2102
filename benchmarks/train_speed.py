"""Training-step speed of CAN under the engine's speed switches, in one process.

Variants (each a switch of ``canlib.engine``, not a fork of it):

  a  baseline: fp32, eager, torch DataLoader with PIL decoding and CPU augmentation
  b  a + bf16 autocast + channels_last + fused Adam (autocast and fused Adam on CUDA only)
  c  b + GPU-resident data: the training set decoded once into a uint8 tensor on the
     device, augmentation batched there (``data.pipeline=gpu``)
  d  c + ``torch.compile`` of the training forward (``train.compile=true``)

For each variant and batch size it times steps after a warm-up (CUDA events on a GPU,
``time.perf_counter`` on the CPU) and prints images/s, step time, peak memory, achieved
TFLOP/s, its share of the measured matmul peak, and the projected wall time of the paper's
600-epoch recipe with identity epochs (93 steps of 32 on Market-1501) and image epochs
(404 steps). Then it times test-set feature extraction plus evaluation at Market size.

Usage:
    python benchmarks/train_speed.py --device cuda                  # the paper's setting
    python benchmarks/train_speed.py --quick                        # CPU, small model, minutes
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from canlib import engine
from canlib.config import ExperimentConfig
from canlib.datasets import build_dataset
from canlib.experiments import profile
from canlib.sampling import PKSampler
from canlib.synthetic import SIZES, ensure_synthetic, generate_synthetic

VARIANTS = {
    "a": ["train.amp=false", "train.channels_last=false", "data.pipeline=cpu"],
    "b": ["train.amp=true", "train.channels_last=true", "data.pipeline=cpu"],
    "c": ["train.amp=true", "train.channels_last=true", "data.pipeline=gpu"],
    "d": ["train.amp=true", "train.channels_last=true", "data.pipeline=gpu", "train.compile=true"],
}
MARKET_STEPS = {"identities": 751 // 8, "images": 12936 // 32}


def market_sized_dataset(root: Path, quick: bool) -> Path:
    """A synthetic set shaped like Market-1501's training split (751 ids, ~12.9k crops)."""
    if quick:
        return Path(ensure_synthetic(None, size="default"))
    if (root / "README.txt").exists():
        return root
    # 251 families x 3 ids = 753 ids, 17 images each = 12.8k crops at 128x64.
    config = replace(SIZES["default"], train_families=251, test_families=10, images_per_id=17)
    return Path(generate_synthetic(root, config, progress=True))


def base_config(args: argparse.Namespace, data_root: Path) -> ExperimentConfig:
    name = "synthetic" if args.quick else "paper"
    overrides = [
        "data.dataset=market1501", f"data.data_root={data_root}", f"train.device={args.device}",
        "model.pretrained=false", f"data.num_workers={args.workers}",
    ]
    return profile(name, overrides)


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
    """Measured dense matmul throughput in TFLOP/s (bf16 on CUDA, fp32 on CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    timer = _Timer(device)
    reps = 20 if device.type == "cuda" else 5
    with timer:
        for _ in range(reps):
            a @ b
    return 2 * n**3 * reps / timer.seconds / 1e12


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
    """Median step time of ``cfg`` after ``warmup`` steps, plus peak memory and FLOPs."""
    device = engine.resolve_device(cfg.train.device)
    torch.manual_seed(0)
    parts = engine.build_training(cfg, data.num_train_pids, device)
    if cfg.train.compile:
        parts.forward = torch.compile(parts.forward)
    sampler = PKSampler([r[1] for r in data.train], p=cfg.data.p, k=cfg.data.k, seed=0)
    pipeline = engine.build_pipeline(cfg, data.train, device, progress=False)
    batches = itertools.chain.from_iterable(pipeline(sampler, e) for e in itertools.count())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        timer = _Timer(device)
        with timer:
            images, pids = next(batches)
            engine.train_step(parts, images, pids)
        if i >= warmup:
            times.append(timer.seconds)
    step = statistics.median(times)
    batch = cfg.data.p * cfg.data.k
    return {
        "step_s": step,
        "images_per_s": batch / step,
        "peak_mib": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                     else engine.memory_usage(device)["peak_rss_mib"]),
    }


def time_test_set(cfg: ExperimentConfig, data, device: torch.device) -> dict[str, float]:
    """Seconds to embed the query and gallery and to score them under the protocol."""
    parts = engine.build_training(cfg, data.num_train_pids, device)
    model = parts.model.eval()
    start = time.perf_counter()
    qf, q_pids, q_cams = engine.extract_features(model, data.query, cfg, device=device)
    gf, g_pids, g_cams = engine.extract_features(model, data.gallery, cfg, device=device)
    features = time.perf_counter() - start
    from canlib.evaluate import evaluate_rank, pairwise_distance

    start = time.perf_counter()
    evaluate_rank(pairwise_distance(qf, gf), q_pids, g_pids, q_cams, g_cams)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"images": len(data.query) + len(data.gallery), "features_s": features,
            "metrics_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="synthetic profile model, CPU-sized")
    parser.add_argument("--variants", default="abcd")
    parser.add_argument("--batches", default="32,64,128", help="P x K batch sizes (K = 4)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--data", default="data/market-sized-synthetic")
    parser.add_argument("--skip-test-set", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    data_root = market_sized_dataset(Path(args.data), args.quick)
    base = base_config(args, data_root)
    data = build_dataset("market1501", data_root)
    peak = matmul_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; measured matmul peak {peak:.3f} TFLOP/s "
          f"({'bf16' if device.type == 'cuda' else 'fp32'}); torch {torch.__version__}")
    print(f"model: {base.model.name} {base.model.backbone} at {base.data.height}x{base.data.width}; "
          f"{len(data.train)} training images, {data.num_train_pids} ids\n")
    print("| variant | batch | images/s | step ms | peak MiB | GFLOP/img | TFLOP/s | % peak "
          "| 600 ep. (93 steps) | 600 ep. (404 steps) | vs a |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    flops = flops_per_image(base, data.num_train_pids, device)
    for batch in [int(b) for b in args.batches.split(",")]:
        baseline = None
        for key in args.variants:
            cfg = base.with_overrides(VARIANTS[key] + [f"data.p={batch // 4}", "data.k=4"])
            r = time_variant(cfg, data, args.steps, args.warmup)
            baseline = baseline or r["images_per_s"]
            tflops = flops * r["images_per_s"] / 1e12
            ident = 600 * MARKET_STEPS["identities"] * 32 / r["images_per_s"] / 60
            image = 600 * MARKET_STEPS["images"] * 32 / r["images_per_s"] / 60
            print(f"| {key} | {batch} | {r['images_per_s']:.0f} | {1000 * r['step_s']:.1f} | "
                  f"{r['peak_mib']:.0f} | {flops / 1e9:.1f} | {tflops:.3f} | "
                  f"{100 * tflops / peak:.0f}% | {ident:.0f} min | {image:.0f} min | "
                  f"{r['images_per_s'] / baseline:.2f}x |")
            sys.stdout.flush()
    if not args.skip_test_set:
        test = time_test_set(base.with_overrides(VARIANTS["b"]), data, device)
        print(f"\ntest set: {test['images']} images embedded in {test['features_s']:.1f} s, "
              f"scored in {test['metrics_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
