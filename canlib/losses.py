"""The CAN training losses: cross-entropy, batch-hard triplet and center loss (section 3.3).

Paper: Li et al., "Collaborative Attention Network for Person Re-identification", equation (5):
``L = L_CE + L_Triplet + lambda * L_C`` with lambda = 0.0005 (section 4.6), and Table 4's switches
(which losses, and whether the clustering losses see the global features only or every feature).
Batch-hard triplet: Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification"
(arXiv:1703.07737). Center loss: Wen et al., "A Discriminative Feature Learning Approach for Deep
Face Recognition" (ECCV 2016), used for re-ID as in BoT (Luo et al., arXiv:1903.07071).
The ``mgn`` mode is the MGN baseline's own recipe: Wang et al., "Learning Discriminative Features
with Multiple Granularities for Person Re-Identification" (ACM MM 2018, arXiv:1804.01438), as
implemented by MGN-pytorch (github.com/seathiefwang/MGN-pytorch, ``loss/__init__.py`` and
``option.py``).

All losses read the model's train-mode output (see ``canlib.model``): ``features`` (B, F, D) for
the clustering losses, ``logits`` (B, F, C) for cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canlib.errors import ConfigError

# The loss modes, as mode -> (use triplet, use center, clustering losses on every feature (else
# global only)), are one table in canlib.rules, which canlib.config checks too.
from canlib.rules import LOSS_MODE_TERMS as _MODES
from canlib.rules import LOSS_MODES, check_loss_mode

__all__ = [
    "LOSS_MODES",
    "CANLoss",
    "CenterLoss",
    "batch_hard_triplet_loss",
    "cross_entropy_loss",
    "pairwise_distances",
]

TRIPLET_REDUCTIONS = ("mean", "sum")


def cross_entropy_loss(logits: Tensor, pids: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Equation (6) on each feature's logits, averaged over features and images.

    Args:
        logits: (B, F, C) per-feature class scores (or (B, C) for one feature).
        pids: (B,) integer identity labels in ``[0, C)``.
        label_smoothing: epsilon of label smoothing (ours, off by default as in the paper).

    Returns:
        scalar: mean over the F features of each feature's batch-mean cross-entropy (all
        features see the same B images, so this is the mean over all B x F terms).
    """
    if logits.dim() == 2:
        logits = logits[:, None]
    b, f, _ = logits.shape
    # cross_entropy takes (N, C, d) with targets (N, d): classes move to dim 1.
    return F.cross_entropy(
        logits.transpose(1, 2), pids[:, None].expand(b, f), label_smoothing=label_smoothing
    )


