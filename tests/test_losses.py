"""Losses against plainly written references: loops over anchors, the formulas of section 3.3."""

import math

import pytest
import torch

from canlib.errors import ConfigError
from canlib.losses import (
    LOSS_MODES,
    CANLoss,
    CenterLoss,
    batch_hard_triplet_loss,
    cross_entropy_loss,
)


def _triplet_reference(x, pids, margin, squared, soft, total=False):
    """Brute force: every anchor, every positive and negative, Python loops, one feature."""
    x = x.tolist()
    terms = []
    n = len(pids)
    for a in range(n):
        pos = [p for p in range(n) if p != a and pids[p] == pids[a]]
        neg = [q for q in range(n) if pids[q] != pids[a]]
        if not pos or not neg:
            continue

        def d(i, j):
            s = sum((xi - xj) ** 2 for xi, xj in zip(x[i], x[j]))
            return s if squared else math.sqrt(s)

        d_ap = max(d(a, p) for p in pos)
        d_an = min(d(a, q) for q in neg)
        terms.append(math.log1p(math.exp(d_ap - d_an)) if soft else max(0.0, margin + d_ap - d_an))
    if total:
        return sum(terms)
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_triplet_matches_brute_force(squared, soft):
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        # 9 images, identities with 1 to 4 images (the singletons must be skipped).
        pids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])[torch.randperm(9, generator=g)]
        x = torch.randn(9, 5, generator=g, dtype=torch.float64)
        got = batch_hard_triplet_loss(x, pids, margin=0.3, squared=squared, soft_margin=soft)
        want = _triplet_reference(x, pids.tolist(), 0.3, squared, soft)
        assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_triplet_averages_over_features():
    g = torch.Generator().manual_seed(2)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    x = torch.randn(7, 3, 4, generator=g, dtype=torch.float64)
    want = sum(_triplet_reference(x[:, f], pids.tolist(), 1.0, False, False) for f in range(3)) / 3
    got = batch_hard_triplet_loss(x, pids, margin=1.0)
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_triplet_sum_is_equation_7_as_written():
    # Eq. (7): squared distances, summed over the anchors (per feature; features averaged).
    g = torch.Generator().manual_seed(3)
    pids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    x = torch.randn(8, 2, 4, generator=g, dtype=torch.float64)
    want = (
        sum(
            _triplet_reference(x[:, f], pids.tolist(), 0.3, True, False, total=True)
            for f in range(2)
        )
        / 2
    )
    got = batch_hard_triplet_loss(x, pids, margin=0.3, squared=True, reduction="sum")
    assert got.item() == pytest.approx(want, rel=1e-9)
    with pytest.raises(ConfigError, match="reduction must be one of"):
        batch_hard_triplet_loss(x, pids, reduction="max")


def test_triplet_without_valid_anchor_is_zero_and_differentiable():
    x = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet_loss(x, torch.tensor([0, 1, 2, 3]))  # all singletons
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # One identity only: positives but no negatives.
    assert batch_hard_triplet_loss(x.detach(), torch.tensor([5, 5, 5, 5])).item() == 0.0


def test_triplet_singleton_anchor_contributes_nothing():
    # 1-D points: ids 0 at {0, 1}, id 1 at {5}, singleton id 2 at {0.2} (close to everything).
    x = torch.tensor([[0.0], [1.0], [5.0], [0.2]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 2])
    # anchor 0: d_ap = 1, d_an = 0.2 -> 1.1 ; anchor 1: d_ap = 1, d_an = 0.8 -> 0.5 ; 2 and 3 skip
    got = batch_hard_triplet_loss(x, pids, margin=0.3)
    assert got.item() == pytest.approx((1.1 + 0.5) / 2)


def test_triplet_gradient_is_finite_with_duplicate_points():
    x = torch.zeros(4, 3, requires_grad=True)
    batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(x.grad).all()


def test_cross_entropy_is_mean_of_per_feature_cross_entropies():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 3, 1, 1, 2])
    want = 0.0
    for f in range(3):
        for b in range(5):
            row = logits[b, f]
            want += -(row[pids[b]] - torch.logsumexp(row, 0)).item()
    assert cross_entropy_loss(logits, pids).item() == pytest.approx(want / 15, rel=1e-9)


def test_cross_entropy_label_smoothing_formula():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]], dtype=torch.float64)
    pids = torch.tensor([0])
    logp = torch.log_softmax(logits[0, 0], 0)
    eps = 0.1
    # smoothed target: (1 - eps) on the true class plus eps / C on every class
    want = -((1 - eps) * logp[0] + eps / 3 * logp.sum()).item()
    got = cross_entropy_loss(logits, pids, label_smoothing=eps).item()
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("squared", [True, False])
def test_center_loss_formula(squared):
    loss = CenterLoss(num_classes=3, num_features=2, feat_dim=4, squared=squared, seed=0)
    x = torch.randn(5, 2, 4, dtype=torch.float32)
    pids = torch.tensor([2, 0, 0, 1, 2])
    c = loss.centers.detach()
    total = 0.0
    for b in range(5):
        for f in range(2):
            diff2 = sum((x[b, f, k] - c[f, pids[b], k]).item() ** 2 for k in range(4))
            total += 0.5 * (diff2 if squared else math.sqrt(diff2))
    assert loss(x, pids).item() == pytest.approx(total / 10, rel=1e-5)


def test_center_loss_seed_is_repeatable_and_leaves_global_rng():
    state = torch.get_rng_state()
    a = CenterLoss(4, 2, 3, seed=7).centers
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, CenterLoss(4, 2, 3, seed=7).centers)


