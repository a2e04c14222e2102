"""The paper's experiments as data: profiles, and one named config per table row.

A *profile* scales the whole study: ``paper`` is section 4.6's recipe on a real dataset
(GPU hours), ``synthetic`` is a from-scratch miniature on the built-in dataset (minutes
on 2 CPU cores), ``smoke`` only proves the plumbing (seconds). A table row is a small set
of overrides applied on top of a profile, so the same row means the same ablation under
every profile.

The paper's claims are data too: each :class:`Claim` compares two table rows (or four, for a
difference of differences), with the paper's direction and its effect in the paper's own
numbers; :func:`canlib.repro.stats.claims_table` judges them over the seeds of each row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from canlib.config import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    describe_sources,
)
from canlib.errors import ConfigError
from canlib.repro import paper


def _paper() -> ExperimentConfig:
    # Meant for a GPU machine: 8 decoding workers (fast-reid's default) keep test-set feature
    # extraction and a DataLoader pipeline fed; they do not change the result.
    return ExperimentConfig(name="can", data=DataConfig(dataset="market1501", num_workers=8))


def _synthetic() -> ExperimentConfig:
    # Sized from measurement (benchmarks/NOTES-synthetic-budget.md) so that 15 rows x 3 seeds
    # fit an hour on 2 CPU cores; PROFILE_REASONS["synthetic"] gives each field's reason.
    return ExperimentConfig(
        name="can",
        data=DataConfig(
            dataset="synthetic",
            height=144,
            width=48,
            p=16,
            k=4,
            pad=4,
            num_workers=0,
            pipeline="gpu",
        ),
        model=ModelConfig(backbone="resnet18-quarter", pretrained="synthetic-trunk"),
        loss=LossConfig(),
        train=TrainConfig(
            epochs=3,
            lr=1e-3,
            milestones=(2,),
            weight_decay=5e-4,
            eval_every=3,
            checkpoint_every=1,
            threads=2,
            seeds=3,
        ),
        eval=EvalConfig(batch_size=256, cache_images=True),
    )


def _smoke() -> ExperimentConfig:
    return ExperimentConfig(
        name="can",
        data=DataConfig(
            # 144 rows -> 9-row maps: the smallest input on which every Table 2 pattern exists.
            dataset="synthetic",
            synthetic_size="smoke",
            height=144,
            width=48,
            p=4,
            k=4,
            pad=4,
            num_workers=0,
        ),
        model=ModelConfig(backbone="resnet18-quarter", pretrained=False, embed_dim=32),
        loss=LossConfig(),
        train=TrainConfig(
            epochs=2,
            lr=1e-3,
            milestones=(),
            weight_decay=5e-4,
            steps_per_epoch=2,
            eval_every=1,
            checkpoint_every=1,
            threads=1,
            amp=False,
        ),
        eval=EvalConfig(batch_size=64, max_rank=10),
    )


PROFILES = {"smoke": _smoke, "synthetic": _synthetic, "paper": _paper}

# Why each profile departs from a field's default: describe_sources shows these next to the
# changed values (a changed paper value reads "deviation (overridden)" with this reason).
_MINIATURE = "a from-scratch miniature for 2 CPU cores (REFERENCES.md, synthetic prototype)"
_SMOKE = "proves the plumbing in seconds; its numbers mean nothing"
PROFILE_REASONS: dict[str, dict[str, str]] = {
    "paper": {
        "data.dataset": "ours: the paper's first benchmark (§4.1); --dataset picks another",
        "data.num_workers": "ours: 8 decoding workers (fast-reid's default) for a GPU machine",
    },
    "synthetic": {
        "data.height": f"144x48 gives 9-row layer-4 maps, the fewest for every Table 2 pattern, "
        f"at the paper's 3:1 aspect; {_MINIATURE}",
        "data.width": f"144x48 keeps the paper's 3:1 aspect on 128x64 crops; {_MINIATURE}",
        "data.p": f"P x K = 16 x 4: P = 8 (the paper's) learnt no faster per epoch and ran 20% "
        f"slower on 2 cores; {_MINIATURE}",
        "data.pad": "ours: padding scaled to the smaller input",
        "data.num_workers": "ours: no decoding workers: the training set is decoded once",
        "data.pipeline": "ours: the decoded-once tensor cache with batched augmentation (the "
        "CUDA path, which runs on CPU tensors too): 9,000 small crops take 187 MB and no run "
        "decodes a JPEG again",
        "model.backbone": f"a quarter-width ResNet-18, 2.6x the training speed of the half "
        f"width; {_MINIATURE}",
        "model.pretrained": "no ImageNet weights exist for a quarter-width ResNet-18 (nor can "
        "any be downloaded here): every row starts from the trunk canlib pretrains once on "
        "disjoint synthetic identities (canlib.trunk; recipe and cost in the manifest)",
        "train.epochs": "3 identity epochs of 750 ids = 138 fine-tuning steps from the trunk "
        "(CAN, seed 0: 92.6 rank-1 / 87.8 mAP; a 4th epoch at the decayed lr gave 88.3 mAP, "
        "and notebook 02 trains the run on to twice its length to show where it stands); "
        "4 epochs would put notebook 08 over its 20 minutes",
        "train.lr": f"lr 1e-3: the short fine-tuning learns faster than at 3e-4; {_MINIATURE}",
        "train.milestones": "one decay, after 2 of the 3 epochs (the paper first decays at 5/12 "
        "of its run, then twice more; CAN seed 0 with 4 epochs: a decay after 3 gave 86.7 mAP "
        "at epoch 3, after 2 gave 87.8, and 88.3 at epoch 4, where the curve flattens)",
        "train.weight_decay": "weight decay 5e-4 (BoT / MGN-pytorch), as in the prototype; "
        "notebook 08 measures 0 against it",
        "train.eval_every": "ours: evaluate once, at the end (notebook 02 evaluates its run "
        "every epoch to draw the curve)",
        "train.checkpoint_every": "ours: checkpoint every epoch (46 steps)",
        "train.threads": "ours: 2 CPU threads",
        "train.seeds": "3 seeds per row (3x the training time): a claim needs several seeds "
        "and a 95% interval (DESIGN.md); with 3 the t-interval's factor is 4.30, with 2 it "
        "would be 12.71",
        "eval.batch_size": "ours: 256 small test images per batch",
        "eval.cache_images": "ours: the 3,850 test images are decoded once, not at each of the "
        "study's ~100 evaluations (measured here: 6.7 s per evaluation became 4.0 s)",
    },
    "smoke": {
        "data.synthetic_size": f"ours: the smallest synthetic set; {_SMOKE}",
        "data.height": f"144 rows give 9-row maps, the least for every Table 2 pattern; {_SMOKE}",
        "data.width": f"144x48 keeps the paper's 3:1 aspect; {_SMOKE}",
        "data.p": f"P x K = 4 x 4; {_SMOKE}",
        "data.pad": "ours: padding scaled to the smaller input",
        "data.num_workers": "ours: decoding in the main process",
        "model.backbone": f"a quarter-width ResNet-18; {_SMOKE}",
        "model.pretrained": "no ImageNet weights exist for a quarter-width ResNet-18",
        "model.embed_dim": f"32-dimensional features; {_SMOKE}",
        "train.epochs": f"2 epochs of 2 steps; {_SMOKE}",
        "train.lr": f"lr 1e-3; {_SMOKE}",
        "train.milestones": f"no decay in 2 epochs; {_SMOKE}",
        "train.weight_decay": "weight decay 5e-4 (BoT / MGN-pytorch), as the synthetic profile",
        "train.steps_per_epoch": f"ours: 2 steps per epoch; {_SMOKE}",
        "train.eval_every": "ours: evaluate every epoch",
        "train.checkpoint_every": "ours: checkpoint every epoch",
        "train.threads": "ours: 1 CPU thread",
        "train.amp": "ours: fp32 everywhere, so that smoke numbers travel between machines "
        "with and without AMX",
        "eval.batch_size": "ours: 64 test images per batch",
        "eval.max_rank": "ours: CMC up to rank 10, the most the smoke gallery supports",
    },
}


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
        "model.parts": (3, 5, 7, 9),
        "model.collaborative": False,
        **_PARTITION_LOSS,
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

# The MGN baseline is trained with MGN's own losses (Wang et al. 2018; MGN-pytorch option.py
# and loss/__init__.py): softmax on all 8 features, batch-hard triplet on the 3 global ones with
# margin 1.2, no center loss. CAN's recipe (center loss on every feature, margin 0.3) is not
# what MGN was published with.
_MGN = {"model.name": "mgn", "loss.mode": "mgn", "loss.margin": 1.2}

# Figure 4 compares the layer-4 maps of these three models; Tables 5-6 compare CAN and MGN.
FIGURE4 = {
    "part-1,3,5,7 w/o CA": TABLE2["part-1,3,5,7"],
    "MGN": _MGN,
    "CAN": {},
}

SOTA = {"CAN": {}, "MGN": _MGN, "global only": {"model.name": "global"}}

TABLES = {"table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "figure4": FIGURE4, "sota": SOTA}

# Which of the paper's tables (canlib.repro.paper) reports the rows of each of ours: the SOTA rows
# are Table 5's Market-1501 columns; Figure 4 reports no numbers.
PAPER_TABLE_OF = {"table2": "table2", "table3": "table3", "table4": "table4", "sota": "table5"}

RowKey = tuple[str, str]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as a comparison of table rows, judged over seeds.

    The effect is ``a - b`` in ``metric`` (percent; mAP points by default), or, with ``c``
    and ``d``, the interaction ``(a - b) - (c - d)``. ``direction`` is the paper's sign of
    the effect: ``"+"`` when it says a beats b.

    Attributes:
        claim: the claim as a readable sentence.
        table: the paper's table or figure, e.g. ``"Table 2"``.
        a, b, c, d: ``(table_key, row)`` of :data:`TABLES`.
        direction: ``"+"`` or ``"-"``.
        metric: the per-seed metric compared: ``mAP``, ``rank1``, or a quantity measured by
            the notebooks (``body_share``); claims whose metric is absent are not measured.
        note: where the paper's number comes from, or why there is none.
    """

    claim: str
    table: str
    a: RowKey
    b: RowKey
    direction: str
    c: RowKey | None = None
    d: RowKey | None = None
    metric: str = "mAP"
    note: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("+", "-"):
            raise ConfigError(f"claim direction must be '+' or '-' (got {self.direction!r})")
        if (self.c is None) != (self.d is None):
            raise ConfigError(f"claim {self.claim!r} needs both c and d, or neither")
        for table, row in self.rows:
            if row not in TABLES.get(table, {}):
                raise ConfigError(f"claim {self.claim!r}: no row {row!r} in table {table!r}")

    @property
    def rows(self) -> tuple[RowKey, ...]:
        """The compared rows in order: ``(a, b)`` or ``(a, b, c, d)``."""
        return (self.a, self.b) if self.c is None else (self.a, self.b, self.c, self.d)

    @property
    def paper_effect(self) -> float | None:
        """The effect in the paper's numbers (one decimal, as it prints them); None when the
        paper reports no number for one of the rows or for this metric."""
        values = [paper_value(table, row, self.metric) for table, row in self.rows]
        if any(v is None for v in values):
            return None
        signs = (1, -1) if len(values) == 2 else (1, -1, -1, 1)
        return round(sum(s * v for s, v in zip(signs, values)), 1)


