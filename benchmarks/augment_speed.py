"""Training augmentation: canlib's one batched implementation against two well-kept libraries.

Issue 18 asked whether ``torchvision.transforms.v2`` or ``kornia.augmentation`` should replace
canlib's own code (:class:`canlib.data.transforms.TrainAugment`). Both are measured here on
the same job, in the same run:

* speed: one training batch (default 64 images already decoded at the input size 384 x 128,
  the engine's case) through flip 0.5 -> zero-pad 10 + random crop -> normalise -> random
  erasing 0.5, scale (0.02, 0.4), ratio (0.3, 3.3), value 0;
  - canlib: ``TrainAugment`` on the ``(B, 3, H, W)`` batch with an explicit generator;
  - torchvision v2: a ``Compose`` called per image (its random parameters are drawn once per
    call, so a batch would share one flip and one crop), then ``torch.stack``;
  - kornia: ``AugmentationSequential`` on the batch (per-sample parameters);
* distribution of random erasing, the one step whose definitions differ: over ``--draws``
  images, the share erased, the mean erased area fraction and its quantiles, the aspect
  range, and the two-sample KS statistic of the area fraction against canlib's draws (canlib
  follows Zhong et al.'s retry loop, as BoT and torchreid; tests/test_transforms.py checks it
  against a plainly written loop).

kornia is optional (``pip install kornia``); its rows are skipped when it is missing.
Neither library takes an explicit ``torch.Generator``: both draw from torch's global RNG, so
exact resume would need global RNG state saved and restored around every batch.

Usage: ``python benchmarks/augment_speed.py [--batch 64] [--repeats 10] [--threads 1]
[--draws 4000]``.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch
from bench_timing import call_seconds
from scipy import stats
from torchvision.transforms import v2

from canlib.data.transforms import TrainAugment, TransformConfig, draw_erasing_boxes

CFG = TransformConfig()


def torchvision_pipeline(erasing_only: bool = False) -> v2.Compose:
    erasing = v2.RandomErasing(CFG.erasing_p, CFG.erasing_scale, CFG.erasing_ratio, value=0)
    if erasing_only:
        return v2.Compose([erasing])
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(CFG.flip_p),
            v2.RandomCrop((CFG.height, CFG.width), padding=CFG.pad, fill=0),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(CFG.mean, CFG.std),
            erasing,
        ]
    )


def kornia_pipeline(erasing_only: bool = False):
    """kornia's sequence, or None when kornia is not installed."""
    try:
        import kornia.augmentation as K  # optional: only this benchmark compares with it
    except ImportError:
        return None
    erasing = K.RandomErasing(CFG.erasing_scale, CFG.erasing_ratio, value=0.0, p=CFG.erasing_p)
    if erasing_only:
        return K.AugmentationSequential(erasing)
    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=CFG.flip_p),
        K.RandomCrop((CFG.height, CFG.width), padding=CFG.pad, fill=0.0),
        K.Normalize(torch.tensor(CFG.mean), torch.tensor(CFG.std)),
        erasing,
    )


def speed_rows(batch: int, repeats: int) -> list[tuple[str, list[float]]]:
    images = torch.randint(
        0,
        256,
        (batch, 3, CFG.height, CFG.width),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    ours, generator = TrainAugment(CFG), torch.Generator().manual_seed(1)
    tv = torchvision_pipeline()
    rows = [
        ("canlib TrainAugment (batched)", call_seconds(lambda: ours(images, generator), repeats)),
        (
            "torchvision v2 (per image)",
            call_seconds(lambda: torch.stack([tv(image) for image in images]), repeats),
        ),
    ]
    kornia = kornia_pipeline()
    if kornia is not None:
        rows.append(
            ("kornia (batched)", call_seconds(lambda: kornia(images.float() / 255), repeats))
        )
    return rows


def erased_boxes(method: str, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: whether it was erased, and the (height, width) of the erased box."""
    if method == "canlib":
        erase, boxes = draw_erasing_boxes(
            draws,
            CFG.height,
            CFG.width,
            torch.Generator().manual_seed(3),
            p=CFG.erasing_p,
            scale=CFG.erasing_scale,
            ratio=CFG.erasing_ratio,
        )
        return erase.numpy(), boxes[:, 2:].numpy()
    ones = torch.ones(draws, 1, CFG.height, CFG.width)
    torch.manual_seed(3)
    if method == "torchvision v2":
        tv = torchvision_pipeline(erasing_only=True)
        out = torch.stack([tv(image) for image in ones])
    else:
        out = kornia_pipeline(erasing_only=True)(ones)
    zero = out[:, 0] == 0
    heights = zero.any(dim=2).sum(dim=1).numpy()
    widths = zero.any(dim=1).sum(dim=1).numpy()
    return heights > 0, np.stack([heights, widths], axis=1)


def distribution_rows(
    draws: int,
) -> list[tuple[str, float, np.ndarray, tuple[float, float], Any]]:
    methods = ["canlib", "torchvision v2"]
    if kornia_pipeline() is not None:
        methods.append("kornia")
    area = CFG.height * CFG.width
    rows, reference = [], None
    for method in methods:
        erased, sides = erased_boxes(method, draws)
        kept = sides[erased]
        fraction = kept[:, 0] * kept[:, 1] / area
        aspect = kept[:, 0] / kept[:, 1]
        reference = fraction if reference is None else reference
        ks = stats.ks_2samp(fraction, reference)
        rows.append((method, erased.mean(), fraction, (aspect.min(), aspect.max()), ks))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"batch {args.batch} uint8 images at {CFG.height}x{CFG.width}, {args.repeats} repeats, "
        f"{args.threads} CPU thread(s), torch {torch.__version__}\n"
    )
    print("| method | median ms/batch | min ms | images/s | canlib's speed-up |")
    print("| --- | --- | --- | --- | --- |")
    rows = speed_rows(args.batch, args.repeats)
    ours = statistics.median(rows[0][1])
    for method, times in rows:
        median = statistics.median(times)
        print(
            f"| {method} | {median * 1e3:.1f} | {min(times) * 1e3:.1f} | "
            f"{args.batch / median:.0f} | {median / ours:.2f}x |"
        )
    print(
        f"\nrandom erasing over {args.draws} images (p {CFG.erasing_p}, scale "
        f"{CFG.erasing_scale}, ratio {CFG.erasing_ratio}):\n"
    )
    print(
        "| method | share erased | mean area | area q10 / q50 / q90 | aspect min / max "
        "| KS vs canlib (p) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for method, share, fraction, (low, high), ks in distribution_rows(args.draws):
        q10, q50, q90 = np.quantile(fraction, (0.1, 0.5, 0.9))
        print(
            f"| {method} | {share:.3f} | {fraction.mean():.3f} | {q10:.3f} / {q50:.3f} / "
            f"{q90:.3f} | {low:.2f} / {high:.2f} | {ks.statistic:.3f} ({ks.pvalue:.2g}) |"
        )


if __name__ == "__main__":
    main()
