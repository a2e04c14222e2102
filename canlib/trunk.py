"""A pretrained trunk that canlib builds itself: the offline stand-in for ImageNet weights.

The paper fine-tunes an ImageNet-initialised ResNet-50 (§3.2); no ImageNet weights can be
downloaded here, and none exist for the miniature profiles' narrow ResNets. Instead,
``model.pretrained="synthetic-trunk"`` starts every row from a global-only model that canlib
trains once on a *second* synthetic data set (the next generator seed, disjoint identities): like
ImageNet pretraining it is generic (no part branches, no attention) and never sees a study's test
identity. It is cached under ``$CANLIB_CACHE/trunks/<recipe hash>/``, shared by every row, seed
and notebook with the same backbone and input size, with a ``recipe.json`` (:func:`describe`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from canlib import checkpoint as ckpt
from canlib.config import (
    SYNTHETIC_TRUNK,
    TRUNK_EPOCHS,
    TRUNK_MILESTONES,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from canlib.model import trunk_state_dict
from canlib.synthetic import default_cache_dir

log = logging.getLogger(__name__)


def uses_trunk(cfg: ExperimentConfig) -> bool:
    """True when ``cfg`` starts from canlib's synthetic trunk."""
    return cfg.model.pretrained == SYNTHETIC_TRUNK


def trunk_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config that pretrains the trunk used by ``cfg``.

    Only what the trunk's shape and input depend on is taken from ``cfg`` (backbone, input
    size, batch layout, device and numerics); the rest is the fixed recipe, so every row of
    a study, whatever its losses or ablation, shares one trunk. The data set is the
    synthetic one at the next generator seed: disjoint identities.
    """
    d, t = cfg.data, cfg.train
    synthetic = d.dataset == "synthetic"
    return ExperimentConfig(
        name="trunk",
        data=DataConfig(
            dataset="synthetic",
            synthetic_size=d.synthetic_size if synthetic else "default",
            synthetic_seed=d.synthetic_seed + 1 if synthetic else 1,
            height=d.height,
            width=d.width,
            p=d.p,
            k=d.k,
            pad=d.pad,
            num_workers=d.num_workers,
            pipeline=d.pipeline,
        ),
        model=ModelConfig(
            name="global",
            backbone=cfg.model.backbone,
            pretrained=False,
            embed_dim=cfg.model.embed_dim,
        ),
        loss=LossConfig(),
        eval=EvalConfig(
            batch_size=cfg.eval.batch_size,
            max_rank=cfg.eval.max_rank,
            cache_images=cfg.eval.cache_images,
        ),
        train=TrainConfig(
            epochs=TRUNK_EPOCHS,
            lr=1e-3,
            milestones=TRUNK_MILESTONES,
            weight_decay=5e-4,
            eval_every=TRUNK_EPOCHS,
            checkpoint_every=4,
            seed=0,
            device=t.device,
            amp=t.amp,
            threads=t.threads,
        ),
    ).validate()


def trunk_dir(cfg: ExperimentConfig) -> Path:
    """``$CANLIB_CACHE/trunks/<hash of the trunk's config>``."""
    return default_cache_dir() / "trunks" / trunk_config(cfg).config_hash()


def ensure_trunk(cfg: ExperimentConfig, *, progress: bool = True) -> Path:
    """The trunk file for ``cfg``: read from the cache, else pretrained now (resumably).

    Returns:
        The path of ``trunk.pth``, a torchvision-named state dict for ``model.pretrained``.
    """
    # Imported here: engine imports this module at its top (it builds models through
    # ensure_trunk), so a top-level import would be a cycle.
    from canlib.engine import load_trained_model, train

    folder = trunk_dir(cfg)
    path = folder / "trunk.pth"
    if path.exists():
        return path
    recipe = trunk_config(cfg)
    log.info(
        "pretraining the synthetic trunk once (%s epochs; cached in %s)",
        recipe.train.epochs,
        folder,
    )
    run_dir = folder / "run"
    result = train(recipe, run_dir, resume=run_dir.exists(), progress=progress)
    model, _ = load_trained_model(ckpt.list_checkpoints(run_dir)[-1])
    partial = path.with_suffix(".pth.partial")
    torch.save(trunk_state_dict(model), partial)
    (folder / "recipe.json").write_text(
        json.dumps(_recipe_record(recipe, result.metrics), indent=2)
    )
    partial.replace(path)  # last: a trunk.pth always has its recipe.json
    return path


def _recipe_record(recipe: ExperimentConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "what": "global-only model pretrained by canlib on a disjoint synthetic identity set; "
        "its conv1..layer4 initialise every row (stand-in for ImageNet weights)",
        "config_hash": recipe.config_hash(),
        "config": recipe.to_dict(),
        "own_test_metrics": {k: metrics.get(k) for k in ("rank1", "mAP", "mINP")},
        "wall_seconds": metrics.get("wall_seconds"),
        "images_per_s": metrics.get("images_per_s"),
    }


def describe(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The recipe record of ``cfg``'s trunk (None when ``cfg`` uses none, or it is not built).

    The wall time is that of the run that built it; a cached trunk costs nothing more.
    """
    if not uses_trunk(cfg):
        return None
    record = trunk_dir(cfg) / "recipe.json"
    return json.loads(record.read_text()) if record.exists() else None