def _outputs(b=8, f=4, d=6, c=5, seed=4):
    g = torch.Generator().manual_seed(seed)
    return {
        "features": torch.randn(b, f, d, generator=g, dtype=torch.float64),
        "bn_features": torch.randn(b, f, d, generator=g, dtype=torch.float64),
        "logits": torch.randn(b, f, c, generator=g, dtype=torch.float64),
    }


IS_GLOBAL = [True, False, True, False]  # features 0 and 2 are global


@pytest.mark.parametrize("mode", LOSS_MODES)
def test_canloss_switches_select_features(mode):
    out = _outputs()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    crit = CANLoss(5, 4, 6, IS_GLOBAL, mode=mode, margin=0.3, center_weight=0.01, seed=0).double()
    got = crit(out, pids)
    chosen = {
        "ce": [],
        "ce+triplet": [0, 2],
        "ce+triplet+center": [0, 2],
        "global+local": [0, 1, 2, 3],
        "mgn": [0, 2],
    }[mode]
    ce = cross_entropy_loss(out["logits"], pids)
    trip = 0.0
    if mode != "ce":
        trip = sum(
            _triplet_reference(out["features"][:, f], pids.tolist(), 0.3, False, False)
            for f in chosen
        ) / len(chosen)
    center = 0.0
    if "center" in mode or mode == "global+local":
        cen = crit.center.centers.detach()
        assert cen.shape == (len(chosen), 5, 6)  # one set of centres per selected feature
        for j, f in enumerate(chosen):
            for b in range(8):
                center += 0.5 * (out["features"][b, f] - cen[j, pids[b]]).pow(2).sum().item()
        center = 0.01 * center / (8 * len(chosen))
    else:
        assert crit.center is None and list(crit.parameters()) == []
    assert got["ce"].item() == pytest.approx(ce.item(), rel=1e-9)
    assert got["triplet"].item() == pytest.approx(trip, rel=1e-9, abs=1e-12)
    assert got["center"].item() == pytest.approx(center, rel=1e-9, abs=1e-12)
    assert got["total"].item() == pytest.approx(ce.item() + trip + center, rel=1e-9)


def test_canloss_global_modes_ignore_local_features():
    out = _outputs()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    crit = CANLoss(5, 4, 6, IS_GLOBAL, mode="ce+triplet+center", seed=0).double()
    before = crit(out, pids)
    out["features"][:, [1, 3]] += 100.0  # move only the local features
    after = crit(out, pids)
    assert after["triplet"].item() == pytest.approx(before["triplet"].item())
    assert after["center"].item() == pytest.approx(before["center"].item())


def test_canloss_centres_only_get_gradients_through_center_term():
    out = _outputs()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    crit = CANLoss(5, 4, 6, IS_GLOBAL, seed=0).double()
    crit(out, pids)["total"].backward()
    grad = crit.center.centers.grad
    # classes 0..4 all present: every selected feature's centres of seen classes move
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "triplet"}, "valid: ce, ce\\+triplet"),
        ({"is_global": [True]}, "is_global has 1 entries"),
        ({"is_global": [False] * 4, "mode": "ce+triplet"}, "has none"),
        ({"center_weight": -1.0}, "center_weight"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_canloss_rejects_bad_config(kwargs, match):
    args = {"num_classes": 5, "num_features": 4, "feat_dim": 6, "is_global": IS_GLOBAL, **kwargs}
    with pytest.raises(ConfigError, match=match):
        CANLoss(**args)


def _ce_reference(logits, pids):
    """-log softmax of the true class, one classifier, mean over the batch (Python loops)."""
    rows = logits.tolist()
    terms = []
    for row, y in zip(rows, pids):
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        terms.append(log_z - row[y])
    return sum(terms) / len(terms)


def test_mgn_loss_is_softmax_on_all_8_and_triplet_on_the_3_globals():
    # MGN-pytorch loss/__init__.py: the triplet term is the mean over outputs[1:4] (the 3
    # global reductions), the cross-entropy term the mean over outputs[4:] (the 8 classifiers'
    # logits); margin 1.2 (option.py); no center loss. canlib's MGN orders its 8 features
    # global, part_2 (global + 2 stripes), part_3 (global + 3 stripes).
    from canlib.model import build_model

    model = build_model(
        "mgn", 5, backbone="resnet18-quarter", pretrained=False, embed_dim=6, input_size=(96, 32)
    )
    assert model.is_global == [True, True, False, False, True, False, False, False]
    out = _outputs(b=8, f=8, d=6, c=5, seed=7)
    pids = [0, 0, 1, 1, 2, 2, 3, 3]
    crit = CANLoss(5, 8, 6, model.is_global, mode="mgn", margin=1.2).double()
    got = crit(out, torch.tensor(pids))
    ce = sum(_ce_reference(out["logits"][:, f], pids) for f in range(8)) / 8
    trip = (
        sum(_triplet_reference(out["features"][:, f], pids, 1.2, False, False) for f in (0, 1, 4))
        / 3
    )
    assert trip > 0  # the hinge is active: the check compares real values
    assert crit.center is None and list(crit.parameters()) == []
    assert got["ce"].item() == pytest.approx(ce, rel=1e-9)
    assert got["triplet"].item() == pytest.approx(trip, rel=1e-9)
    assert got["center"].item() == 0.0
    assert got["total"].item() == pytest.approx(ce + trip, rel=1e-9)
    # The local features (stripes) never reach the triplet term.
    out["features"][:, [2, 3, 5, 6, 7]] += 100.0
    assert crit(out, torch.tensor(pids))["triplet"].item() == pytest.approx(trip, rel=1e-9)
