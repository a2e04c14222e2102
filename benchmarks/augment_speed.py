"""Augmentation speed: canlib.data.gpu_data.BatchedTrainAugment against the per-sample TrainTransform.

Times one training batch (default 64 images, output 384 x 128, the default TransformConfig:
flip 0.5, pad 10 + crop, normalise, random erasing 0.5) made two ways from ``uint8`` images
already in memory (decoding is not timed; the image cache does it once):

* per-sample: ``canlib.data.transforms.TrainTransform`` called on each image, then ``torch.stack``
  (what a DataLoader worker and the default collate do, minus the inter-process transfer);
* batched: ``BatchedTrainAugment`` on the ``(B, 3, h, w)`` batch with one generator.

Sources are 128 x 64 (Market-1501's crop size: the resize path, which the engine no longer
takes, since issue 15 it caches at the input size) and 384 x 128 (a cache at the input size, the
engine's: no resize). Prints a Markdown table
with the median and min of ``--repeats`` timed runs (after one warm-up) and the speed-up of
the batched path over the per-sample one measured in the same run.

Usage: ``python benchmarks/augment_speed.py [--batch 64] [--repeats 10] [--threads 1]
[--device cpu|cuda]``. The per-sample path always runs on CPU (where the DataLoader runs it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from canlib.data.gpu_data import BatchedTrainAugment
from canlib.data.transforms import TrainTransform, TransformConfig

SOURCES = ((128, 64), (384, 128))


def _time(run: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> list[float]:
    """Seconds per call of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _measure(
    source: tuple[int, int], batch: int, repeats: int, device: torch.device
) -> list[tuple[str, torch.device, list[float]]]:
    """Timings of both paths for one source size: ``(method, device, seconds per call)``."""
    cfg = TransformConfig()
    cpu = torch.device("cpu")
    images = torch.randint(
        0, 256, (batch, 3, *source), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    per_sample = TrainTransform(cfg, torch.Generator().manual_seed(1))
    batched = BatchedTrainAugment(cfg)
    on_device = images.to(device)
    generator = torch.Generator(device=device).manual_seed(2)
    return [
        (
            "per-sample TrainTransform",
            cpu,
            _time(lambda: torch.stack([per_sample(im) for im in images]), repeats, cpu),
        ),
        (
            "BatchedTrainAugment",
            device,
            _time(lambda: batched(on_device, generator), repeats, device),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="device of the batched path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = TransformConfig()
    print(
        f"batch {args.batch}, output {cfg.height}x{cfg.width}, {args.repeats} repeats, "
        f"{args.threads} CPU thread(s), torch {torch.__version__}\n"
    )
    print("| source | device | method | median ms/batch | min ms | images/s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for height, width in SOURCES:
        rows = _measure((height, width), args.batch, args.repeats, device)
        baseline = statistics.median(rows[0][2])
        for method, where, times in rows:
            median = statistics.median(times)
            speedup = "" if method.startswith("per-sample") else f"{baseline / median:.2f}x"
            print(
                f"| {height}x{width} | {where.type} | {method} | {median * 1e3:.1f} | "
                f"{min(times) * 1e3:.1f} | {args.batch / median:.0f} | {speedup} |"
            )


if __name__ == "__main__":
    main()
