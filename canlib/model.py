"""CAN, its ablations and the MGN baseline, as one configurable multi-branch network.

Paper: Li et al., "Collaborative Attention Network for Person Re-identification" (CAN),
section 3.2, Table 1 and equations (1)-(4). Baseline: Wang et al., "Learning Discriminative
Features with Multiple Granularities for Person Re-Identification" (MGN, arXiv:1804.01438), as
implemented in seathiefwang/MGN-pytorch (``model/mgn.py``).

Every variant the paper trains is an option of :class:`CANModel`, built by :func:`build_model`:

- ``build_model("can", C)``: the paper's model (global branch + ``part_3``, ``part_5``, ``part_7``,
  collaborative attention, max+avg concat pooling, one shared 1x1 embedding, 16 x 256 features).
- ``parts=...`` reproduces Table 2's partition patterns, ``collaborative=False`` Table 3's
  "w/o CA" rows.
- ``build_model("global", C)``: the global branch alone ("part-1", a ResNet baseline).
- ``build_model("mgn", C)``: MGN from the same pieces (global, part-2, part-3 branches;
  8 x 256 features).

Output contract (relied on by ``canlib.losses`` and ``canlib.engine``):

- eval mode: ``model(images)`` -> ``(B, F * D)`` L2-normalised embedding;
- train mode: ``model(images)`` -> ``{"features": (B, F, D), "bn_features": (B, F, D),
  "logits": (B, F, C)}``;
- ``model.is_global`` (list of ``F`` bools), ``model.num_features`` (``F``), ``model.embed_dim``
  (``D``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from canlib.errors import CheckpointError, ConfigError
from canlib.rules import (
    BACKBONE_ALIASES,
    BACKBONES,
    MODEL_NAMES,
    STRIPE_METHODS,
    TEST_FEATURES,
    check_backbone,
    check_choice,
    check_model_name,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONES",
    "MODEL_NAMES",
    "CANModel",
    "build_model",
    "build_resnet",
    "eval_mode",
    "model_device",
    "stripe_pool",
    "stripe_rows",
]

# name -> (block, blocks per stage, ImageNet weights), for each of canlib.rules.RESNETS, as
# torchvision's builders use them; the narrow aliases live in rules too (BACKBONE_ALIASES).
_RESNETS: dict[str, tuple[type[nn.Module], list[int], Any]] = {
    "resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2], tv_resnet.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3], tv_resnet.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3], tv_resnet.ResNet50_Weights.IMAGENET1K_V1),
}
POOLS = ("concat", "max", "avg")
EMBEDDINGS = ("shared", "mgn")
CLASSIFIERS = ("cosine", "linear")
SPLITS = ("layer4", "layer3.1")


# --------------------------------------------------------------------------- backbone


def _resolve_backbone(backbone: str, width: float) -> tuple[str, float]:
    """Map a backbone name (possibly an alias) and width to (torchvision resnet name, width)."""
    check_backbone(backbone)
    if backbone in BACKBONE_ALIASES:
        if width != 1.0:
            raise ConfigError(
                f"backbone={backbone!r} already fixes the width; pass backbone="
                f"{BACKBONE_ALIASES[backbone][0]!r} with width={width} instead"
            )
        return BACKBONE_ALIASES[backbone]
    if not (isinstance(width, (int, float)) and 0 < width <= 4 and round(64 * width) >= 4):
        raise ConfigError(
            f"width must be a number in (0, 4] giving >= 4 stem channels, got {width!r}"
        )
    return backbone, float(width)


def _make_stage(
    block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """One ResNet stage, laid out exactly as torchvision's ``ResNet._make_layer`` does."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _narrow_resnet(name: str, width: float) -> nn.Module:
    """A torchvision-layout ResNet whose channel counts are scaled by ``width`` (ours).

    torchvision's ``ResNet`` hard-codes 64 stem channels, so narrow variants are assembled here
    from torchvision's own blocks, with its initialisation (Kaiming-normal fan-out, BN 1/0).
    """
    block, layers, _ = _RESNETS[name]
    base = round(64 * width)
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(base)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    inplanes = base
    for i, blocks in enumerate(layers):
        planes = base * 2**i
        setattr(
            net, f"layer{i + 1}", _make_stage(block, inplanes, planes, blocks, 1 if i == 0 else 2)
        )
        inplanes = planes * block.expansion
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def _imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights for ``name``, from the torch hub cache or the internet."""
    url = _RESNETS[name][2].url
    filename = os.path.basename(url)
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        return torch.hub.load_state_dict_from_url(
            url, progress=False, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:  # any failure (offline, bad hash, bad file) gets the same advice
        raise CheckpointError(
            f"ImageNet weights for {name} could not be loaded from {url} ({type(exc).__name__}: "
            f"{exc}); without internet, put {filename} in {cache} (set $TORCH_HOME to move it) "
            f"or pass pretrained='/path/to/{filename}'"
        ) from exc


def _load_weights_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict read from a local file with ``weights_only=True``.

    As torchreid's ``load_pretrained_weights`` does, a checkpoint that wraps it under
    ``state_dict`` is unwrapped, and the ``module.`` prefix that ``DataParallel`` and
    ``DistributedDataParallel`` put on every key is dropped.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained weights file {os.fspath(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"pretrained weights file {os.fspath(path)!r} could not be read as a state dict "
            f"with weights_only=True ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"pretrained weights file {os.fspath(path)!r} holds no state dict")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def build_resnet(
    backbone: str = "resnet50", width: float = 1.0, pretrained: bool | str | os.PathLike = False
) -> nn.Module:
    """A torchvision-layout ResNet (``conv1`` .. ``layer4``; its ``fc`` is never used).

    Args:
        backbone: one of :data:`BACKBONES`; ``resnet50`` is the paper's. Default ``resnet50``.
        width: channel multiplier (ours; ``0.5`` gives 32 stem channels). Default 1.
        pretrained: ``False``; ``True`` for torchvision's ImageNet weights (IMAGENET1K_V1, what
            MGN-pytorch and BoT start from), read from ``$TORCH_HOME/hub/checkpoints`` or
            downloaded; or a path to a local state dict (loaded with ``weights_only=True``).

    Raises:
        ConfigError: unknown backbone, bad width, or pretrained weights asked for a narrow net.
        CheckpointError: the weights cannot be had or do not fit the network.
    """
    name, width = _resolve_backbone(backbone, width)
    if width != 1.0:
        if pretrained is True:
            raise ConfigError(
                f"ImageNet weights exist only for full-width ResNets, got width={width} "
                f"(backbone={backbone!r}); use pretrained=False or a weights file path"
            )
        net = _narrow_resnet(name, width)
    else:
        net = tv_resnet.ResNet(*_RESNETS[name][:2])  # what tv_resnet.resnet50(weights=None) does
    if pretrained is False:
        return net
    if pretrained is True:
        state = _imagenet_state_dict(name)
    elif isinstance(pretrained, (str, os.PathLike)):
        state = _load_weights_file(pretrained)
    else:
        raise ConfigError(f"pretrained must be False, True or a file path, got {pretrained!r}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = {k for k in net.state_dict() if not k.startswith("fc.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"pretrained weights do not fit {name}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]} (expected a torchvision {name} state dict)"
        )
    try:
        net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"pretrained weights do not fit {name}: {exc}") from exc
    logger.info("loaded pretrained %s weights", name)
    return net


def trunk_state_dict(model: CANModel, branch: str | None = None) -> dict[str, Tensor]:
    """A trained model's ResNet as a torchvision-named state dict, for ``pretrained=<file>``.

    The stem gives ``conv1`` .. ``layer3`` and one branch (default: the first) gives
    ``layer4`` (and, for MGN's ``layer3.1`` split, the rest of ``layer3``). Save it with
    ``torch.save`` and pass the path as :func:`build_resnet`'s ``pretrained``.

    Args:
        model: a :class:`CANModel` (CAN, an ablation, MGN or the global-only model).
        branch: which branch's layer4 to take (default: the first, ``global`` when present).
    """
    branch = branch or next(iter(model.branches))
    if branch not in model.branches:
        raise ConfigError(f"no branch {branch!r}; the model has {', '.join(model.branches)}")
    pieces: list[tuple[str, nn.Module]] = list(
        zip(("conv1", "bn1", "relu", "maxpool", "layer1", "layer2"), model.stem[:6])
    )
    tail = model.branches[branch]
    if isinstance(model.stem[6], nn.Sequential):  # forks after layer3
        pieces += [("layer3", model.stem[6]), ("layer4", tail)]
    else:  # MGN: forks after layer3's first block; the branch holds layer3[1:] then layer4
        pieces.append(("layer3.0", model.stem[6]))
        pieces += [(f"layer3.{i + 1}", block) for i, block in enumerate(tail[0])]
        pieces.append(("layer4", tail[1]))
    return {
        f"{prefix}.{key}": value.detach().clone()
        for prefix, module in pieces
        for key, value in module.state_dict().items()
    }


def _set_first_stride(stage: nn.Sequential, stride: int) -> None:
    """Give the first block of ``stage`` the spatial ``stride`` (1 removes its down-sampling)."""
    for m in stage[0].modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            m.stride = (stride, stride)


def _out_channels(stage: nn.Sequential) -> int:
    convs = [m for m in stage[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _map_size(size: int, layer4_stride: int) -> int:
    """Layer-4 map size for an input ``size``: conv1, maxpool, layer2, layer3 each halve (ceil)."""
    for _ in range(4 if layer4_stride == 1 else 5):
        size = math.ceil(size / 2)
    return size


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, its training mode restored afterwards (even on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- pooling


def stripe_rows(height: int, stripes: int, method: str = "adaptive") -> list[tuple[int, int]]:
    """Row ranges ``[start, end)`` of the ``stripes`` horizontal stripes of a ``height``-row map.

    Args:
        height: rows of the map (IS in equation (1)).
        stripes: number of stripes (OS), ``1 <= stripes <= height``.
        method: ``"adaptive"``: torch's adaptive pooling bins, start ``floor(i*IS/OS)``, end
            ``ceil((i+1)*IS/OS)`` (what the authors' code most likely called); ``"eq1"``: the
            paper's equation (1), stride ``floor(IS/OS)``, kernel ``IS - (OS-1)*stride`` (windows
            overlap where OS does not divide IS: 24 rows into 5 gives kernel 8, stride 4).
    """
    if method not in STRIPE_METHODS:
        raise ConfigError(f"unknown stripe pooling {method!r}; valid: {', '.join(STRIPE_METHODS)}")
    if not 1 <= stripes <= height:
        raise ConfigError(f"cannot cut a {height}-row feature map into {stripes} stripes")
    if method == "adaptive":
        return [
            ((i * height) // stripes, -((-(i + 1) * height) // stripes)) for i in range(stripes)
        ]
    stride = height // stripes
    kernel = height - (stripes - 1) * stride
    return [(i * stride, i * stride + kernel) for i in range(stripes)]


def stripe_pool(x: Tensor, stripes: int, method: str = "adaptive", pool: str = "concat") -> Tensor:
    """Pool a map into ``stripes`` horizontal stripes, each over the full width.

    Args:
        x: (B, C, H, W) feature map.
        stripes: number of stripes n (``1`` gives the global block G).
        method: ``"adaptive"`` (default, torch's bins) or ``"eq1"`` (the paper's equation (1));
            see :func:`stripe_rows`.
        pool: ``"concat"`` (paper: max and average pooling concatenated, channels first max then
            average, so C' = 2C), ``"max"`` (MGN) or ``"avg"``.

    Returns:
        (B, C', n) tensor: column ``i`` is stripe ``i`` counted from the top.
    """
    if pool not in POOLS:
        raise ConfigError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    # Each stripe is reduced over its own rows rather than with ``F.adaptive_*_pool2d``: the
    # same result (``adaptive`` rows are torch's bins), but a deterministic backward on CUDA,
    # where torch's adaptive pooling gradients are not.
    cols = []
    for start, end in stripe_rows(x.shape[2], stripes, method):
        window = x[:, :, start:end]
        parts = []
        if pool != "avg":
            parts.append(window.amax(dim=(2, 3)))
        if pool != "max":
            parts.append(window.mean(dim=(2, 3)))
        cols.append(torch.cat(parts, dim=1))
    return torch.stack(cols, dim=2)


# --------------------------------------------------------------------------- heads


class _SharedEmbedding(nn.Module):
    """Paper eq. (2)-(4): one 1x1 convolution shared by every feature, then batch norm.

    Paper: the 1x1 conv ``in_dim -> embed_dim`` shared by all branches and features. Ours: no conv
    bias (a BN follows) and one BN per feature (``BatchNorm1d(F * D)`` over the flattened
    features), because global and stripe features have different statistics; BN output is what
    the classifier sees and the pre-BN output feeds the clustering losses (BNNeck, as in BoT).
    """

    def __init__(self, in_dim: int, embed_dim: int, num_features: int, bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, embed_dim, kernel_size=1, bias=False)
        # Without the BN (``bn=False``) both outputs are the conv's: one feature for every loss.
        self.bn = nn.BatchNorm1d(num_features * embed_dim) if bn else nn.Identity()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in")  # as MGN-pytorch's reduction

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, f, _ = x.shape
        # A 1x1 conv on 1x1 maps is a matrix product; F.linear computes it as one (oneDNN's
        # bf16 conv backward took 23-27 ms for this layer on a 2-core AMX CPU, the product
        # under 1 ms), with the conv's weight so that checkpoints keep their layout.
        feats = F.linear(x, self.conv.weight.flatten(1))
        return feats, self.bn(feats.reshape(b, -1)).reshape(b, f, -1)


class _MGNEmbedding(nn.Module):
    """MGN's reduction: per feature, its own 1x1 conv + BN + ReLU (MGN-pytorch ``reduction_i``).

    MGN uses the same reduced vector for its triplet and softmax losses, so ``features`` and
    ``bn_features`` are the same tensor.
    """

    def __init__(self, in_dim: int, embed_dim: int, num_features: int) -> None:
        super().__init__()
        self.reductions = nn.ModuleList()
        for _ in range(num_features):
            red = nn.Sequential(
                nn.Conv2d(in_dim, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.ReLU()
            )
            nn.init.kaiming_normal_(red[0].weight, mode="fan_in")
            nn.init.normal_(red[1].weight, mean=1.0, std=0.02)
            nn.init.zeros_(red[1].bias)
            self.reductions.append(red)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        outs = [red(x[:, i, :, None, None]).flatten(1) for i, red in enumerate(self.reductions)]
        out = torch.stack(outs, dim=1)
        return out, out


class _Classifiers(nn.Module):
    """One classifier per feature, stored as one (F, C, D) weight for a single einsum.

    ``cosine`` (paper: "we normalize the features and weights in FC Layer"): logits are
    ``scale * cos(feature, class weight)``, no bias. ``linear``: plain ``Linear`` with bias
    (MGN-pytorch, Kaiming-normal fan-out init).
    """

    def __init__(
        self, kind: str, num_features: int, num_classes: int, embed_dim: int, scale: float
    ) -> None:
        super().__init__()
        self.kind = kind
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_features, num_classes, embed_dim))
        if kind == "cosine":
            nn.init.normal_(self.weight, std=0.01)
            self.bias = None
        else:
            for w in self.weight.data:
                nn.init.kaiming_normal_(w, mode="fan_out")
            self.bias = nn.Parameter(torch.zeros(num_features, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        # fp32 even under autocast (ours): bf16 keeps 8 bits of mantissa, so 16 * cos would
        # move in steps of about 0.06, coarse for a softmax over 751 classes; the einsum is
        # tiny next to the backbone.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if self.kind == "cosine":
                # cos = <x/|x|, w/|w|>, with the class-weight norms divided out of the (B, F, C)
                # products rather than out of the larger (F, C, D) weight (same value; the
                # division and its backward were ~10% of a CPU training step).
                norms = self.weight.norm(dim=-1).clamp_min(1e-12)
                dots = torch.einsum("bfd,fcd->bfc", F.normalize(x, dim=-1), self.weight)
                return self.scale * dots / norms
            return torch.einsum("bfd,fcd->bfc", x, self.weight) + self.bias


# --------------------------------------------------------------------------- model


def _validate_parts(parts: Any, height: int, input_size: tuple[int, int]) -> tuple[int, ...]:
    if not isinstance(parts, (tuple, list)) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in parts
    ):
        raise ConfigError(f"parts must be a tuple of ints such as (3, 5, 7), got {parts!r}")
    parts = tuple(parts)
    if any(n < 2 for n in parts):
        raise ConfigError(
            f"each part count must be >= 2 (part-1 is the global branch, always present), "
            f"got {parts}"
        )
    if list(parts) != sorted(set(parts)):
        raise ConfigError(f"parts must be unique and sorted ascending, got {parts}")
    if parts and parts[-1] > height:
        raise ConfigError(
            f"parts={parts} asks for {parts[-1]} stripes but an input of {input_size[0]}x"
            f"{input_size[1]} gives layer-4 maps of only {height} rows; use a taller input_size"
        )
    return parts


def _check_arguments(
    num_classes: object, embed_dim: object, input_size: object, scale: object, global_stride: object
) -> None:
    """CANModel's numeric arguments, each refused in one sentence naming it."""
    if not (
        isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 0
    ):
        raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
    if not (isinstance(embed_dim, int) and embed_dim >= 1):
        raise ConfigError(f"embed_dim must be a positive int, got {embed_dim!r}")
    if not (
        isinstance(input_size, (tuple, list))
        and len(input_size) == 2
        and all(isinstance(s, int) and s >= 32 for s in input_size)
    ):
        raise ConfigError(f"input_size must be (height, width) ints >= 32, got {input_size!r}")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ConfigError(f"scale must be a positive number, got {scale!r}")
    if global_stride not in (1, 2):
        raise ConfigError(f"global_stride must be 1 or 2, got {global_stride!r}")


class CANModel(nn.Module):
    """Collaborative Attention Network (Li et al.) and the ablations/baselines built from it.

    A ResNet trunk (stem to ``layer3``, shared) feeds one branch per granularity, each with its own
    copy of ``layer4`` (weights not shared, all copies initialised from the same weights): the
    global branch and one ``part_n`` branch per entry of ``parts``. Each branch's map is pooled to
    a 1x1 global block G; a part branch also pools to n horizontal stripes, and with
    collaborative attention each pair of adjacent stripes is merged by max pooling, giving n-1
    local features. Every block is embedded to ``embed_dim`` and classified on its own.

    Feature order (see :meth:`describe`): global branch G, then per part branch its G followed by
    its local features top to bottom (the order of equation (2)).

    Paper (section 3.2, Table 1): ResNet-50; layer4 per branch with stride 1 (384x128 -> 24x8);
    branches global, part_3, part_5, part_7; max+avg concat pooling (4096 channels); collaborative
    attention; one shared 1x1 conv 4096 -> 256; normalised features and weights in the FC layer;
    cosine distance at test.

    Ours (the paper is silent): stripe bins follow torch's adaptive pooling by default
    (``pooling="eq1"`` gives equation (1)); one BN per feature after the shared conv
    (BNNeck: clustering losses on the pre-BN features, classifier on the BN ones, as in BoT);
    cosine-classifier scale 16; test embedding = the BN features concatenated and L2-normalised;
    no flip averaging.

    Args:
        num_classes: training identities C (classifier outputs); 0 builds no classifier (train
            mode then returns empty ``(B, F, 0)`` logits).
        parts: stripe counts of the part branches, ascending, each >= 2. Default ``(3, 5, 7)``.
        collaborative: merge adjacent stripes (CA). Default True; False gives Table 3's "w/o CA".
        global_branch: include the global branch. Default True.
        backbone: one of :data:`BACKBONES`. Default ``resnet50`` (paper).
        width: backbone channel multiplier (ours). Default 1.
        pretrained: False, True (torchvision ImageNet) or a weights path; see :func:`build_resnet`.
        embed_dim: D, embedding size per feature. Default 256 (paper).
        pool_type: ``concat`` (paper, max+avg), ``max`` (MGN) or ``avg``. Default ``concat``.
        pooling: ``adaptive`` (default) or ``eq1``; see :func:`stripe_rows`.
        embedding: ``shared`` (paper: one conv for all features, then BN) or ``mgn`` (one
            conv+BN+ReLU per feature). Default ``shared``.
        classifier: ``cosine`` (paper) or ``linear`` (MGN). Default ``cosine``.
        scale: cosine-classifier scale s (ours; 16 as in the prototype; NormFace's bound
            ``s >= log((C-1) p / (1-p))`` is ~11 for C=751 and p=0.99, and larger scales
            without a margin saturate the softmax early). Default 16.
        global_stride: stride of the global branch's layer4, 1 (paper) or 2 (MGN). Default 1.
        split: where branches fork: ``layer4`` (paper) or ``layer3.1`` (MGN: after the first block
            of layer3, the rest of layer3 copied per branch too). Default ``layer4``.
        test_features: ``bn`` (after BN, default) or ``pre_bn`` features in the test embedding.
        embed_bn: batch norm after the shared embedding (ours, BNNeck; default True). Without
            it every loss and the test embedding see the conv's output.
        flip_test: average the embeddings of the image and its horizontal flip. Default False
            (the paper does not use it).
        input_size: nominal (height, width) of the input, used to validate ``parts`` and by
            :meth:`describe`. Default (384, 128) (paper).
        seed: if given, parameters are initialised from this seed without touching the global
            RNG state. Default None (torch's global RNG, as any ``nn.Module``).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        parts: Sequence[int] = (3, 5, 7),
        collaborative: bool = True,
        global_branch: bool = True,
        backbone: str = "resnet50",
        width: float = 1.0,
        pretrained: bool | str | os.PathLike = False,
        embed_dim: int = 256,
        pool_type: str = "concat",
        pooling: str = "adaptive",
        embedding: str = "shared",
        classifier: str = "cosine",
        scale: float = 16.0,
        global_stride: int = 1,
        split: str = "layer4",
        test_features: str = "bn",
        embed_bn: bool = True,
        flip_test: bool = False,
        input_size: tuple[int, int] = (384, 128),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(num_classes, embed_dim, input_size, scale, global_stride)
        for name, value, valid in [
            ("pool_type", pool_type, POOLS),
            ("pooling", pooling, STRIPE_METHODS),
            ("embedding", embedding, EMBEDDINGS),
            ("classifier", classifier, CLASSIFIERS),
            ("split", split, SPLITS),
            ("test_features", test_features, TEST_FEATURES),
        ]:
            check_choice(name, value, valid)
        self.input_size = tuple(input_size)
        self.parts = _validate_parts(parts, _map_size(input_size[0], 1), self.input_size)
        if not global_branch and not self.parts:
            raise ConfigError("a model needs a branch: set global_branch=True or give parts")
        self.global_branch = bool(global_branch)
        self.collaborative = bool(collaborative)
        self.pool_type = pool_type
        self.pooling = pooling
        self.test_features = test_features
        self.flip_test = bool(flip_test)
        self.embed_bn = bool(embed_bn)
        self.embed_dim = embed_dim
        self.num_classes = num_classes

        # (branch name, stripes (0 for the global branch), layer4 stride)
        self.branch_specs: list[tuple[str, int, int]] = (
            [("global", 0, global_stride)] if global_branch else []
        ) + [(f"part_{n}", n, 1) for n in self.parts]

        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self._build(
                num_classes, backbone, width, pretrained, embedding, classifier, scale, split
            )

    def _build(
        self,
        num_classes: int,
        backbone: str,
        width: float,
        pretrained: bool | str | os.PathLike,
        embedding: str,
        classifier: str,
        scale: float,
        split: str,
    ) -> None:
        net = build_resnet(backbone, width, pretrained)
        trunk = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2]
        if split == "layer4":
            self.stem = nn.Sequential(*trunk, net.layer3)
            tail: nn.Module | None = None
        else:  # MGN forks after layer3's first block
            self.stem = nn.Sequential(*trunk, net.layer3[0])
            tail = nn.Sequential(*net.layer3[1:])
        self.branches = nn.ModuleDict()
        for name, _, stride in self.branch_specs:
            layer4 = copy.deepcopy(net.layer4)
            _set_first_stride(layer4, stride)
            self.branches[name] = (
                nn.Sequential(copy.deepcopy(tail), layer4) if tail is not None else layer4
            )
        channels = _out_channels(net.layer4)
        self.in_dim = channels * (2 if self.pool_type == "concat" else 1)

        self._layout: list[tuple[str, tuple[int, ...]]] = []  # (branch, stripe indices)
        for name, n, _ in self.branch_specs:
            self._layout.append((name, ()))
            if n:
                k = n - 1 if self.collaborative else n
                self._layout += [
                    (name, (i, i + 1) if self.collaborative else (i,)) for i in range(k)
                ]
        self.is_global: list[bool] = [not stripes for _, stripes in self._layout]
        self.num_features = len(self.is_global)

        if embedding == "shared":
            self.embedding = _SharedEmbedding(
                self.in_dim, self.embed_dim, self.num_features, bn=self.embed_bn
            )
        else:
            self.embedding = _MGNEmbedding(self.in_dim, self.embed_dim, self.num_features)
        self.classifier = (
            _Classifiers(classifier, self.num_features, num_classes, self.embed_dim, float(scale))
            if num_classes
            else None
        )

    # ---------------------------------------------------------------- forward pieces

    def feature_maps(self, images: Tensor) -> dict[str, Tensor]:
        """Each branch's layer-4 map (for Figure 4).

        Args:
            images: (B, 3, H, W) normalised images.

        Returns:
            dict branch name -> (B, C, h, w) map, in branch order (``global``, ``part_3``, ...).
        """
        x = self.stem(images)
        return {name: branch(x) for name, branch in self.branches.items()}

    def pooled_features(self, maps: dict[str, Tensor]) -> Tensor:
        """Pool the branch maps into the model's F blocks, before the embedding.

        Args:
            maps: output of :meth:`feature_maps`.

        Returns:
            (B, F, in_dim): per branch its G block, then its stripes (``collaborative=False``) or
            the element-wise max of each adjacent stripe pair (collaborative attention: max
            pooling the concatenated 2x1 pair to 1x1 is exactly that max).
        """
        blocks = []
        for name, n, _ in self.branch_specs:
            x = maps[name]
            blocks.append(stripe_pool(x, 1, self.pooling, self.pool_type))
            if n:
                if n > x.shape[2]:
                    raise ConfigError(
                        f"branch {name} needs >= {n} rows but the layer-4 map has {x.shape[2]} "
                        f"(input height too small for parts={self.parts})"
                    )
                s = stripe_pool(x, n, self.pooling, self.pool_type)
                blocks.append(torch.maximum(s[..., :-1], s[..., 1:]) if self.collaborative else s)
        return torch.cat(blocks, dim=2).transpose(1, 2)

    def _embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.embedding(self.pooled_features(self.feature_maps(images)))

    def forward(self, images: Tensor) -> Tensor | dict[str, Tensor]:
        """Train mode: dict of ``features``/``bn_features`` (B, F, D) and ``logits`` (B, F, C).

        Eval mode: (B, F * D) L2-normalised embedding (compare by cosine distance).
        """
        if self.training:
            feats, bn_feats = self._embed(images)
            if self.classifier is not None:
                logits = self.classifier(bn_feats)
            else:
                logits = bn_feats.new_zeros(bn_feats.shape[0], self.num_features, 0)
            return {"features": feats, "bn_features": bn_feats, "logits": logits}
        emb = self._test_embedding(images)
        if self.flip_test:
            emb = emb + self._test_embedding(images.flip(3))
        return F.normalize(emb, dim=1)

    def _test_embedding(self, images: Tensor) -> Tensor:
        feats, bn_feats = self._embed(images)
        return (bn_feats if self.test_features == "bn" else feats).flatten(1)

    # ---------------------------------------------------------------- introspection

    def describe(self) -> list[dict[str, Any]]:
        """The feature layout (Table 1 and the sentence under equation 4), one record per feature.

        Returns:
            list of dicts with ``index``, ``branch``, ``kind`` (``global``/``local``),
            ``stripes`` (stripe indices the feature covers, empty for a G block), ``rows``
            (``[start, end)`` rows of the layer-4 map at :attr:`input_size`), ``map`` (that
            map's rows x columns) and ``dim`` (D).
        """
        strides = {name: s for name, _, s in self.branch_specs}
        counts = {name: n for name, n, _ in self.branch_specs}
        records = []
        for index, (branch, stripes) in enumerate(self._layout):
            h, w = (_map_size(s, strides[branch]) for s in self.input_size)
            if stripes:
                bins = stripe_rows(h, counts[branch], self.pooling)
                rows = (bins[stripes[0]][0], bins[stripes[-1]][1])
            else:
                rows = (0, h)
            records.append(
                {
                    "index": index,
                    "branch": branch,
                    "kind": "local" if stripes else "global",
                    "stripes": stripes,
                    "rows": rows,
                    "map": f"{h}x{w}",
                    "dim": self.embed_dim,
                }
            )
        return records


# --------------------------------------------------------------------------- builder

# name -> preset options. Every name but ``can`` fixes the branches (_BRANCH_OPTIONS).
_PRESETS: dict[str, dict[str, Any]] = {
    "can": {},
    "global": {"parts": ()},
    "mgn": {
        "parts": (2, 3),
        "collaborative": False,
        "pool_type": "max",
        "embedding": "mgn",
        "classifier": "linear",
        "global_stride": 2,
        "split": "layer3.1",
    },
}
_BRANCH_OPTIONS = frozenset({"parts", "collaborative", "global_branch"})
# Every keyword option of CANModel, read from its signature so the two cannot drift apart.
_OPTIONS: tuple[str, ...] = tuple(
    sorted(set(inspect.signature(CANModel.__init__).parameters) - {"self", "num_classes"})
)


def build_model(name: str, num_classes: int, **options: Any) -> CANModel:
    """Build a named model: ``can`` (the paper's), ``global`` ("part-1") or ``mgn`` (baseline).

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: training identities (classifier outputs).
        **options: keyword options of :class:`CANModel` overriding the preset. ``mgn`` presets
            ``parts=(2, 3)``, ``collaborative=False``, ``pool_type="max"``, ``embedding="mgn"``,
            ``classifier="linear"``, ``global_stride=2`` and ``split="layer3.1"`` (MGN's own
            design, MGN-pytorch ``model/mgn.py``); ``global`` is ``can`` with ``parts=()``.

    Raises:
        ConfigError: unknown name or option, an option the name fixes, or an invalid value.
    """
    check_model_name(name)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; valid: {', '.join(_OPTIONS)}")
    clash = sorted(set(options) & _BRANCH_OPTIONS) if name != "can" else []
    if clash:
        raise ConfigError(f"model {name!r} fixes {clash}; use name 'can' to change them")
    return CANModel(num_classes, **{**_PRESETS[name], **options})
