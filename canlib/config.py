"""Frozen dataclasses that describe one training run.

Every field records where its default comes from (:data:`SOURCE_KINDS`): ``paper: <section>``
when the CAN paper states it, ``ours: <reason>`` when the paper is silent and we chose, and
``deviation: <reason>`` when we knowingly differ from the paper; :func:`describe_sources` turns
this into the table the notebooks print. Fields are overridden with ``"section.field=value"``
strings (command line and papermill alike); a config hashes to name its run folder and
round-trips through a dict for checkpoints and manifests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from canlib.datasets import CUHK03_SUBSETS, DATASET_NAMES
from canlib.errors import ConfigError
from canlib.rules import (  # noqa: F401 (re-exported: a field's names)
    BACKBONE_ALIASES,
    BACKBONES,
    CENTER_MODES,
    DISTANCE_METRICS,
    EPOCH_KINDS,
    LOSS_MODES,
    STRIPE_METHODS,
    TEST_FEATURES,
    TRIPLET_DISTANCES,
    TRIPLET_MODES,
    check_backbone,
    check_loss_mode,
    check_model_name,
)
from canlib.rules import MODEL_NAMES as MODELS  # noqa: F401 (re-exported: a field's names)
from canlib.synthetic import SIZES


def paper(where: str, default: Any) -> Any:
    """A field whose default the paper states (``where``: section, table or equation)."""
    return field(default=default, metadata={"source": f"paper: {where}"})


def ours(why: str, default: Any) -> Any:
    """A field the paper leaves open; ``why`` says what we chose and after whom."""
    return field(default=default, metadata={"source": f"ours: {why}"})


_NO_PAPER_VALUE = object()


def deviation(why: str, default: Any, *, paper_value: Any = _NO_PAPER_VALUE) -> Any:
    """A field whose default knowingly differs from what the paper states.

    ``why`` says what the paper states, what we do instead and why. ``paper_value``, when the
    paper's choice is one of the field's values, lets :func:`describe_sources` show a config
    that sets it as the paper's.
    """
    metadata = {"source": f"deviation: {why}"}
    if paper_value is not _NO_PAPER_VALUE:
        metadata["paper_value"] = paper_value
    return field(default=default, metadata=metadata)


SOURCE_KINDS = ("paper", "ours", "deviation")

# ``model.pretrained`` may name the trunk canlib pretrains itself (canlib.trunk): the global
# model trained for TRUNK_EPOCHS on the next synthetic seed. The recipe is part of the hash
# of every run that starts from it, so changing it retrains those runs. Measured with the
# synthetic profile (CAN, seed 0, 2 cores): 36 epochs (150 s) gave the trunk 76.1 / 70.2 on its
# own test set and CAN 68.5 mAP after 4 fine-tuning epochs, its curve still climbing (41.5,
# 58.8, 60.4, 68.5); 72 epochs (271 s) 85.6 / 82.0 and CAN 81.1; 144 epochs (564 s) 91.9 /
# 89.2 and CAN 88.9 (82.9, 85.2, 86.7, 88.9). Like ImageNet weights, a trunk trained to near
# convergence is what lets every row converge in a few fine-tuning epochs.
SYNTHETIC_TRUNK = "synthetic-trunk"
TRUNK_EPOCHS = 144
TRUNK_MILESTONES = (96, 120)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how images are sampled into batches and how they are augmented."""

    dataset: str = ours(
        "which dataset a run uses (the paper reports four, §4.1); the built-in synthetic "
        "dataset runs anywhere offline",
        "synthetic",
    )
    data_root: str | None = ours("None: the synthetic cache; real datasets need a path", None)
    synthetic_size: str = ours("size preset of the built-in dataset", "default")
    synthetic_seed: int = ours(
        "generator seed of the built-in dataset; identities are drawn per seed, so another "
        "seed gives a disjoint identity set (used to pretrain a trunk)",
        0,
    )
    cuhk03_subset: str = paper("§4.7, all testing images, labeled and detected together", "both")
    height: int = paper("§4.6, 384x128 inputs", 384)
    width: int = paper("§4.6, 384x128 inputs", 128)
    p: int = paper("§4.6, 8 identities per batch", 8)
    k: int = paper("§4.6, 4 images per identity", 4)
    epoch: str = ours(
        "'identities': one pass over the train identities, the convention of MGN-pytorch, "
        "whose multi-branch design the paper cites as its inspiration (§2.3); the paper does "
        "not say which epoch it means ('images', the torchreid/fast-reid convention, is 4x "
        "more steps)",
        "identities",
    )
    flip_p: float = ours("random horizontal flip, BoT / torchreid", 0.5)
    pad: int = ours("pad 10 then random crop, BoT", 10)
    erasing_p: float = ours("random erasing p=0.5, BoT", 0.5)
    num_workers: int = ours("2 decoding workers suit a 2-core machine; raise on a GPU box", 2)
    pipeline: str = ours(
        "where decoded images come from: 'gpu', a cache decoded once at the model's input "
        "size on the device; 'cpu', DataLoader workers decoding every batch; 'auto', the first "
        "on CUDA, the second elsewhere. The batched augmentation and its draws are the same",
        "auto",
    )