def pairwise_distances(x: Tensor, *, squared: bool = False) -> Tensor:
    """Euclidean distances between all rows, per feature.

    Args:
        x: (..., B, D) embeddings.
        squared: return squared distances (equation (7)'s form). Default False.

    Returns:
        (..., B, B) distances, clamped at 0 (and at 1e-12 before the square root, so the gradient
        stays finite at coincident points).
    """
    sq = x.pow(2).sum(-1)
    d2 = (sq[..., :, None] + sq[..., None, :] - 2 * x @ x.transpose(-1, -2)).clamp_min(0)
    return d2 if squared else d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet_loss(
    features: Tensor,
    pids: Tensor,
    *,
    margin: float = 0.3,
    squared: bool = False,
    soft_margin: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Batch-hard triplet loss (equations (7)-(8)), per feature, averaged over features.

    For each anchor, the hardest positive (farthest image of its identity, itself excluded) and
    the hardest negative (closest image of another identity) in the batch give
    ``[margin + d(a, p) - d(a, n)]_+`` (or ``softplus(d(a, p) - d(a, n))`` with ``soft_margin``).
    An anchor whose identity has no other image in the batch, or a batch with one identity, has no
    triplet and contributes nothing.

    Paper: squared Euclidean distances and a sum over anchors (eq. 7), margin not given.
    Ours: the default is ``squared=False, margin=0.3`` (BoT, fast-reid: margin 0.3 on plain
    distances; 0.3 on squared distances would be a different, scale-dependent constraint;
    MGN-pytorch uses plain distances with margin 1.2), and the mean over valid anchors instead of
    the sum, so the loss does not grow with the batch.

    Args:
        features: (B, D) or (B, F, D) embeddings (pre-BN features in CAN).
        pids: (B,) identity labels.
        margin: alpha in eq. (7). Default 0.3. Ignored with ``soft_margin``.
        squared: use squared distances as eq. (7) writes. Default False.
        soft_margin: ``log(1 + exp(d_ap - d_an))`` instead of the hinge (Hermans et al.).
        reduction: ``mean`` over valid anchors (default, ours) or ``sum`` (eq. 7 as written).

    Returns:
        scalar: mean over features of the mean (or sum) over valid anchors; 0 (still attached
        to the graph) when no anchor is valid.
    """
    if reduction not in TRIPLET_REDUCTIONS:
        raise ConfigError(f"reduction must be one of {TRIPLET_REDUCTIONS} (got {reduction!r})")
    x = features[:, None] if features.dim() == 2 else features
    dist = pairwise_distances(x.transpose(0, 1), squared=squared)  # (F, B, B)
    same = pids[:, None] == pids[None, :]
    not_self = ~torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos_mask = same & not_self
    neg_mask = ~same
    valid = pos_mask.any(1) & neg_mask.any(1)  # (B,)
    if not valid.any():
        return features.sum() * 0.0
    # Distances are >= 0, so masking with 0 (positives) / +inf (negatives) never wins by accident.
    d_ap = dist.masked_fill(~pos_mask, 0.0).amax(-1)  # (F, B)
    d_an = dist.masked_fill(~neg_mask, float("inf")).amin(-1)
    if soft_margin:
        per_anchor = F.softplus(d_ap - d_an)
    else:
        per_anchor = (margin + d_ap - d_an).clamp_min(0)
    kept = per_anchor[:, valid]
    return kept.mean() if reduction == "mean" else kept.sum(dim=1).mean()


class CenterLoss(nn.Module):
    """Center loss (equation (9)), one set of class centres per feature.

    ``L_C = mean_i 1/2 ||x_i - c_{y_i}||^2`` for each feature, averaged over the features.

    Paper: eq. (9) writes ``1/2 sum_i ||x_i - c_{y_i}||`` over the mini-batch. Ours: the squared
    norm of Wen et al.'s center loss (which eq. (9) cites, and which BoT uses; pass
    ``squared=False`` for the plain norm) and the mean over the batch instead of the sum, as BoT.

    Centres are plain ``nn.Parameter`` s, initialised from a standard normal (BoT). They are the
    only parameters of :class:`CANLoss`: give them to their own optimiser (BoT: SGD, lr 0.5, with
    their gradient divided by lambda before the step so lambda does not slow the centres), never
    to the model's optimiser and its weight decay.

    Args:
        num_classes: C, identities.
        num_features: F, feature sets that get their own centres.
        feat_dim: D, feature size.
        squared: squared Euclidean distance (Wen et al.). Default True.
        seed: if given, initialise the centres from this seed without touching the global RNG.
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int,
        feat_dim: int,
        *,
        squared: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.centers = nn.Parameter(
            torch.randn(num_features, num_classes, feat_dim, generator=generator)
        )
        self.squared = squared

    def forward(self, features: Tensor, pids: Tensor) -> Tensor:
        """Args: features (B, F, D) with F = ``num_features``; pids (B,). Returns a scalar."""
        centers = self.centers[:, pids].transpose(0, 1)  # (B, F, D)
        d2 = (features - centers).pow(2).sum(-1)
        dist = d2 if self.squared else d2.clamp_min(1e-12).sqrt()
        return 0.5 * dist.mean()


def _validate(
    num_classes: int,
    num_features: int,
    feat_dim: int,
    is_global: Sequence[bool],
    mode: str,
    center_weight: float,
) -> list[bool]:
    check_loss_mode(mode)
    for name, value in [
        ("num_classes", num_classes),
        ("num_features", num_features),
        ("feat_dim", feat_dim),
    ]:
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    flags = [bool(g) for g in is_global]
    if len(flags) != num_features:
        raise ConfigError(
            f"is_global has {len(flags)} entries but num_features={num_features}; pass the "
            f"model's is_global"
        )
    if _MODES[mode][0] and not _MODES[mode][2] and not any(flags):
        raise ConfigError(f"loss mode {mode!r} uses global features but is_global has none")
    if center_weight < 0:
        raise ConfigError(f"center_weight must be >= 0, got {center_weight}")
    return flags


