"""bf16 convolution weight gradients on CPU: oneDNN against canlib's matrix product.

Two tables, each measured in one process with its ratios taken in the same run:

1. per layer shape: the weight gradient alone, ``torch.ops.aten.convolution_backward`` (oneDNN)
   against :func:`canlib.conv_weight_grad.weight_grad_by_matmul`, bf16, channels-last, for the
   synthetic profile's layer-3/4 shapes (quarter-width ResNet-18 at 144x48, batch 64) and
   three large maps (ResNet-50 shapes at 384x128) where oneDNN should win;
2. one whole training step of the synthetic profile's model (default CAN) under bf16
   autocast, with the eligible convolutions switched and not, alternating step by step so
   that both see the same machine load; medians and quartiles over ``--steps`` steps each.

Usage: ``python benchmarks/conv_weight_grad.py [--threads 2] [--repeats 20] [--steps 30]
[--model can]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from bench_timing import call_seconds
from torch import nn

from canlib.conv_weight_grad import MatmulGradConv2d, weight_grad_by_matmul
from canlib.engine import build_training, configure_backends, train_step
from canlib.repro.experiments import profile

# (batch, in channels, height, width), (out channels, kernel), stride
SHAPES = [
    ((64, 128, 9, 3), (128, 3), 1),  # layer4 of each branch, synthetic profile
    ((64, 64, 9, 3), (128, 3), 1),  # layer4's first conv (last stride 1)
    ((64, 64, 9, 3), (64, 3), 1),  # layer3
    ((64, 64, 9, 3), (128, 1), 1),  # layer4's downsample
    ((64, 32, 18, 6), (32, 3), 1),  # layer2: too few channels, left to oneDNN
    ((32, 512, 24, 8), (512, 3), 1),  # ResNet-50 layer4 at 384x128
    ((32, 128, 48, 16), (128, 3), 1),  # ResNet-50 layer2 at 384x128
    ((32, 64, 96, 32), (64, 3), 1),  # ResNet-50 layer1 at 384x128
]


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    return 1e3 * statistics.median(call_seconds(run, repeats))


def _onednn(grad, x, weight, stride: int, pad: int) -> torch.Tensor:
    """The weight gradient alone, as torch computes it (oneDNN on CPU)."""
    return torch.ops.aten.convolution_backward(
        grad,
        x,
        weight,
        None,
        [stride] * 2,
        [pad] * 2,
        [1, 1],
        False,
        [0, 0],
        1,
        [False, True, False],
    )[1]


def layer_table(repeats: int) -> list[str]:
    rows = [
        "| input | weight | positions | oneDNN ms | matmul ms | oneDNN / matmul |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for shape, (out_channels, k), stride in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=gen).to(torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(out_channels, shape[1], k, k, generator=gen).to(torch.bfloat16)
        pad = k // 2
        grad = torch.nn.functional.conv2d(x, weight, None, stride, pad)
        grad = torch.randn_like(grad).contiguous(memory_format=torch.channels_last)
        onednn = _median_ms(lambda a=(grad, x, weight, stride, pad): _onednn(*a), repeats)
        mine = _median_ms(
            lambda a=(x, grad, (k, k), (stride,) * 2, (pad,) * 2): weight_grad_by_matmul(*a),
            repeats,
        )
        positions = grad.shape[2] * grad.shape[3]
        rows.append(
            f"| {tuple(shape)} | {out_channels}x{shape[1]}x{k}x{k} | {positions} | "
            f"{onednn:.2f} | {mine:.2f} | {onednn / mine:.2f}x |"
        )
    return rows


def step_table(model_name: str, steps: int) -> list[str]:
    device = torch.device("cpu")
    cfg = profile("synthetic", {"model.name": model_name, "train.amp": True})
    configure_backends(cfg, device)
    torch.manual_seed(0)
    parts = build_training(cfg, 750, device)  # switches the eligible convolutions
    switched = [m for m in parts.model.modules() if type(m) is MatmulGradConv2d]
    if not switched:  # the engine trains in fp32 on a CPU without AMX: nothing to compare
        return [f"{model_name}: no convolution switched (this CPU trains in fp32: no AMX)"]
    images = torch.rand(cfg.data.p * cfg.data.k, 3, cfg.data.height, cfg.data.width)
    pids = torch.arange(cfg.data.p).repeat_interleave(cfg.data.k)
    times: dict[str, list[float]] = {"oneDNN": [], "matmul": []}
    for _ in range(steps + 2):  # the first two rounds warm up
        for label, cls in (("oneDNN", nn.Conv2d), ("matmul", MatmulGradConv2d)):
            for module in switched:
                module.__class__ = cls
            start = time.perf_counter()
            train_step(parts, images, pids)
            times[label].append(1e3 * (time.perf_counter() - start))
    rows = [
        (
            f"{model_name}: {len(switched)} convolutions switched, batch {len(images)}, "
            f"{cfg.data.height}x{cfg.data.width}, bf16 autocast"
        ),
        "",
        "| weight gradient | median step ms | quartiles | images/s (median) | time vs oneDNN |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = statistics.median(times["oneDNN"][2:])
    for label, values in times.items():
        values = values[2:]
        q1, med, q3 = statistics.quantiles(values, n=4)
        rows.append(
            f"| {label} | {med:.0f} | {q1:.0f}-{q3:.0f} | {len(images) / med * 1e3:.0f} | "
            f"{med / base:.2f}x |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20, help="timings per layer shape")
    parser.add_argument("--steps", type=int, default=30, help="training steps per variant")
    parser.add_argument("--model", default="can", help="can, mgn or global")
    parser.add_argument("--skip-layers", action="store_true", help="only the training step")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}\n"
    )
    if not args.skip_layers:
        print("\n".join(layer_table(args.repeats)) + "\n")
    print("\n".join(step_table(args.model, args.steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