@dataclass(frozen=True)
class ModelConfig:
    """The network: CAN (paper) or one of its ablations, MGN or the global-only baseline."""

    name: str = paper("§3.2, the CAN model", "can")
    backbone: str = paper("§3.2, ResNet-50", "resnet50")
    pretrained: bool | str = paper(
        "§3.2, ImageNet-initialised ResNet-50 (implied); a path loads a trunk file instead "
        "(torchvision ResNet names), and 'synthetic-trunk' the one canlib pretrains once on "
        "a disjoint synthetic identity set (canlib.trunk)",
        True,
    )
    parts: tuple[int, ...] = paper("§3.2 / Table 1, part_3, part_5, part_7", (3, 5, 7))
    collaborative: bool = paper("§3.2, collaborative attention on adjacent stripes", True)
    pooling: str = deviation(
        "eq. (1) gives each stripe's window explicitly ('eq1': overlapping windows for 5/7/9 "
        "stripes); we default to torch's adaptive pooling bins ('adaptive'), which the "
        "authors' code most likely called; they agree for 3 stripes on 24 rows",
        "adaptive",
        paper_value="eq1",
    )
    embed_dim: int = paper("§3.2 eq. 4, m = 256", 256)
    scale: float = ours("cosine-classifier scale, as in CosFace-style normalised softmax", 16.0)
    embed_bn: bool = ours(
        "a batch norm after the shared 1x1 embedding (BNNeck, BoT): the classifier sees the "
        "BN features, the clustering losses the pre-BN ones; §3.2 mentions no normalisation",
        True,
    )