def paper_value(table: str, row: str, metric: str = "mAP") -> float | None:
    """The paper's number for one of our rows (percent), or None where it reports none."""
    if table not in PAPER_TABLE_OF:
        return None
    columns, rows = paper.TABLES[PAPER_TABLE_OF[table]]
    if row not in rows or metric not in columns:
        return None
    return rows[row][columns.index(metric)]


_T2, _T3, _T4 = "table2", "table3", "table4"
_CA_1357 = ((_T3, "part-1,3,5,7 with CA"), (_T3, "part-1,3,5,7 w/o CA"))
_BODY_SHARE = (
    "share of layer-4 activation mass inside the person mask, in percent; Figure 4 shows it "
    "qualitatively"
)

# The paper's claims that the tables test. Effects are a - b (or (a - b) - (c - d)) in mAP
# points unless ``metric`` says otherwise; canlib.repro.stats.claims_table judges them over seeds.
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "Without CA, the finest partition (part-1,3,5,7,9) is worse than part-1,2,3",
        "Table 2",
        (_T2, "part-1,3,5,7,9"),
        (_T2, "part-1,2,3"),
        "-",
    ),
    Claim("CA improves part-1,3,5,7", "Table 3", *_CA_1357, "+"),
    Claim(
        "CA helps part-1,3,5,7 more than part-1,2,3",
        "Table 3",
        *_CA_1357,
        "+",
        c=(_T3, "part-1,2,3 with CA"),
        d=(_T2, "part-1,2,3"),
        note="difference of differences: (part-1,3,5,7 with CA - w/o CA) - (part-1,2,3 with "
        "CA, Table 3 - part-1,2,3 without, Table 2)",
    ),
    Claim(
        "Triplet loss adds to cross-entropy",
        "Table 4",
        (_T4, "CAN + CE + Triplet"),
        (_T4, "CAN + CE"),
        "+",
    ),
    Claim(
        "Center loss adds to cross-entropy + triplet",
        "Table 4",
        (_T4, "CAN + CE + Triplet + Center"),
        (_T4, "CAN + CE + Triplet"),
        "+",
    ),
    Claim(
        "The clustering losses on global and local features beat them on global ones only",
        "Table 4",
        (_T4, "global & local to L_c"),
        (_T4, "CAN + CE + Triplet + Center"),
        "+",
    ),
    Claim(
        "CAN beats MGN",
        "Table 5",
        ("sota", "CAN"),
        ("sota", "MGN"),
        "+",
        note="Table 5, Market-1501: CAN 90.6 - MGN 86.9; our CAN row is Table 4's best "
        "recipe, which Table 4 reports at 89.6",
    ),
    Claim(
        "CAN beats the global-only baseline",
        "Table 5",
        ("sota", "CAN"),
        ("sota", "global only"),
        "+",
        note="the paper argues it (§1) but reports no global-only model of its own; its closest "
        "number, CNN-Base [3] (79.8 mAP, Table 5), is another paper's recipe, so no paper effect",
    ),
    Claim(
        "CAN's layer-4 activation covers more of the body than MGN's",
        "Figure 4",
        ("figure4", "CAN"),
        ("figure4", "MGN"),
        "+",
        metric="body_share",
        note=_BODY_SHARE,
    ),
    Claim(
        "CAN's layer-4 activation covers more of the body than the model without CA",
        "Figure 4",
        ("figure4", "CAN"),
        ("figure4", "part-1,3,5,7 w/o CA"),
        "+",
        metric="body_share",
        note=_BODY_SHARE,
    ),
)