class CANLoss(nn.Module):
    """Equation (5) with Table 4's switches: ``total = ce + triplet + center_weight * L_C``.

    Modes (Table 4): ``ce``; ``ce+triplet`` (triplet on the global features only, as in Tables
    2-3); ``ce+triplet+center`` (both clustering losses on the global features only); and
    ``global+local`` (both on every feature, the paper's best, the default). Cross-entropy always
    covers every feature's logits. The clustering losses see ``outputs["features"]`` (pre-BN) and
    are averaged over the selected features (as MGN averages its triplet terms).

    ``mgn`` is the MGN baseline's own recipe (module docstring; MGN-pytorch ``loss/__init__.py``):
    cross-entropy on all 8 features' logits averaged over the 8 classifiers, batch-hard triplet
    on the 3 global features averaged over them, no center loss, with MGN-pytorch's margin 1.2
    (``--margin``), which the MGN table rows set. On the MGN model it computes the same terms as
    ``ce+triplet``; the name says whose recipe a run follows.

    Args:
        num_classes: C, training identities.
        num_features: F, features per image (``model.num_features``).
        feat_dim: D, feature size (``model.embed_dim``).
        is_global: F bools (``model.is_global``).
        mode: one of :data:`LOSS_MODES`. Default ``global+local``.
        margin: triplet margin. Default 0.3 (ours, BoT; MGN-pytorch uses 1.2).
        center_weight: lambda. Default 5e-4 (paper section 4.6).
        squared: triplet on squared distances (eq. 7 literally). Default False (ours).
        soft_margin: soft-margin triplet. Default False.
        reduction: triplet ``mean`` over anchors (ours) or ``sum`` (eq. 7). Default ``mean``.
        label_smoothing: cross-entropy label smoothing. Default 0 (paper).
        seed: seed of the centres' initialisation (see :class:`CenterLoss`).
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int,
        feat_dim: int,
        is_global: Sequence[bool] | Tensor,
        mode: str = "global+local",
        margin: float = 0.3,
        center_weight: float = 5e-4,
        *,
        squared: bool = False,
        soft_margin: bool = False,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        flags = _validate(num_classes, num_features, feat_dim, is_global, mode, center_weight)
        self.mode = mode
        self.use_triplet, self.use_center, every_feature = _MODES[mode]
        self.margin = margin
        self.center_weight = center_weight
        self.squared = squared
        self.soft_margin = soft_margin
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        selected = [i for i, g in enumerate(flags) if g or every_feature]
        self.register_buffer("selected", torch.tensor(selected, dtype=torch.long), persistent=False)
        self.center = (
            CenterLoss(num_classes, len(selected), feat_dim, seed=seed) if self.use_center else None
        )

    def forward(self, outputs: dict[str, Tensor], pids: Tensor) -> dict[str, Tensor]:
        """Args: outputs, the model's train-mode dict; pids (B,) labels.

        Returns:
            dict of scalars ``total``, ``ce``, ``triplet``, ``center`` where ``center`` is already
            multiplied by ``center_weight``, so ``total = ce + triplet + center``; disabled terms
            are zeros.
        """
        ce = cross_entropy_loss(outputs["logits"], pids, label_smoothing=self.label_smoothing)
        zero = ce.new_zeros(())
        feats = outputs["features"].index_select(1, self.selected)
        triplet = (
            batch_hard_triplet_loss(
                feats,
                pids,
                margin=self.margin,
                squared=self.squared,
                soft_margin=self.soft_margin,
                reduction=self.reduction,
            )
            if self.use_triplet
            else zero
        )
        center = self.center_weight * self.center(feats, pids) if self.center is not None else zero
        return {"total": ce + triplet + center, "ce": ce, "triplet": triplet, "center": center}