@dataclass(frozen=True)
class LossConfig:
    """Which losses, on which features (Table 4), and their hyper-parameters."""

    mode: str = paper(
        "Table 4 best: triplet and center loss on global and local features", "global+local"
    )
    margin: float = ours(
        "batch-hard triplet margin 0.3 on plain Euclidean distances, BoT / fast-reid (eq. 7 "
        "gives no value; MGN-pytorch uses 1.2, which the MGN rows set)",
        0.3,
    )
    center_weight: float = paper("§4.6, lambda = 0.0005", 5e-4)
    center_lr: float = deviation(
        "the paper names only Adam (§4.6) and not how the centres are updated; they get "
        "their own SGD with lr 0.5, as in BoT",
        0.5,
    )
    label_smoothing: float = paper("§3.3 eq. (6), plain cross-entropy: no label smoothing", 0.0)
    triplet_distance: str = deviation(
        "eq. (7) sums squared distances over anchors ('squared-sum'); we use plain distances "
        "averaged over anchors ('plain-mean', BoT / fast-reid / MGN-pytorch), so the margin "
        "keeps one scale and the loss does not grow with the batch",
        "plain-mean",
    )


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, budget and run-keeping."""

    epochs: int = paper("§4.6, stop at epoch 600", 600)
    lr: float = paper("§4.6, Adam with initial lr 3e-4", 3e-4)
    milestones: tuple[int, ...] = paper("§4.6, lr x0.1 at epochs 250, 350, 450", (250, 350, 450))
    gamma: float = paper("§4.6, each decay divides the lr by 10", 0.1)
    weight_decay: float = paper("§4.6, Adam with default parameters: no weight decay", 0.0)
    warmup_epochs: int = paper("§4.6, the schedule starts at lr 3e-4: no warm-up", 0)
    steps_per_epoch: int | None = ours(
        "None: the sampler's epoch length; set to cap tiny runs", None
    )
    eval_every: int = ours("evaluate every 50 epochs and at the end", 50)
    checkpoint_every: int = ours("checkpoint every 10 epochs and at the end", 10)
    seed: int = ours("fixed seed for repeatable runs", 0)
    seeds: int = paper(
        "Tables 2-6 give one number per row with no spread: single runs. A row is trained "
        "once per seed train.seed + i, i = 0 .. seeds-1 (results.run_seeds); the count is not "
        "part of any one run, so config_hash leaves it out",
        1,
    )
    device: str = ours("'auto': CUDA when present, else CPU", "auto")
    amp: bool = ours("bf16 autocast on CUDA and on CPUs with AMX (other CPUs stay fp32)", True)
    channels_last: bool = ours(
        "NHWC activations on CUDA, the layout tensor-core convolutions run in (PyTorch "
        "measured +22% on ResNet-50 with mixed precision), and on a CPU training in bf16 "
        "(16% faster steps on the synthetic profile); an fp32 CPU stays NCHW",
        True,
    )
    compile: bool = ours("off: eager; torch.compile the training forward when on", False)
    fused_adam: bool = ours(
        "fused Adam: one kernel updates every parameter (on CPU too: 6 ms instead of 15 ms a "
        "step for the synthetic CAN's 5.4M parameters, benchmarks/README.md)",
        True,
    )
    grad_clip: float | None = ours("no gradient clipping", None)
    deterministic: bool = ours("deterministic kernels (slower); on for exact resume tests", False)
    threads: int | None = ours("None: torch's default CPU thread count", None)


@dataclass(frozen=True)
class EvalConfig:
    """How test features are extracted and scored."""

    metric: str = paper("§4.6, cosine distance at test", "cosine")
    flip: bool = ours("off: the paper does not say it averages flipped test images", False)
    rerank: bool = paper("§4.7, results without re-ranking", False)
    features: str = ours(
        "'bn': the batch-normalised embeddings (BoT); 'pre_bn' the features before it; §4.6 "
        "only says the features are normalised and compared by cosine distance",
        "bn",
    )
    batch_size: int = ours("128 test images per batch", 128)
    max_rank: int = ours("CMC up to rank 50, torchreid / fast-reid", 50)
    cache_images: bool = ours(
        "off: decode the query and gallery files at every evaluation; on: decode them once "
        "into a uint8 tensor at the input size ($CANLIB_CACHE/image-cache, as data.pipeline "
        "'gpu' does for training), within half a grey level of the decoded path",
        False,
    )


_SECTION_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}
SECTIONS = tuple(_SECTION_CLASSES)


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: a name plus the five sections above."""

    name: str = "can"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        unknown = set(data) - {"name", *SECTIONS}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected {SECTIONS}")
        sections = {}
        for section, section_cls in _SECTION_CLASSES.items():
            values = dict(data.get(section, {}))
            names = {f.name for f in dataclasses.fields(section_cls)}
            bad = set(values) - names
            if bad:
                raise ConfigError(
                    f"unknown field(s) {sorted(bad)} in config section '{section}'; "
                    f"known: {sorted(names)}"
                )
            hints = typing.get_type_hints(section_cls)
            coerced = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()}
            sections[section] = section_cls(**coerced)
        return cls(name=str(data.get("name", "can")), **sections)

    def with_overrides(self, overrides: dict[str, Any] | list[str] | None) -> ExperimentConfig:
        """Return a copy with ``{"train.lr": 1e-3}`` or ``["train.lr=1e-3"]`` applied.

        Strings are parsed by the field's type (``"true"``, ``"none"``, ``"3,5,7"``), so the
        command line and papermill give the same result. Unknown names raise ConfigError.
        """
        pairs = parse_overrides(overrides)
        data = self.to_dict()
        for key, value in pairs.items():
            if key == "name":
                data["name"] = str(value)
                continue
            section, _, name = key.partition(".")
            if section not in SECTIONS or not name:
                raise ConfigError(
                    f"override '{key}' must look like 'section.field' with section one of "
                    f"{SECTIONS}"
                )
            hints = typing.get_type_hints(_SECTION_CLASSES[section])
            if name not in hints:
                raise ConfigError(
                    f"unknown field '{name}' in config section '{section}'; known: {sorted(hints)}"
                )
            data[section][name] = _coerce(key, value, hints[name])
        return ExperimentConfig.from_dict(data)

    def config_hash(self) -> str:
        """A short stable hash of everything that changes the result (the name excluded)."""
        payload = self.to_dict()
        payload.pop("name")
        payload["data"].pop("num_workers")  # speed, not the trained weights
        # Options of a dataset the run does not use change nothing.
        if self.data.dataset != "cuhk03":
            payload["data"].pop("cuhk03_subset")
        if self.data.dataset != "synthetic":
            payload["data"].pop("synthetic_size")
        # The default seed is left out, so configs written before the field keep their hash.
        if self.data.dataset != "synthetic" or self.data.synthetic_seed == 0:
            payload["data"].pop("synthetic_seed")
        if self.model.pretrained == SYNTHETIC_TRUNK:
            payload["model"]["pretrained"] = (
                f"{SYNTHETIC_TRUNK}:global:e{TRUNK_EPOCHS}:m{','.join(map(str, TRUNK_MILESTONES))}"
            )
        # Off (the default) is left out, so configs written before the field keep their hash.
        if not self.eval.cache_images:
            payload["eval"].pop("cache_images")
        # ``seeds`` counts runs of a table row; each of them has its own ``train.seed``.
        for key in ("eval_every", "checkpoint_every", "device", "threads", "seeds"):
            payload["train"].pop(key)
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def validate(self) -> ExperimentConfig:
        """Check ranges and names of every field; raise ConfigError on the first problem."""
        # Sections in a fixed order: with several mistakes, the first one reported stays the same.
        _validate_data(self.data)
        _validate_model(self.model)
        _validate_loss(self.loss)
        _check_no_ignored_fields(self)
        _validate_train(self.train)
        _validate_eval(self.eval, self.loss)
        return self