@dataclass(frozen=True)
class OpenChoice:
    """A choice the paper leaves open or contradicts, and the alternative it allows.

    The effect is the alternative minus our default, in mAP points, paired by seed on the
    same table row. An evaluation-only choice scores the default's trained checkpoints again
    under the alternative test-time settings: nothing is retrained.

    Attributes:
        choice: a short name.
        where: where the paper is ambiguous, quoted or by section.
        row: the ``(table_key, row)`` whose config both variants start from.
        default: our default, in words; ``default_overrides`` make it explicit.
        alternative: the alternative, in words; ``alternative_overrides`` set it.
        eval_only: True when only ``eval.*`` fields change.
    """

    choice: str
    where: str
    row: RowKey
    default: str
    alternative: str
    alternative_overrides: tuple[tuple[str, Any], ...]
    default_overrides: tuple[tuple[str, Any], ...] = ()
    eval_only: bool = False

    def __post_init__(self) -> None:
        if self.row[1] not in TABLES.get(self.row[0], {}):
            raise ConfigError(f"open choice {self.choice!r}: no row {self.row!r} in TABLES")
        if self.eval_only and any(not k.startswith("eval.") for k, _ in self.alternative_overrides):
            raise ConfigError(
                f"open choice {self.choice!r} is evaluation-only but sets "
                f"{[k for k, _ in self.alternative_overrides]}"
            )


