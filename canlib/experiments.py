"""The paper's experiments as data: profiles, and one named config per table row.

A *profile* scales the whole study: ``paper`` is section 4.6's recipe on a real dataset
(GPU hours), ``synthetic`` is a from-scratch miniature on the built-in dataset (minutes
on 2 CPU cores), ``smoke`` only proves the plumbing (seconds). A table row is a small set
of overrides applied on top of a profile, so the same row means the same ablation under
every profile.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from canlib.config import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from canlib.errors import ConfigError


def _paper() -> ExperimentConfig:
    # Meant for a GPU machine: 8 decoding workers (fast-reid's default) keep test-set feature
    # extraction and a DataLoader pipeline fed; they do not change the result.
    return ExperimentConfig(name="can", data=DataConfig(dataset="market1501", num_workers=8))


def _synthetic() -> ExperimentConfig:
    # REFERENCES.md, synthetic prototype: a half-width ResNet-18 with Adam lr 1e-3, P x K =
    # 16 x 4, learns the built-in data in a few hundred steps on 2 CPU cores. The 128x64 crops
    # are resized to 192x64 (the paper's 3:1 aspect, as 128x64 Market crops become 384x128),
    # giving 12-row layer-4 maps: enough rows for Table 2's 9 stripes.
    return ExperimentConfig(
        name="can",
        data=DataConfig(dataset="synthetic", height=192, width=64, p=16, k=4, pad=6, num_workers=0),
        model=ModelConfig(backbone="resnet18-half", pretrained=False),
        loss=LossConfig(),
        train=TrainConfig(
            epochs=20, lr=1e-3, milestones=(14, 18), eval_every=10, checkpoint_every=5, threads=2
        ),
        eval=EvalConfig(batch_size=256),
    )


def _smoke() -> ExperimentConfig:
    return ExperimentConfig(
        name="can",
        data=DataConfig(
            # 144 rows -> 9-row maps: the smallest input on which every Table 2 pattern exists.
            dataset="synthetic", synthetic_size="smoke", height=144, width=48, p=4, k=4, pad=4,
            num_workers=0,
        ),
        model=ModelConfig(backbone="resnet18-quarter", pretrained=False, embed_dim=32),
        loss=LossConfig(),
        train=TrainConfig(
            epochs=2, lr=1e-3, milestones=(), steps_per_epoch=2, eval_every=1, checkpoint_every=1,
            threads=1,
        ),
        eval=EvalConfig(batch_size=64, max_rank=10),
    )


PROFILES = {"smoke": _smoke, "synthetic": _synthetic, "paper": _paper}


def profile(name: str, overrides: dict[str, Any] | list[str] | None = None) -> ExperimentConfig:
    """The base config of profile ``name`` with ``overrides`` applied and validated."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]().with_overrides(overrides).validate()


# Tables 2 and 3 were trained with cross-entropy plus triplet loss on the global features:
# Table 3's "part-1,3,5,7 with CA" row equals Table 4's "CAN + CE + Triplet" row exactly.
_PARTITION_LOSS = {"loss.mode": "ce+triplet"}

TABLE2 = {
    "part-1,2,3": {"model.parts": (2, 3), "model.collaborative": False, **_PARTITION_LOSS},
    "part-1,2,3,4": {"model.parts": (2, 3, 4), "model.collaborative": False, **_PARTITION_LOSS},
    "part-1,3,5": {"model.parts": (3, 5), "model.collaborative": False, **_PARTITION_LOSS},
    "part-1,3,5,7": {"model.parts": (3, 5, 7), "model.collaborative": False, **_PARTITION_LOSS},
    "part-1,3,5,7,9": {
        "model.parts": (3, 5, 7, 9), "model.collaborative": False, **_PARTITION_LOSS
    },
}

TABLE3 = {
    "part-1,2,3 with CA": {"model.parts": (2, 3), **_PARTITION_LOSS},
    "part-1,2,3,4 with CA": {"model.parts": (2, 3, 4), **_PARTITION_LOSS},
    "part-1,3,5 with CA": {"model.parts": (3, 5), **_PARTITION_LOSS},
    "part-1,3,5,7 with CA": {"model.parts": (3, 5, 7), **_PARTITION_LOSS},
    "part-1,3,5,7,9 with CA": {"model.parts": (3, 5, 7, 9), **_PARTITION_LOSS},
    "part-1,3,5,7 w/o CA": TABLE2["part-1,3,5,7"],
}

TABLE4 = {
    "CAN + CE": {"loss.mode": "ce"},
    "CAN + CE + Triplet": {"loss.mode": "ce+triplet"},
    "CAN + CE + Triplet + Center": {"loss.mode": "ce+triplet+center"},
    "global & local to L_c": {"loss.mode": "global+local"},
}

# Figure 4 compares the layer-4 maps of these three models; Tables 5-6 compare CAN and MGN.
FIGURE4 = {
    "part-1,3,5,7 w/o CA": TABLE2["part-1,3,5,7"],
    "MGN": {"model.name": "mgn"},
    "CAN": {},
}

SOTA = {"CAN": {}, "MGN": {"model.name": "mgn"}, "global only": {"model.name": "global"}}

TABLES = {"table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "figure4": FIGURE4, "sota": SOTA}


def experiment(
    table: str, row: str, profile_name: str, overrides: dict[str, Any] | list[str] | None = None
) -> ExperimentConfig:
    """The config of one table row under a profile; user ``overrides`` are applied last."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    rows = TABLES[table]
    if row not in rows:
        raise ConfigError(f"unknown row {row!r} of {table}; rows are: {', '.join(rows)}")
    base = profile(profile_name)
    cfg = base.with_overrides(rows[row]).with_overrides(overrides)
    return replace(cfg, name=f"{table}-{_slug(row)}").validate()


def _slug(text: str) -> str:
    keep = [c.lower() if c.isalnum() else "-" for c in text]
    return "-".join(part for part in "".join(keep).split("-") if part)
