"""Command line: ``python -m canlib {prepare-synthetic,train,evaluate,reproduce} ...``.

This module only parses arguments, calls the library and prints; every piece of logic it
uses is importable from ``canlib`` so notebooks and tests reach the same code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from canlib.config import ExperimentConfig
from canlib.datasets import build_dataset, check_images
from canlib.errors import CanlibError, ConfigError
from canlib.repro.experiments import profile
from canlib.synthetic import SIZES, generate_synthetic

# canlib.engine and canlib.repro.reproduce import torch (seconds): the commands that need
# them import them inside, so that parsing arguments and reporting a bad --set stay instant.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m canlib",
        description="Collaborative Attention Network (CAN) for person re-identification.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = commands.add_parser(
        "prepare-synthetic", help="write the built-in synthetic dataset (Market-1501 layout)"
    )
    prep.add_argument("--root", required=True, help="folder to write the dataset into")
    prep.add_argument("--size", default="default", help="size preset: smoke, default or market")
    prep.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")

    train = commands.add_parser("train", help="train a model under a profile")
    _add_run_options(train)
    train.add_argument("--out", help="run folder (default runs/<name>-<config hash>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--model", help="model name: can, mgn or global (same as --set model.name=)")

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on a dataset's test split")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint-eNNNNN.pt of a run")
    evaluate.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    evaluate.add_argument("--data-root", help="dataset folder (default: the checkpoint's)")
    evaluate.add_argument("--rerank", action="store_true", help="apply k-reciprocal re-ranking")
    evaluate.add_argument("--flip", action="store_true", help="average with flipped images")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--json", dest="json_out", help="also write the metrics to this file")

    check = commands.add_parser(
        "check-data", help="decode every image of a dataset once and report unreadable ones"
    )
    check.add_argument("--dataset", required=True, help="dataset name, e.g. market1501")
    check.add_argument("--data-root", help="dataset folder (not needed for synthetic)")
    check.add_argument(
        "--remove-bad",
        action="store_true",
        help="list unreadable images and exit 0 instead of refusing",
    )

    reproduce = commands.add_parser(
        "reproduce", help="execute the notebooks with papermill into results/ and figures/"
    )
    _add_run_options(reproduce)
    reproduce.add_argument("--only", help="comma-separated notebook numbers, e.g. 03,04")
    reproduce.add_argument("--force", action="store_true", help="retrain runs that are cached")
    return parser


def _add_run_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--profile", default="synthetic", help="smoke, synthetic or paper")
    sub.add_argument(
        "--dataset",
        help="market1501, dukemtmcreid, cuhk03, msmt17, folder, synthetic (default: the profile's)",
    )
    sub.add_argument("--data-root", help="folder of a real dataset")
    sub.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    sub.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.epochs=10 (repeatable)",
    )


def _overrides(args: argparse.Namespace, *, device: bool = True) -> list[str]:
    """The shortcut options as ``--set`` items, before the user's own ``--set`` ones (if any)."""
    items = []
    if getattr(args, "dataset", None):
        items.append(f"data.dataset={args.dataset}")
    if getattr(args, "data_root", None):
        items.append(f"data.data_root={args.data_root}")
    if device and getattr(args, "device", None):
        items.append(f"train.device={args.device}")
    if getattr(args, "model", None):
        items.append(f"model.name={args.model}")
    return items + getattr(args, "set", [])


def _cmd_prepare_synthetic(args: argparse.Namespace) -> int:
    if args.size not in SIZES:
        raise ConfigError(f"unknown --size {args.size!r}; choose one of {', '.join(SIZES)}")
    root = generate_synthetic(args.root, SIZES[args.size].with_seed(args.seed), progress=True)
    print(f"synthetic dataset written to {root}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        cfg = _config_of_run(Path(args.resume)).with_overrides(args.set)
    else:
        cfg = profile(args.profile, _overrides(args))
    from canlib.engine import train  # torch: see the note at the top

    with _process_group(cfg.train.device) as rank:
        if args.resume:
            result = train(cfg, Path(args.resume), resume=True)
        else:
            result = train(cfg, Path(args.out) if args.out else None)
    if rank == 0:
        print(json.dumps({"run_dir": str(result.run_dir), **result.metrics}, indent=2))
    return 0


@contextmanager
def _process_group(device: str) -> Iterator[int]:
    """Join the process group torchrun describes in the environment; yield this rank.

    ``engine.train`` runs data-parallel whenever ``torch.distributed`` is initialised, so a
    ``torchrun --nproc_per_node=N`` launch (``WORLD_SIZE`` > 1) joins the group here: NCCL
    when the run's device (``train.device``) is CUDA, gloo on CPU, also on a GPU machine. A
    single process (no ``WORLD_SIZE``) yields rank 0 and does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0
        return
    import torch
    import torch.distributed as dist

    from canlib.engine import resolve_device  # torch: see the note at the top

    if resolve_device(device).type == "cuda":
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        options = {"backend": "nccl", "device_id": local}
    else:
        options = {"backend": "gloo"}
    # Rank 0 evaluates and writes checkpoints while the others wait at a barrier: allow an
    # hour (the default 10 minutes can be too short for a large test set with re-ranking).
    dist.init_process_group(timeout=timedelta(hours=1), **options)
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def _config_of_run(run_dir: Path):
    path = run_dir / "config.json"
    if not path.is_file():
        raise CanlibError(f"--resume {run_dir}: no config.json there; is it a canlib run folder?")
    return ExperimentConfig.from_dict(json.loads(path.read_text()))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from canlib.engine import (  # torch: see the note at the top
        build_data,
        evaluate_model,
        load_trained_model,
        resolve_device,
    )

    device = resolve_device(args.device)
    model, cfg = load_trained_model(args.checkpoint, device=device)
    overrides = [f"eval.flip={args.flip}", f"eval.rerank={args.rerank}"]
    cfg = cfg.with_overrides(overrides + _overrides(args, device=False)).validate()
    metrics = evaluate_model(model, build_data(cfg), cfg, device=device)
    text = json.dumps(metrics, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text)
    print(text)
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    data = build_dataset(args.dataset, args.data_root)
    # Without --remove-bad, check_images raises on the first split with a bad image.
    for split in ("train", "query", "gallery"):
        good, bad = check_images(getattr(data, split), remove_bad=args.remove_bad)
        print(f"{split}: {len(good)} readable, {len(bad)} unreadable")
        for path, reason in bad:
            print(f"  {path}: {reason}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from canlib.repro.reproduce import reproduce  # torch: see the note at the top

    # The device is a parameter of its own in each notebook, not an override.
    overrides = _overrides(args, device=False)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    manifest = reproduce(
        args.profile,
        overrides=overrides,
        device=args.device or "auto",
        only=only,
        force=args.force,
    )
    print(json.dumps(manifest["notebooks"], indent=2))
    return 0


COMMANDS = {
    "prepare-synthetic": _cmd_prepare_synthetic,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "reproduce": _cmd_reproduce,
    "check-data": _cmd_check_data,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m canlib`` and the ``canlib`` script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CanlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command (with --resume for train) to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
