"""The training loop, feature extraction and checkpoint-based evaluation.

A run lives in one folder: ``config.json``, ``metrics.jsonl`` (a row per epoch and per
evaluation), ``checkpoint-eNNNNN.pt`` files and, once finished, ``summary.json``.
``train(cfg, run_dir, resume=True)`` continues from the newest good checkpoint and ends with
exactly the weights of an uninterrupted run (on CPU with ``train.deterministic``): every source
of randomness is restored from the checkpoint or a pure function of ``(seed, epoch)``.

Multi-GPU (``torchrun --nproc_per_node=N -m canlib train ...``): each rank takes a disjoint share
of the identities of every P x K batch, DistributedDataParallel averages the gradients (the
centres' by an explicit all-reduce), and rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import resource
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from canlib import checkpoint as ckpt
from canlib import datasets
from canlib.config import ExperimentConfig
from canlib.conv_weight_grad import use_matmul_weight_grad
from canlib.data.cache import ImageCache, cached_batches, check_cache_fits
from canlib.data.loader import build_test_loader, build_train_loader
from canlib.data.sampling import PKSampler
from canlib.data.transforms import TrainAugment, TransformConfig, build_test_transform
from canlib.datasets import build_dataset
from canlib.errors import CheckpointError, ConfigError, DatasetError, NonFiniteError
from canlib.evaluate import evaluate_rank, pairwise_distance, re_rank, summarize
from canlib.losses import CANLoss
from canlib.model import build_model, eval_mode, model_device
from canlib.synthetic import default_cache_dir
from canlib.trunk import ensure_trunk, uses_trunk

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics and where the run lives."""

    run_dir: Path
    metrics: dict[str, Any]


# ----------------------------------------------------------------------------- set-up


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available here")
    return torch.device(name)


def configure_backends(cfg: ExperimentConfig, device: torch.device) -> None:
    """On CUDA, let cuDNN time its algorithms once per shape and keep the fastest; on CPU, flush
    denormal floats to zero.

    Training shapes are fixed, so cuDNN's one-off search pays for itself within the first epoch
    (as in torchreid and fast-reid); deterministic runs keep cuDNN's default, since benchmarking
    may pick another algorithm on each run. On CPU, once the learning rate decays, Adam's updates
    and some gradients fall below 1e-38, where x86 arithmetic is many times slower
    (benchmarks/NOTES-synthetic-budget.md).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
    else:
        torch.set_flush_denormal(True)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bf16 tile units (Linux ``/proc/cpuinfo`` flag ``amx_bf16``)
    and torch's CPU kernels use AVX-512, the path on which oneDNN runs bf16 on AMX."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in info)
    except OSError:
        return False


def uses_amp(cfg: ExperimentConfig, device: torch.device) -> bool:
    """``train.amp`` acts on CUDA, and on a CPU with AMX (:func:`cpu_has_amx`): there bf16
    autocast trains about 1.8x faster than fp32 (REFERENCES.md: 122 against 67 images/s);
    without AMX, bf16 on a CPU is slower than fp32, so the CPU stays fp32."""
    if not cfg.train.amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_amx())


def uses_channels_last(cfg: ExperimentConfig, device: torch.device) -> bool:
    """``train.channels_last`` acts on CUDA, where tensor-core convolutions run in NHWC, and
    on a CPU training in bf16 (:func:`uses_amp`): there NHWC took the synthetic profile's CAN
    step from 316 to 265 ms (median, alternating steps; the stem's max pooling alone 14 -> 3 ms,
    and the matrix-product weight gradients read NHWC rows). An fp32 CPU stays NCHW."""
    if not cfg.train.channels_last:
        return False
    return device.type == "cuda" or (device.type == "cpu" and uses_amp(cfg, device))


def main_rank_first(make: Callable[[], Any]) -> Any:
    """``make()`` on rank 0, then on the other ranks: what rank 0 writes, the others read.

    For files several processes would otherwise write at once (the synthetic dataset, the
    decoded-image cache); a single process just calls ``make()``. If rank 0 fails, torchrun
    stops the other ranks waiting at the barrier.
    """
    if not dist.is_initialized():
        return make()
    if dist.get_rank() == 0:
        result = make()
        dist.barrier()
        return result
    dist.barrier()
    return make()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the engine is the only place that touches global RNGs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A per-epoch seed, so each epoch's augmentation draws depend on (seed, epoch) only."""
    return (seed * 1_000_003 + epoch * 7919) % 2**31