def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Normalise ``["a.b=1", ...]`` or ``{"a.b": 1}`` into a dict."""
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    pairs = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' must look like 'section.field=value'")
        pairs[key.strip()] = value.strip()
    return pairs


def source_kind(section: str, name: str) -> tuple[str, str]:
    """``(kind, note)`` of a field's default: kind is one of :data:`SOURCE_KINDS`."""
    f = {f.name: f for f in dataclasses.fields(_SECTION_CLASSES[section])}[name]
    kind, _, note = f.metadata["source"].partition(": ")
    return kind, note


def describe_sources(
    config: ExperimentConfig, reasons: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """One row per field: ``field``, ``value``, ``origin`` and ``note``.

    ``origin`` is the kind of the value the config holds (see :data:`SOURCE_KINDS`):

    - the field's default: its own kind (``paper``, ``ours`` or ``deviation``) and note;
    - another value (a profile, a table row or the user changed it), marked ``(overridden)``:
      a changed paper value reads ``deviation (overridden)``, since the run no longer does
      what the paper states, and its note names the paper's value; a deviation field set to
      the paper's value (``model.pooling='eq1'``) reads ``paper (overridden)``; a changed
      ``ours`` field stays ``ours (overridden)``.

    Args:
        config: the config to describe.
        reasons: optional ``{"section.field": reason}`` for changed fields (see
            ``canlib.repro.experiments.sources``). A reason that starts with ``"paper: "``,
            ``"ours: "`` or ``"deviation: "`` also sets the kind: a table row that sets the
            paper's own ablation value (Table 2's ``model.parts=(2, 3)``) is ``paper``.
    """
    reasons = reasons or {}
    rows = []
    for section in SECTIONS:
        obj = getattr(config, section)
        for f in dataclasses.fields(obj):
            key = f"{section}.{f.name}"
            kind, note = source_kind(section, f.name)
            default = f.default
            value = getattr(obj, f.name)
            if value == default:
                origin = kind
            else:
                reason = reasons.get(key)
                given_kind, sep, given_note = (reason or "").partition(": ")
                if reason and sep and given_kind in SOURCE_KINDS:
                    kind, reason = given_kind, given_note
                elif kind == "paper":
                    kind = "deviation"
                    reason = f"the paper: {default!r} ({note}); {reason or 'changed here'}"
                elif kind == "deviation" and f.metadata.get("paper_value", object()) == value:
                    kind = "paper"
                    reason = f"the paper's value; our default {default!r}: {note}"
                origin = f"{kind} (overridden)"
                note = reason or note
            rows.append({"field": key, "value": repr(value), "origin": origin, "note": note})
    return rows


_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (possibly a string from a command line) to the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        inner = [a for a in args if a is not type(None)]
        if inner == [bool, str]:  # true/false, or a path (model.pretrained)
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() not in _TRUE_WORDS + _FALSE_WORDS:
                return value
            return _coerce(key, value, bool)
        if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        return _coerce(key, value, inner[0])
    if origin is tuple:
        if isinstance(value, str):
            items = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key} expects a comma-separated list, got {value!r}")
        return tuple(_coerce(key, v, args[0]) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS:
            return True
        if isinstance(value, str) and value.lower() in _FALSE_WORDS:
            return False
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    # True and False are ints to Python, never numbers to a config; int("inf") overflows.
    if annotation is int:
        try:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key} expects an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} expects a string, got {value!r}")
        return value
    return value