_CAN = ("table4", "global & local to L_c")
_EQ1 = "Eq. (1) windows (overlapping for 5, 7 and 9 stripes)"
_ADAPTIVE = "torch's adaptive pooling bins"
_POOLING_WHERE = (
    "§3.2: 'Adaptive Pooling is introduced', yet Eq. (1) gives explicit windows "
    "(stride floor(IS/OS), kernel IS-(OS-1)*stride), which differ from torch's bins"
)

OPEN_CHOICES: tuple[OpenChoice, ...] = (
    OpenChoice(
        "Stripe pooling, part-1,3,5,7",
        _POOLING_WHERE,
        ("table3", "part-1,3,5,7 with CA"),
        _ADAPTIVE,
        _EQ1,
        (("model.pooling", "eq1"),),
    ),
    OpenChoice(
        "Stripe pooling, part-1,3,5,7,9",
        _POOLING_WHERE,
        ("table3", "part-1,3,5,7,9 with CA"),
        _ADAPTIVE,
        _EQ1,
        (("model.pooling", "eq1"),),
    ),
    OpenChoice(
        "Epoch definition",
        "§4.6: 'The whole training process stops at epoch 600'; what an epoch is, is not said",
        _CAN,
        "identity epochs (each identity once with K images, MGN-pytorch)",
        "image epochs (every training image once: about 4x the steps, torchreid / fast-reid)",
        (("data.epoch", "images"),),
    ),
    OpenChoice(
        "Adam's weight decay",
        "§4.6: 'Adam optimizer is utilized with default parameters' (torch's default: no decay)",
        _CAN,
        "5e-4 (BoT / MGN-pytorch)",
        "0, the paper's 'default parameters'",
        (("train.weight_decay", 0.0),),
        (("train.weight_decay", 5e-4),),
    ),
    OpenChoice(
        "BN after the shared 1x1 embedding",
        "§3.2 Eq. (3)-(4): a 1x1 convolution embeds every feature; no normalisation is named",
        _CAN,
        "with a BN (BNNeck: classifier on BN features, clustering losses before it)",
        "without it (every loss on the conv's output)",
        (("model.embed_bn", False),),
    ),
    OpenChoice(
        "Cosine-classifier scale",
        "§4.6: 'We also normalize the features and weights in FC Layer'; no scale is given",
        _CAN,
        "16",
        "30",
        (("model.scale", 30.0),),
        (("model.scale", 16.0),),
    ),
    OpenChoice(
        "Triplet distance",
        "§3.3 Eq. (7): squared distances summed over anchors, margin not given",
        _CAN,
        "plain distances, mean over anchors (BoT, MGN-pytorch)",
        "squared distances, sum over anchors (Eq. 7 as written)",
        (("loss.triplet_distance", "squared-sum"),),
    ),
    OpenChoice(
        "Test embedding",
        "§4.6: features are normalised and compared by cosine distance; which features, unsaid",
        _CAN,
        "BN features",
        "pre-BN features",
        (("eval.features", "pre_bn"),),
        eval_only=True,
    ),
    OpenChoice(
        "Flip averaging at test",
        "not mentioned; common in public code (fast-reid's flip test)",
        _CAN,
        "off",
        "on (mean of the image's and its mirror's embeddings)",
        (("eval.flip", True),),
        eval_only=True,
    ),
    OpenChoice(
        "Re-ranking",
        "§4.7: 'Our experimental results are based on model accuracy without re-ranking'",
        _CAN,
        "off",
        "k-reciprocal re-ranking (Zhong et al. 2017)",
        (("eval.rerank", True),),
        eval_only=True,
    ),
)