def lr_factor(epoch: int, cfg: ExperimentConfig) -> float:
    """Multiplier of ``train.lr`` during ``epoch`` (0-based): warm-up, then step decay.

    The paper (§4.6) decays x0.1 at epochs 250, 350 and 450; a linear warm-up from 0.1x over
    ``warmup_epochs`` (BoT) is available but off in the paper profile.
    """
    t = cfg.train
    factor = t.gamma ** sum(epoch >= m for m in t.milestones)
    if epoch < t.warmup_epochs:
        factor *= 0.1 + 0.9 * epoch / t.warmup_epochs
    return factor


def build_data(cfg: ExperimentConfig):
    """The dataset named by ``cfg.data`` (the synthetic one is generated on first use)."""
    d = cfg.data
    options: dict[str, Any] = {}
    if d.dataset == "synthetic":
        options = {"size": d.synthetic_size, "seed": d.synthetic_seed}
    elif d.dataset == "cuhk03":
        options = {"subset": d.cuhk03_subset}
    return build_dataset(d.dataset, d.data_root, **options)


def transform_config(cfg: ExperimentConfig):
    d = cfg.data
    return TransformConfig(
        height=d.height, width=d.width, flip_p=d.flip_p, pad=d.pad, erasing_p=d.erasing_p
    )