# Fields a model ignores (engine.build_model_from_config never passes them, or the model's
# preset fixes them), with why: setting one would train the same network under a new hash.
IGNORED_BY_MODEL: dict[str, dict[str, str]] = {
    "mgn": {
        "parts": "MGN fixes its branches: global, 2 and 3 stripes",
        "collaborative": "MGN has no collaborative attention",
        "pooling": "MGN keeps its own stripe pooling",
        "scale": "MGN uses linear classifiers",
        "embed_bn": "MGN's per-feature reductions keep their own conv + BN + ReLU",
    },
    "global": {
        "parts": "the global-only model has no part branches",
        "collaborative": "the global-only model has no stripes to merge",
        "pooling": "one stripe, the whole map, is pooled the same under either rule",
    },
}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{key} must be one of {', '.join(choices)} (got {value!r})")


def _at_least(key: str, value: int, low: int) -> None:
    _check(value >= low, f"{key} must be >= {low} (got {value})")


def _finite(key: str, value: float, low: float, *, strict: bool) -> None:
    ok = math.isfinite(value) and (value > low if strict else value >= low)
    _check(ok, f"{key} must be a finite number {'>' if strict else '>='} {low} (got {value})")


def _validate_data(d: DataConfig) -> None:
    _choice("data.dataset", d.dataset, DATASET_NAMES)
    _check(
        d.dataset == "synthetic" or bool(d.data_root),
        f"data.data_root is required for dataset {d.dataset!r}: pass --data-root DIR",
    )
    _choice("data.synthetic_size", d.synthetic_size, tuple(SIZES))
    _at_least("data.synthetic_seed", d.synthetic_seed, 0)
    _choice("data.cuhk03_subset", d.cuhk03_subset, CUHK03_SUBSETS)
    _choice("data.epoch", d.epoch, EPOCH_KINDS)
    _choice("data.pipeline", d.pipeline, ("auto", "cpu", "gpu"))
    for key in ("height", "width", "p", "k"):
        _at_least(f"data.{key}", getattr(d, key), 1)
    _check(
        d.height % 16 == 0 and d.width % 8 == 0,
        f"data.height must be a multiple of 16 and data.width of 8 (got {d.height}x{d.width})",
    )
    for key in ("flip_p", "erasing_p"):
        _check(
            0.0 <= getattr(d, key) <= 1.0, f"data.{key} must be in [0, 1] (got {getattr(d, key)})"
        )
    _check(d.pad >= 0 and d.num_workers >= 0, "data.pad and data.num_workers must be >= 0")