def claim_rows(claims: tuple[Claim, ...] = CLAIMS) -> list[RowKey]:
    """Every ``(table, row)`` the claims compare, once each, in first-use order."""
    return list(dict.fromkeys(key for claim in claims for key in claim.rows))


def experiment(
    table: str, row: str, profile_name: str, overrides: dict[str, Any] | list[str] | None = None
) -> ExperimentConfig:
    """The config of one table row under a profile; user ``overrides`` are applied last."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    rows = TABLES[table]
    if row not in rows:
        raise ConfigError(f"unknown row {row!r} of {table}; rows are: {', '.join(rows)}")
    if profile_name not in PROFILES:
        raise ConfigError(f"unknown profile {profile_name!r}; choose one of {', '.join(PROFILES)}")
    # Validated once, complete: the paper profile needs the user's data_root before it is valid.
    cfg = PROFILES[profile_name]().with_overrides(rows[row]).with_overrides(overrides)
    return replace(cfg, name=f"{table}-{_slug(row)}").validate()


# Why a table row changes a field, when it is not the paper's own ablation setting.
_ROW_REASONS = {
    "loss.mode=mgn": "ours: MGN's own losses (Wang et al. 2018, MGN-pytorch), not CAN's",
    "loss.margin=1.2": "ours: MGN-pytorch's triplet margin (option.py --margin 1.2)",
    "model.name=global": "ours: the global-feature-only baseline the paper argues against (§1); "
    "it reports no number for it",
}


def sources(
    cfg: ExperimentConfig, profile_name: str, table: str | None = None, row: str | None = None
) -> list[dict[str, str]]:
    """:func:`canlib.config.describe_sources` of ``cfg`` with the reasons of its profile and row.

    A table row's settings are the paper's own experiment (``paper (overridden)``, naming the
    table and row), except the MGN baseline's losses, which are MGN's own recipe.
    """
    reasons = dict(PROFILE_REASONS.get(profile_name, {}))
    if table is not None and row is not None:
        for key, value in TABLES[table][row].items():
            reasons[key] = _ROW_REASONS.get(f"{key}={value}", f"paper: {table} row {row!r}")
    return describe_sources(cfg, reasons)


def _slug(text: str) -> str:
    """``text`` lower-cased, each run of other characters than letters and digits one dash."""
    return re.sub(r"[\W_]+", "-", text.lower()).strip("-")