def build_model_from_config(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    m = cfg.model
    options: dict[str, Any] = {
        "backbone": m.backbone,
        # canlib's own trunk is pretrained here, once, the first time a run needs it.
        "pretrained": str(ensure_trunk(cfg, progress=False)) if uses_trunk(cfg) else m.pretrained,
        "embed_dim": m.embed_dim,
        "input_size": (cfg.data.height, cfg.data.width),
    }
    if m.name != "mgn":  # MGN keeps its own pooling, reductions and linear classifier
        options.update(
            scale=m.scale, pooling=m.pooling, embed_bn=m.embed_bn, test_features=cfg.eval.features
        )
    if m.name == "can":
        options.update(parts=m.parts, collaborative=m.collaborative)
    return build_model(m.name, num_classes, **options)


def build_loss(cfg: ExperimentConfig, model: nn.Module, num_classes: int) -> nn.Module:
    lo = cfg.loss
    return CANLoss(
        num_classes=num_classes,
        num_features=model.num_features,
        feat_dim=model.embed_dim,
        is_global=model.is_global,
        mode=lo.mode,
        margin=lo.margin,
        center_weight=lo.center_weight,
        squared=lo.triplet_distance == "squared-sum",
        reduction="sum" if lo.triplet_distance == "squared-sum" else "mean",
        label_smoothing=lo.label_smoothing,
    )


# ----------------------------------------------------------------------------- training


class _Run:
    """Mutable state of one training run (kept out of the module namespace)."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.device = resolve_device(cfg.train.device)
        if dist.is_initialized() and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.is_main = self.rank == 0
        self.steps_per_epoch = 0  # set once the sampler is known
        self.steps_done = 0  # optimisation steps taken in this call
        self.images_seen = 0  # images trained on in this call, over all ranks


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir``: set-up, then per epoch train, evaluate, log, checkpoint.

    Args:
        cfg: the experiment; validated before any work starts.
        run_dir: the run folder (default ``runs/<name>-<config hash>``).
        resume: continue from the newest good checkpoint in ``run_dir``; a checkpoint of a
            different config is refused with :class:`CheckpointError`.
        progress: show a tqdm bar per epoch.
        stop_after_steps: stop (as if killed) after this many optimisation steps in this
            call, without a final checkpoint; used by the resume tests.

    Returns:
        :class:`TrainResult` with the run folder and the final test metrics (in percent:
        ``rank1``, ``rank5``, ``rank10``, ``mAP``, ``mINP``) plus time, speed and memory.
    """
    cfg.validate()
    run_dir = Path(run_dir) if run_dir else Path("runs") / f"{cfg.name}-{cfg.config_hash()}"
    run = _Run(cfg, run_dir)
    _set_up_process(cfg, run.device)
    data, sampler, pipeline = _set_up_data(run, progress)
    parts = build_training(cfg, data.num_train_pids, run.device)
    start_epoch = _start_or_resume(run, parts, resume)
    _wrap_forward(run, parts)

    started = time.monotonic()
    final_metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        row = _train_epoch(run, parts, pipeline(sampler, epoch), epoch, progress, stop_after_steps)
        if row is None:  # stopped after ``stop_after_steps``, as if killed
            return TrainResult(run_dir, {"stopped_after_steps": run.steps_done})
        metrics = _evaluate_epoch(run, parts.model, data, epoch)
        final_metrics = metrics if metrics is not None else final_metrics
        _log_and_checkpoint(run, parts, epoch, row, metrics)
        if dist.is_initialized():
            dist.barrier()
    if run.is_main and not final_metrics:
        # Resumed after the last checkpoint but before the summary was written: score it.
        final_metrics = evaluate_model(parts.model, data, cfg, device=run.device)
    return TrainResult(run_dir, _write_summary(run, final_metrics, time.monotonic() - started))


def _set_up_process(cfg: ExperimentConfig, device: torch.device) -> None:
    """Threads, deterministic kernels, backend tuning and the global seeds of this process."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    configure_backends(cfg, device)
    seed_everything(t.seed)


def _set_up_data(run: _Run, progress: bool):
    """The dataset, this rank's P x K sampler and the batch pipeline; sets
    ``run.steps_per_epoch``. The training images are checked (decoded once) before use."""
    cfg = run.cfg
    data = main_rank_first(lambda: build_data(cfg))  # may generate or extract files
    sampler = PKSampler(
        [r[1] for r in data.train],
        p=cfg.data.p,
        k=cfg.data.k,
        epoch=cfg.data.epoch,
        seed=cfg.train.seed,
        rank=run.rank,
        world_size=run.world_size,
    )
    run.steps_per_epoch = min(len(sampler), cfg.train.steps_per_epoch or len(sampler))
    main_rank_first(
        lambda: check_train_images(
            data.train, progress=progress and run.is_main, check_command=_check_data_command(cfg)
        )
    )
    pipeline = build_pipeline(cfg, data.train, run.device, rank=run.rank, progress=progress)
    return data, sampler, pipeline


def _start_or_resume(run: _Run, parts: TrainingParts, resume: bool) -> int:
    """The first epoch to train: restored from the newest checkpoint when resuming one, else
    0 with a fresh run folder (refused if it already holds a run)."""
    if resume and ckpt.list_checkpoints(run.run_dir):
        return _restore(run, parts)
    if run.is_main:
        if resume:  # killed before its first checkpoint: nothing to resume, start afresh
            log.warning("no checkpoint in %s yet: training it from the start", run.run_dir)
            (run.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        _prepare_run_dir(run)
    return 0


def _wrap_forward(run: _Run, parts: TrainingParts) -> None:
    """The model as trained: wrapped in DistributedDataParallel and/or compiled, if asked."""
    if dist.is_initialized():
        parts.forward = nn.parallel.DistributedDataParallel(
            parts.model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
    if run.cfg.train.compile:
        parts.forward = torch.compile(parts.forward)


def _train_epoch(
    run: _Run,
    parts: TrainingParts,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    epoch: int,
    progress: bool,
    stop_after_steps: int | None,
) -> dict[str, Any] | None:
    """One epoch of optimisation steps; its ``train`` log row, or None when the run stopped
    after ``stop_after_steps`` steps (as if killed: no row, no checkpoint)."""
    t, steps = run.cfg.train, run.steps_per_epoch
    for group in parts.optimizer.param_groups:
        group["lr"] = t.lr * lr_factor(epoch, run.cfg)
    parts.forward.train()
    sums: dict[str, torch.Tensor] = {}
    epoch_start = time.monotonic()
    epoch_images = 0
    bar = tqdm(
        total=steps,
        desc=f"epoch {epoch + 1}/{t.epochs}",
        leave=False,
        disable=not (progress and run.is_main),
        dynamic_ncols=True,
    )
    for step, (images, pids) in enumerate(batches):
        if step >= steps:
            break
        losses = train_step(parts, images, pids, epoch=epoch, step=step)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach()
        epoch_images += images.shape[0] * run.world_size
        run.steps_done += 1
        bar.update(1)
        if bar.n % 10 == 1 or bar.n == steps:  # a host sync: not every step
            speed = epoch_images / max(time.monotonic() - epoch_start, 1e-9)
            bar.set_postfix(
                {k: f"{float(v) / (step + 1):.3f}" for k, v in sums.items()}
                | {"img/s": f"{speed:.0f}"}
            )
        if stop_after_steps is not None and run.steps_done >= stop_after_steps:
            bar.close()
            return None
    bar.close()
    run.images_seen += epoch_images
    seconds = time.monotonic() - epoch_start
    return {
        "kind": "train",
        "epoch": epoch + 1,
        "step": (epoch + 1) * steps,
        "lr": parts.optimizer.param_groups[0]["lr"],
        **{f"loss_{k}": float(v) / max(steps, 1) for k, v in sums.items()},
        "images_per_s": epoch_images / max(seconds, 1e-9),
        "epoch_seconds": seconds,
        **memory_usage(run.device),
    }


def _evaluate_epoch(run: _Run, model: nn.Module, data, epoch: int) -> dict[str, Any] | None:
    """The test metrics after ``epoch`` (0-based) when an evaluation is due there (every
    ``train.eval_every`` epochs and after the last), on the main rank; else None."""
    t = run.cfg.train
    due = (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs
    if not (run.is_main and due):
        return None
    return evaluate_model(model, data, run.cfg, device=run.device)


def _log_and_checkpoint(
    run: _Run,
    parts: TrainingParts,
    epoch: int,
    row: dict[str, Any],
    metrics: dict[str, Any] | None,
) -> None:
    """On the main rank: append the epoch's train row (and eval row) to ``metrics.jsonl``,
    and save a checkpoint every ``train.checkpoint_every`` epochs and after the last."""
    if not run.is_main:
        return
    t = run.cfg.train
    _append_log(run.run_dir, row)
    if metrics is not None:
        _append_log(run.run_dir, {"kind": "eval", "epoch": epoch + 1, **metrics})
    if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs:
        _save(run, parts, epoch + 1)


def _write_summary(run: _Run, metrics: dict[str, Any], wall: float) -> dict[str, Any]:
    """The run's final metrics with its time, speed, device and memory; written to
    ``summary.json`` by the main rank."""
    summary = {
        **metrics,
        "epochs": run.cfg.train.epochs,
        "epoch_definition": run.cfg.data.epoch,
        "steps_per_epoch": run.steps_per_epoch,
        "wall_seconds": wall,
        "images_per_s": run.images_seen / max(wall, 1e-9),
        "device": str(run.device),
        "world_size": run.world_size,
        **memory_usage(run.device),
    }
    if run.is_main:
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class TrainingParts:
    """The model, its loss and optimisers; ``forward`` is the model as trained (DDP/compiled)."""

    cfg: ExperimentConfig
    device: torch.device
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    center_optimizer: torch.optim.Optimizer | None
    forward: nn.Module


def build_training(cfg: ExperimentConfig, num_classes: int, device: torch.device) -> TrainingParts:
    """Model, loss, Adam (paper §4.6) and the centres' own SGD, on ``device``.

    Adam is the fused implementation (one kernel for all parameters, on CUDA and on CPU) when
    ``train.fused_adam`` is on; the model is in channels-last memory format when
    :func:`uses_channels_last` says so.
    """
    t = cfg.train
    model = build_model_from_config(cfg, num_classes).to(device)
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cpu" and uses_amp(cfg, device):
        use_matmul_weight_grad(model)
    criterion = build_loss(cfg, model, num_classes).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=t.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=t.weight_decay,
        fused=t.fused_adam and device.type in ("cuda", "cpu"),
    )
    centers = [p for p in criterion.parameters() if p.requires_grad]
    center_optimizer = torch.optim.SGD(centers, lr=cfg.loss.center_lr) if centers else None
    return TrainingParts(cfg, device, model, criterion, optimizer, center_optimizer, model)


def train_step(
    parts: TrainingParts, images: torch.Tensor, pids: torch.Tensor, *, epoch: int = 0, step: int = 0
) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch; returns the loss parts (still on the device).

    Raises:
        NonFiniteError: a loss part is NaN or infinite (nothing is updated then).
    """
    t = parts.cfg.train
    images = images.to(parts.device, non_blocking=True)
    pids = pids.to(parts.device, non_blocking=True)
    if uses_channels_last(parts.cfg, parts.device):
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(parts.device.type, dtype=torch.bfloat16)
        if uses_amp(parts.cfg, parts.device)
        else nullcontext()
    )
    with autocast:
        outputs = parts.forward(images)
    losses = parts.criterion(_float_outputs(outputs), pids)
    _check_finite(losses, epoch, step)
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.center_optimizer is not None:
        parts.center_optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    if t.grad_clip:
        nn.utils.clip_grad_norm_(parts.model.parameters(), t.grad_clip)
    parts.optimizer.step()
    if parts.center_optimizer is not None:
        _step_centers(parts.center_optimizer, parts.cfg.loss.center_weight)
    return losses


