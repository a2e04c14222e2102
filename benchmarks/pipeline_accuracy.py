"""Same accuracy, faster: the baseline and the fastest training path reach the same mAP.

Trains the synthetic profile (half-width ResNet-18 from scratch, 192x64, 20 identity epochs)
once per seed with two engine configurations and prints mAP and rank-1 per seed, their mean
and standard deviation, and the difference of the means with its standard error:

  baseline  variant a of ``train_speed.py``: fp32, unfused Adam, contiguous layout, the
            DataLoader pipeline (PIL decoding in workers each epoch)
  fast      the engine's CUDA defaults: bf16 autocast, channels_last, fused Adam and the
            device-resident pipeline (decoded uint8 cache)

Both augment with the same batched code and draws. On a CPU, autocast, channels_last and
fused Adam are ignored by the engine and the two pipelines give identical batches, so there
the two configurations train identically (a check of the plumbing); on a GPU it is the
full fast path against the baseline. Figures in benchmarks/README.md measured before issue
18 compared per-image CPU augmentation (other draws) with the batched one. Runs are cached by config
hash under ``--runs`` (interrupt and rerun to resume). About 3-4 minutes per run on 2 CPU
cores.

Usage:
    python benchmarks/pipeline_accuracy.py --seeds 0,1,2,3        # CPU, about 30 minutes
    python benchmarks/pipeline_accuracy.py --device cuda --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import statistics
import sys

from canlib.repro.experiments import profile
from canlib.repro.results import run_experiment

CONFIGS = {
    "baseline": [
        "train.amp=false",
        "train.channels_last=false",
        "train.fused_adam=false",
        "data.pipeline=cpu",
    ],
    "fast": [
        "train.amp=true",
        "train.channels_last=true",
        "train.fused_adam=true",
        "data.pipeline=gpu",
    ],
}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated training seeds")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--runs", default="runs/pipeline-accuracy", help="run cache folder")
    parser.add_argument("--profile", default="synthetic", help="smoke for a seconds-long check")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    scores: dict[str, dict[int, dict]] = {name: {} for name in CONFIGS}
    for seed in seeds:
        for name, overrides in CONFIGS.items():
            cfg = profile(
                args.profile, overrides + [f"train.seed={seed}", f"train.device={args.device}"]
            )
            metrics = run_experiment(cfg, args.runs, progress=True)  # a tqdm bar per epoch
            scores[name][seed] = metrics
            print(
                f"seed {seed} {name}: mAP {metrics['mAP']:.1f} rank-1 {metrics['rank1']:.1f} "
                f"({metrics.get('wall_seconds', 0):.0f} s, {metrics.get('device', '?')})",
                flush=True,
            )

    print(f"\nprofile {args.profile}, seeds {args.seeds}\n")
    print(
        "| config | "
        + " | ".join(f"seed {s} mAP / R1" for s in seeds)
        + " | mAP mean ± sd | rank-1 mean ± sd |"
    )
    print("|---" * (len(seeds) + 3) + "|")
    for name in CONFIGS:
        cells = [f"{scores[name][s]['mAP']:.1f} / {scores[name][s]['rank1']:.1f}" for s in seeds]
        m, sd = mean_sd([scores[name][s]["mAP"] for s in seeds])
        r, rsd = mean_sd([scores[name][s]["rank1"] for s in seeds])
        print(f"| {name} | " + " | ".join(cells) + f" | {m:.1f} ± {sd:.1f} | {r:.1f} ± {rsd:.1f} |")
    base = [scores["baseline"][s]["mAP"] for s in seeds]
    fast = [scores["fast"][s]["mAP"] for s in seeds]
    diff = statistics.mean(fast) - statistics.mean(base)
    se = (mean_sd(base)[1] ** 2 / len(seeds) + mean_sd(fast)[1] ** 2 / len(seeds)) ** 0.5
    print(
        f"\nfast - baseline: {diff:+.1f} mAP, standard error {se:.1f} "
        f"({'within' if abs(diff) <= 2 * se else 'outside'} two standard errors)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