def _validate_model(m: ModelConfig) -> None:
    check_model_name(m.name, "model.name")
    check_backbone(m.backbone, "model.backbone")
    _choice("model.pooling", m.pooling, STRIPE_METHODS)
    _check(
        all(p >= 2 for p in m.parts) and list(m.parts) == sorted(set(m.parts)),
        f"model.parts must be increasing integers >= 2 (got {m.parts})",
    )
    _check(
        m.name != "can" or bool(m.parts),
        "model.parts is empty: CAN needs part branches; use model.name=global for none",
    )
    _at_least("model.embed_dim", m.embed_dim, 1)
    _finite("model.scale", m.scale, 0, strict=True)
    _check(
        not (m.pretrained is True and m.backbone in BACKBONE_ALIASES),
        f"model.pretrained=true (ImageNet) needs a standard-width backbone (got "
        f"{m.backbone!r}); a narrow one takes a weights file path or false",
    )
    _check(
        not (isinstance(m.pretrained, str) and not m.pretrained.strip()),
        "model.pretrained must be true, false, a weights file path or "
        f"'{SYNTHETIC_TRUNK}' (got an empty string)",
    )


def _validate_loss(lo: LossConfig) -> None:
    check_loss_mode(lo.mode, "loss.mode")
    _finite("loss.margin", lo.margin, 0, strict=False)
    _finite("loss.center_weight", lo.center_weight, 0, strict=False)
    _finite("loss.center_lr", lo.center_lr, 0, strict=True)
    _check(0.0 <= lo.label_smoothing < 1.0, "loss.label_smoothing must be in [0, 1)")


def _validate_train(t: TrainConfig) -> None:
    _at_least("train.epochs", t.epochs, 1)
    _finite("train.lr", t.lr, 0, strict=True)
    _check(0 < t.gamma <= 1, f"train.gamma must be in (0, 1] (got {t.gamma})")
    _check(
        list(t.milestones) == sorted(t.milestones),
        f"train.milestones must be increasing (got {t.milestones})",
    )
    _finite("train.weight_decay", t.weight_decay, 0, strict=False)
    _at_least("train.warmup_epochs", t.warmup_epochs, 0)
    _check(
        t.steps_per_epoch is None or t.steps_per_epoch >= 1,
        f"train.steps_per_epoch must be None or >= 1 (got {t.steps_per_epoch})",
    )
    _at_least("train.eval_every", t.eval_every, 1)
    _at_least("train.checkpoint_every", t.checkpoint_every, 1)
    _check(
        t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
        f"train.device must be auto, cpu, cuda or cuda:N (got {t.device!r})",
    )
    _check(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip must be None or > 0")
    _check(t.threads is None or t.threads >= 1, "train.threads must be None or >= 1")
    _at_least("train.seeds", t.seeds, 1)


def _validate_eval(e: EvalConfig, lo: LossConfig) -> None:
    _choice("eval.metric", e.metric, DISTANCE_METRICS)
    _choice("eval.features", e.features, TEST_FEATURES)
    _choice("loss.triplet_distance", lo.triplet_distance, TRIPLET_DISTANCES)
    _at_least("eval.batch_size", e.batch_size, 1)
    _check(
        e.max_rank >= 10, f"eval.max_rank must be >= 10, the tables show rank-10 (got {e.max_rank})"
    )


def _check_no_ignored_fields(cfg: ExperimentConfig) -> None:
    """Refuse a field that the chosen model or loss mode ignores, when it is not the default."""
    m, lo = cfg.model, cfg.loss
    defaults_m, defaults_lo = ModelConfig(), LossConfig()
    for name, why in IGNORED_BY_MODEL.get(m.name, {}).items():
        value = getattr(m, name)
        _check(
            value == getattr(defaults_m, name),
            f"model.{name}={value!r} has no effect on model.name={m.name!r} ({why}); remove it",
        )
    _check(
        lo.mode != "mgn" or m.name == "mgn",
        f"loss.mode='mgn' is MGN's own loss recipe, for model.name='mgn' (got {m.name!r}); use "
        "loss.mode=ce+triplet, the same terms, for another model",
    )
    # The fields of a loss term the mode leaves out.
    for modes, term, names in (
        (TRIPLET_MODES, "triplet", ("margin", "triplet_distance")),
        (CENTER_MODES, "center", ("center_weight", "center_lr")),
    ):
        if lo.mode in modes:
            continue
        for name in names:
            value = getattr(lo, name)
            _check(
                value == getattr(defaults_lo, name),
                f"loss.{name}={value!r} has no effect on loss.mode={lo.mode!r} (no {term} "
                "loss); remove it",
            )