def build_pipeline(
    cfg: ExperimentConfig, records, device: torch.device, *, rank: int = 0, progress: bool = True
) -> Callable[[Any, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """A function ``(sampler, epoch) -> (images, pids) batches`` for the chosen data path.

    ``data.pipeline`` says where the decoded ``uint8`` images come from: ``cpu``, DataLoader
    workers decoding each batch; ``gpu``, a cache decoded once at the input size
    (``$CANLIB_CACHE/image-cache``) that lives on ``device``. Either way
    :class:`canlib.data.transforms.TrainAugment` augments the batch on ``device`` from a generator
    seeded by (seed, epoch, rank): both paths train on identical batches for one seed, and a
    resumed epoch redraws exactly what the uninterrupted one drew.

    Raises:
        ConfigError: on CUDA, when the cache would take more than half of the device's free
            memory (see :func:`canlib.data.cache.check_cache_fits`): the message gives the size
            and the fix, ``--set data.pipeline=cpu``.
    """

    height, width = cfg.data.height, cfg.data.width
    pipeline = cfg.data.pipeline
    if pipeline == "cpu" or (pipeline == "auto" and device.type != "cuda"):

        def decoded(sampler):
            loader = build_train_loader(
                records, sampler, height, width, cfg.data.num_workers, device.type == "cuda"
            )
            return ((batch[0], batch[1]) for batch in loader)
    else:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            check_cache_fits(len(records), height, width, free, str(device))
        cache = main_rank_first(
            lambda: ImageCache.load_or_build(
                _image_cache_path(records, height, width),
                records,
                height,
                width,
                progress=progress,
            )
        ).to(device)

        def decoded(sampler):
            return cached_batches(cache, sampler)

    augment = TrainAugment(transform_config(cfg), channels_last=uses_channels_last(cfg, device))

    def batches(sampler, epoch: int):
        sampler.set_epoch(epoch)
        generator = torch.Generator(device).manual_seed(epoch_seed(cfg.train.seed, epoch) + rank)
        for images, pids in decoded(sampler):
            images = images.to(device, non_blocking=True)
            yield augment(images, generator), pids.to(device, non_blocking=True)

    return batches


def check_train_images(
    records, *, progress: bool = True, check_command: str = "python -m canlib check-data"
) -> None:
    """Decode every training image once before the first step; refuse the run if any fails.

    Otherwise a bad image surfaces only when a batch first draws it (hours in, or never in a
    short run that then exits 0); refusing, not skipping, keeps the training set what the config
    says. A full decode (:func:`canlib.datasets.check_images`) catches truncations that a header
    check misses. It costs one decoding pass (7.0 s for the 12,801 images of the Market-sized
    synthetic set on 2 cores), so a pass is remembered by a stamp under
    ``$CANLIB_CACHE/checked-images`` keyed by every path, size and mtime (0.14 s to re-check).

    Args:
        records: the training records.
        progress: show a tqdm bar while decoding.
        check_command: the ``check-data`` command line for this dataset, for the message.

    Raises:
        DatasetError: some training image cannot be decoded.
    """
    paths = sorted({str(r[0]) for r in records})
    listing = []
    for path in paths:
        try:
            info = os.stat(path)
            listing.append([path, info.st_size, info.st_mtime_ns])
        except OSError:
            listing.append([path, -1, -1])  # check_images names it as missing
    key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:24]
    stamp = default_cache_dir() / "checked-images" / f"{key}.ok"
    if stamp.exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.DatasetWarning)
        _, bad = datasets.check_images(records, remove_bad=True, progress=progress)
    if bad:
        raise DatasetError(
            f"{len(bad)} of {len(paths)} training images cannot be decoded: "
            f"{datasets.list_bad(bad)}; "
            f"training stopped before its first step: delete or replace them "
            f"(`{check_command}` lists the unreadable images of every split)"
        )
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(f"{len(paths)} training images decoded\n")
    except OSError as error:  # a read-only cache only costs the check again next time
        log.warning("could not write %s (%s); the images will be checked again", stamp, error)


