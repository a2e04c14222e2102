"""The names and markers that several layers check, each written once.

Which models, backbones and loss modes exist and the one check of each (called by the builders
in ``canlib.model`` and ``canlib.losses`` and by ``canlib.config``), and the junk-image pid. A
leaf without torch, so checking a config stays instant and ``datasets`` and ``evaluate``, which
must not import each other, can both read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canlib.errors import ConfigError

__all__ = [
    "BACKBONES",
    "BACKBONE_ALIASES",
    "CENTER_MODES",
    "DISTANCE_METRICS",
    "EPOCH_KINDS",
    "JUNK_PID",
    "LOSS_MODES",
    "LOSS_MODE_TERMS",
    "MODEL_NAMES",
    "RESNETS",
    "STRIPE_METHODS",
    "TEST_FEATURES",
    "TRIPLET_DISTANCES",
    "TRIPLET_MODES",
    "check_backbone",
    "check_choice",
    "check_loss_mode",
    "check_model_name",
]

# Market-1501's junk images: dropped from training, never a match nor a negative at test.
JUNK_PID = -1

# The models canlib.model.build_model builds (its presets are keyed by these names).
MODEL_NAMES: tuple[str, ...] = ("can", "global", "mgn")

# Full-width torchvision ResNets, and named narrow ones: name -> (resnet, width multiplier).
RESNETS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
BACKBONE_ALIASES: dict[str, tuple[str, float]] = {
    "resnet18-half": ("resnet18", 0.5),
    "resnet18-quarter": ("resnet18", 0.25),
}
BACKBONES: tuple[str, ...] = tuple(sorted([*RESNETS, *BACKBONE_ALIASES]))

# Loss mode -> (use triplet, use center, clustering losses on every feature (else global only)).
LOSS_MODE_TERMS: dict[str, tuple[bool, bool, bool]] = {
    "ce": (False, False, False),
    "ce+triplet": (True, False, False),
    "ce+triplet+center": (True, True, False),
    "global+local": (True, True, True),
    # MGN (Wang et al. 2018; MGN-pytorch loss/__init__.py): softmax on all 8 features, averaged
    # over the 8 classifiers; batch-hard triplet on the 3 global features, averaged over them;
    # no center loss. The margin is loss.margin: MGN-pytorch's --margin default is 1.2.
    "mgn": (True, False, False),
}
LOSS_MODES: tuple[str, ...] = tuple(LOSS_MODE_TERMS)

# Choices that a config field and the code behind it both check (each listed once, here).
STRIPE_METHODS: tuple[str, ...] = ("adaptive", "eq1")  # model.pooling: torch's bins or eq. (1)
TEST_FEATURES: tuple[str, ...] = ("bn", "pre_bn")  # eval.features: after or before the BN
DISTANCE_METRICS: tuple[str, ...] = ("cosine", "euclidean")  # eval.metric
TRIPLET_DISTANCES: tuple[str, ...] = ("plain-mean", "squared-sum")  # loss.triplet_distance
EPOCH_KINDS: tuple[str, ...] = ("identities", "images")  # data.epoch
TRIPLET_MODES: tuple[str, ...] = tuple(m for m, terms in LOSS_MODE_TERMS.items() if terms[0])
CENTER_MODES: tuple[str, ...] = tuple(m for m, terms in LOSS_MODE_TERMS.items() if terms[1])


def check_choice(key: str, value: Any, valid: Sequence[str]) -> None:
    """Raise :class:`ConfigError` ``unknown <key> <value>; valid: ...`` unless ``value`` is
    one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")


def check_model_name(name: Any, key: str = "model") -> None:
    """The model name rule: one of :data:`MODEL_NAMES` (``key`` names the field)."""
    check_choice(key, name, MODEL_NAMES)


def check_backbone(backbone: Any, key: str = "backbone") -> None:
    """The backbone rule: one of :data:`BACKBONES` (``key`` names the field)."""
    check_choice(key, backbone, BACKBONES)


def check_loss_mode(mode: Any, key: str = "loss mode") -> None:
    """The loss-mode rule: one of :data:`LOSS_MODES` (``key`` names the field)."""
    check_choice(key, mode, LOSS_MODES)
