"""Adam's update step on CPU: torch's fused kernel against the foreach and per-tensor loops.

The parameters are those of a profile's CAN model (the synthetic one by default: 5.4M values in
109 tensors, most of them in the 16 cosine classifiers), with random gradients. The three
implementations are timed in alternation, so the ratios compare like with like on a noisy
machine. This is what ``train.fused_adam`` switches on for CPU training.

    python benchmarks/adam_step.py [--profile synthetic] [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from bench_timing import call_seconds

from canlib import engine
from canlib.repro.experiments import profile

VARIANTS = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "per tensor": {"foreach": False},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="synthetic")
    parser.add_argument("--classes", type=int, default=750, help="training identities")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = profile(args.profile, ["model.pretrained=false"])
    params = list(engine.build_model_from_config(cfg, args.classes).parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    optimizers = {
        name: torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4, **kwargs)
        for name, kwargs in VARIANTS.items()
    }
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # alternate, so machine noise hits every variant alike
        for name, optimizer in optimizers.items():
            times[name] += call_seconds(optimizer.step, 1)
    numel = sum(p.numel() for p in params)
    print(
        f"{args.profile} CAN: {numel / 1e6:.2f}M parameters in {len(params)} tensors, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print("| Adam | ms per step | vs fused |")
    print("| --- | --- | --- |")
    fused = statistics.median(times["fused"])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {name} | {median * 1e3:.2f} | {median / fused:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