def _check_data_command(cfg: ExperimentConfig) -> str:
    d = cfg.data
    root = f" --data-root {d.data_root}" if d.data_root else ""
    return f"python -m canlib check-data --dataset {d.dataset}{root}"


def _image_cache_path(records, height: int, width: int) -> Path:
    """Where the decoded-image cache of ``records`` lives (keyed by paths, labels and size)."""
    key = hashlib.sha256(
        json.dumps([[str(r[0]), int(r[1]), int(r[2])] for r in records] + [height, width]).encode()
    ).hexdigest()[:16]
    root = default_cache_dir()
    return root / "image-cache" / f"{key}-{height}x{width}.pt"


def _float_outputs(outputs: Any) -> Any:
    """Losses are computed in fp32 even when the forward pass ran under bf16 autocast."""
    if isinstance(outputs, dict):
        return {k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}
    return outputs


def _check_finite(losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    # One host sync per step for all parts; the per-part loop only runs to name the culprit.
    if bool(torch.isfinite(torch.stack([v.detach().float() for v in losses.values()])).all()):
        return
    for name, value in sorted(losses.items(), key=lambda item: item[0] == "total"):
        if not torch.isfinite(value).all():
            raise NonFiniteError(
                f"the {name} loss became {float(value.detach())} at epoch {epoch + 1}, "
                f"step {step + 1}; "
                "training stopped and the last good checkpoint was left as it was"
            )


def _step_centers(optimizer: torch.optim.Optimizer, weight: float) -> None:
    """Update the centres with their own SGD, undoing the loss weight (as BoT does).

    The centre loss enters the total as ``weight * L_C``; dividing the centres' gradient by
    ``weight`` makes their learning rate independent of it, so lambda only scales how hard
    the features are pulled, not how fast the centres move.
    """
    for p in optimizer.param_groups[0]["params"]:
        if p.grad is None:
            continue
        if dist.is_initialized():
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
        if weight > 0:
            p.grad /= weight
    optimizer.step()


def memory_usage(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory on a GPU), in MiB."""
    usage = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        usage["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return usage


# ----------------------------------------------------------------------------- run folder


def _prepare_run_dir(run: _Run) -> None:
    run_dir = run.run_dir
    if ckpt.list_checkpoints(run_dir) or (run_dir / "metrics.jsonl").exists():
        raise ConfigError(
            f"run folder {run_dir} already holds a run; pass resume=True (--resume) to continue "
            "it or choose another folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(run.cfg.to_dict(), indent=2))


def _append_log(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(row, default=_numpy_to_python) + "\n")


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (train rows and eval rows)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _numpy_to_python(value: Any) -> Any:
    """``json.dumps`` fallback: numpy arrays and scalars as Python lists and numbers."""
    if isinstance(value, (np.ndarray, np.floating, np.integer)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _save(run: _Run, parts: TrainingParts, epoch: int) -> None:
    state = {
        "format": "canlib-checkpoint-v1",
        "config": json.dumps(run.cfg.to_dict()),
        "config_hash": run.cfg.config_hash(),
        "epoch": epoch,
        "step_in_epoch": 0,
        "model": parts.model.state_dict(),
        "criterion": parts.criterion.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "center_optimizer": parts.center_optimizer.state_dict() if parts.center_optimizer else {},
        "scheduler": {"epoch": epoch, "lr_factor": lr_factor(epoch, run.cfg)},
        "rng": _rng_state(),
    }
    ckpt.save_checkpoint(state, run.run_dir, epoch)


def _restore(run: _Run, parts: TrainingParts) -> int:
    path, state = ckpt.load_latest(run.run_dir, map_location="cpu")
    if state.get("config_hash") != run.cfg.config_hash():
        raise CheckpointError(
            f"checkpoint {path} was written by a different config (hash "
            f"{state.get('config_hash')}, this run {run.cfg.config_hash()}); resume it with the "
            "config in its config.json, or start a new run folder"
        )
    parts.model.load_state_dict(state["model"])
    parts.criterion.load_state_dict(state["criterion"])
    parts.optimizer.load_state_dict(state["optimizer"])
    match_state_layout(parts.optimizer)
    if parts.center_optimizer is not None and state["center_optimizer"]:
        parts.center_optimizer.load_state_dict(state["center_optimizer"])
    _set_rng_state(state["rng"])
    _truncate_log(run.run_dir, state["epoch"])
    log.info("resumed %s from %s (epoch %d)", run.run_dir, path.name, state["epoch"])
    return int(state["epoch"])


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter-shaped optimiser state the memory layout of its parameter.

    ``load_state_dict`` keeps the saved strides: Adam moments saved by a CPU run (NCHW) and
    loaded for a channels-last CUDA run would make fused Adam refuse the first step, since
    it needs parameters, gradients and moments in one layout.
    """
    for param, param_state in optimizer.state.items():
        for key, value in param_state.items():
            if (
                torch.is_tensor(value)
                and value.shape == param.shape
                and value.stride() != param.stride()
            ):
                param_state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _truncate_log(run_dir: Path, epoch: int) -> None:
    """Drop log rows of epochs after the checkpoint, which the resumed run will redo."""
    rows = [r for r in read_log(run_dir) if r.get("epoch", 0) <= epoch]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": json.dumps(random.getstate()),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per device visible when saved; a resume may see fewer (or more) GPUs.
        for index, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def extract_features(
    model: nn.Module,
    records: Sequence[tuple[str, int, int]],
    cfg: ExperimentConfig,
    *,
    device: torch.device | str | None = None,
    flip: bool | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embed ``records`` with ``model`` in eval mode.

    Args:
        model: a model whose eval-mode forward returns (B, D) L2-normalised embeddings.
        records: ``(path, pid, camid)`` tuples.
        cfg: supplies the input size, the batch size and the flip default.
        device: where to run (default: the device of the model's first parameter, else CPU).
        flip: average with the horizontally flipped image (default ``cfg.eval.flip``).

    Returns:
        ``(features (N, D) float32 on device, pids (N,), camids (N,))``; flipped features are
        averaged and re-normalised.
    """
    flip = cfg.eval.flip if flip is None else flip
    device = model_device(model) if device is None else device
    feats, pids, camids = [], [], []
    batches = test_batches(records, cfg, device)
    with eval_mode(model):
        for images, batch_pids, batch_camids in tqdm(
            batches, desc="features", leave=False, disable=not progress
        ):
            out = model(images).float()
            if flip:
                out = nn.functional.normalize(out + model(images.flip(-1)).float(), dim=1)
            feats.append(out)
            pids.append(np.asarray(batch_pids))
            camids.append(np.asarray(batch_camids))
    features = torch.cat(feats)
    bad = (~torch.isfinite(features).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteError(
            f"the model produced NaN or infinite features for {len(bad)} image(s), first "
            f"{records[bad[0]][0]} (record {bad[0]}); the weights may have diverged"
        )
    return features, np.concatenate(pids), np.concatenate(camids)


def test_batches(
    records: Sequence[tuple[str, int, int]], cfg: ExperimentConfig, device: torch.device | str
) -> Iterator[tuple[torch.Tensor, Any, Any]]:
    """``(normalised images on device, pids, camids)`` batches of ``records``, in order.

    With ``eval.cache_images`` the images come from a decoded-once ``uint8`` cache at the
    input size (built on first use, like the training cache); else a DataLoader decodes and
    resizes every file. The two differ by the cache's rounding to ``uint8``: at most half a
    grey level.
    """
    transform = build_test_transform(transform_config(cfg))
    if not cfg.eval.cache_images:
        loader = build_test_loader(
            list(records),
            transform,
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.data.num_workers,
        )
        for images, pids, camids, _ in loader:
            yield images.to(device), pids, camids
        return
    height, width = cfg.data.height, cfg.data.width
    cache = ImageCache.load_or_build(
        _image_cache_path(records, height, width), records, height, width, progress=False
    )
    for start in range(0, len(cache), cfg.eval.batch_size):
        end = start + cfg.eval.batch_size
        images = cache.images[start:end].to(device)
        yield transform(images), cache.pids[start:end].numpy(), cache.camids[start:end].numpy()


def evaluate_model(
    model: nn.Module,
    data,
    cfg: ExperimentConfig,
    *,
    device: torch.device | str | None = None,
    rerank: bool | None = None,
    return_raw: bool = False,
) -> dict[str, Any]:
    """Extract query and gallery features and score them under the dataset's protocol.

    ``device`` defaults to the model's own (see :func:`extract_features`).

    Returns metrics in percent: ``rank1``, ``rank3``, ``rank5``, ``rank10``, ``mAP``,
    ``mINP`` and ``num_valid``; with ``return_raw`` also ``cmc``, ``distmat`` and the
    query/gallery ``q_pids``, ``g_pids``, ``q_camids``, ``g_camids``.
    """
    rerank = cfg.eval.rerank if rerank is None else rerank
    qf, q_pids, q_camids = extract_features(model, data.query, cfg, device=device)
    gf, g_pids, g_camids = extract_features(model, data.gallery, cfg, device=device)
    distmat = pairwise_distance(qf, gf, metric=cfg.eval.metric)
    if rerank:
        distmat = re_rank(
            distmat,
            pairwise_distance(qf, qf, metric=cfg.eval.metric),
            pairwise_distance(gf, gf, metric=cfg.eval.metric),
        )
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=cfg.eval.max_rank)
    metrics = {**summarize(result), "num_valid": int(result["num_valid"])}
    if return_raw:
        metrics.update(
            cmc=np.asarray(result["cmc"]),
            distmat=distmat,
            q_pids=q_pids,
            g_pids=g_pids,
            q_camids=q_camids,
            g_camids=g_camids,
        )
    return metrics


def load_trained_model(
    path: str | Path, device: str | torch.device = "cpu", eval_overrides: dict | None = None
):
    """Rebuild the model of a checkpoint written by :func:`train` and load its weights.

    Args:
        path: the checkpoint.
        device: where the model goes.
        eval_overrides: ``{"eval.features": "pre_bn"}`` and the like: score the same weights
            under other test-time settings (only ``eval.*`` fields; the weights are unchanged).

    Returns ``(model, config)``; the model is in eval mode on ``device``.
    """
    bad = [key for key in (eval_overrides or {}) if not str(key).startswith("eval.")]
    if bad:
        raise ConfigError(f"eval_overrides may only set eval.* fields (got {bad})")
    state = ckpt.load_checkpoint(Path(path), map_location="cpu")
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a canlib training checkpoint (no config/model)")
    cfg = ExperimentConfig.from_dict(json.loads(state["config"]))
    if eval_overrides:
        cfg = cfg.with_overrides(eval_overrides).validate()
    num_classes = _num_classes_from_state(state["model"])
    model = build_model_from_config(cfg.with_overrides({"model.pretrained": False}), num_classes)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def _num_classes_from_state(state: dict[str, torch.Tensor]) -> int:
    """The classifier size C of a model state (``classifier.weight`` is (F, C, D))."""
    weight = state.get("classifier.weight")
    if weight is None or weight.ndim != 3:
        raise CheckpointError(
            "could not find a (features, classes, dim) classifier.weight in the checkpoint's "
            "model state"
        )
    return int(weight.shape[1])
