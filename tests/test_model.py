"""CAN model: layout, pooling rules, collaborative attention, branch independence, contract.

Reference values are worked out by hand in comments or by plain loops written here; tiny
backbones (``resnet18-quarter``, 16 stem channels) keep everything but two checks fast.
"""

import math

import pytest
import torch
import torchvision

from canlib.errors import CheckpointError, ConfigError
from canlib.losses import CANLoss
from canlib.model import (
    build_model,
    build_resnet,
    eval_mode,
    model_device,
    stripe_pool,
    stripe_rows,
    trunk_state_dict,
)

TINY = {"backbone": "resnet18-quarter", "pretrained": False}

# Table 2 / Table 3 patterns -> (global features, local with CA, local without CA), by hand:
# global features = the global branch + one G block per part branch;
# local with CA = sum(n - 1), local without CA = sum(n).
PATTERNS = {
    (): (1, 0, 0),
    (2, 3): (3, 1 + 2, 2 + 3),
    (2, 3, 4): (4, 1 + 2 + 3, 2 + 3 + 4),
    (3, 5): (3, 2 + 4, 3 + 5),
    (3, 5, 7): (4, 2 + 4 + 6, 3 + 5 + 7),
    (3, 5, 7, 9): (5, 2 + 4 + 6 + 8, 3 + 5 + 7 + 9),
}


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("parts", list(PATTERNS))
@pytest.mark.parametrize("collaborative", [True, False])
def test_feature_counts_and_shapes(parts, collaborative):
    n_global, local_ca, local_plain = PATTERNS[parts]
    n_local = local_ca if collaborative else local_plain
    # 144 rows -> 9-row layer-4 maps, enough for 9 stripes
    model = build_model(
        "can",
        7,
        parts=parts,
        collaborative=collaborative,
        embed_dim=16,
        input_size=(144, 48),
        **TINY,
    )
    assert model.num_features == n_global + n_local
    assert sum(model.is_global) == n_global
    assert model.embed_dim == 16
    x = torch.randn(2, 3, 144, 48)
    out = model(x)
    assert set(out) == {"features", "bn_features", "logits"}
    assert out["features"].shape == (2, n_global + n_local, 16)
    assert out["bn_features"].shape == (2, n_global + n_local, 16)
    assert out["logits"].shape == (2, n_global + n_local, 7)
    model.eval()
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (2, (n_global + n_local) * 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_paper_model_has_sixteen_features():
    model = build_model("can", 5, **TINY)
    # 4 global + 12 local (the sentence under equation 4)
    assert model.num_features == 16 and sum(model.is_global) == 4
    assert model.in_dim == 2 * 128  # concat of max and avg over 128 layer-4 channels


def _adaptive_rows(height, n):
    """torch's adaptive pooling bins, written out: [floor(i*H/n), ceil((i+1)*H/n))."""
    return [(math.floor(i * height / n), math.ceil((i + 1) * height / n)) for i in range(n)]


def _eq1_rows(height, n):
    """Equation (1): stride = floor(IS/OS), kernel = IS - (OS-1)*stride, no padding."""
    stride = height // n
    kernel = height - (n - 1) * stride
    return [(i * stride, i * stride + kernel) for i in range(n)]


def _reference_pool(x, rows):
    """Max and average over each row range (full width), concatenated: (B, 2C, n)."""
    cols = []
    for start, end in rows:
        window = x[:, :, start:end, :]
        cols.append(torch.cat([window.amax(dim=(2, 3)), window.mean(dim=(2, 3))], dim=1))
    return torch.stack(cols, dim=2)


def test_stripe_rows_by_hand():
    assert stripe_rows(24, 5, "eq1") == [(0, 8), (4, 12), (8, 16), (12, 20), (16, 24)]
    assert stripe_rows(24, 7, "eq1") == [
        (0, 6),
        (3, 9),
        (6, 12),
        (9, 15),
        (12, 18),
        (15, 21),
        (18, 24),
    ]
    assert stripe_rows(24, 5, "adaptive") == [(0, 5), (4, 10), (9, 15), (14, 20), (19, 24)]
    assert (
        stripe_rows(24, 3, "adaptive") == stripe_rows(24, 3, "eq1") == [(0, 8), (8, 16), (16, 24)]
    )


@pytest.mark.parametrize("n", range(1, 25))
def test_stripe_pool_matches_both_definitions(n):
    x = torch.randn(2, 3, 24, 8, dtype=torch.float64)
    eq1 = stripe_pool(x, n, "eq1", "concat")
    adaptive = stripe_pool(x, n, "adaptive", "concat")
    torch.testing.assert_close(eq1, _reference_pool(x, _eq1_rows(24, n)))
    torch.testing.assert_close(adaptive, _reference_pool(x, _adaptive_rows(24, n)))
    # ... and the bin rule written out is torch's own adaptive pooling
    torch_adaptive = torch.cat(
        [
            torch.nn.functional.adaptive_max_pool2d(x, (n, 1)),
            torch.nn.functional.adaptive_avg_pool2d(x, (n, 1)),
        ],
        dim=1,
    ).flatten(2)
    torch.testing.assert_close(adaptive, torch_adaptive)
    if 24 % n == 0:
        torch.testing.assert_close(eq1, adaptive)
    elif n in (5, 7, 9):
        assert not torch.allclose(eq1, adaptive)
    # max-only / avg-only are the two halves of concat
    torch.testing.assert_close(stripe_pool(x, n, "adaptive", "max"), adaptive[:, :3])
    torch.testing.assert_close(stripe_pool(x, n, "adaptive", "avg"), adaptive[:, 3:])


@pytest.mark.parametrize("pooling, rows_of", [("adaptive", _adaptive_rows), ("eq1", _eq1_rows)])
@pytest.mark.parametrize("collaborative", [True, False])
def test_pooled_features_collaborative_attention(pooling, rows_of, collaborative):
    model = build_model(
        "can",
        3,
        parts=(3, 5),
        collaborative=collaborative,
        pooling=pooling,
        input_size=(160, 64),
        **TINY,
    ).eval()
    x = torch.randn(2, 3, 160, 64)
    with torch.no_grad():
        maps = model.feature_maps(x)
        got = model.pooled_features(maps)
    expected = []
    for name, n in [("global", 0), ("part_3", 3), ("part_5", 5)]:
        m = maps[name]
        h = m.shape[2]  # 10 rows
        expected.append(_reference_pool(m, [(0, h)])[:, :, 0])
        if n:
            stripes = _reference_pool(m, rows_of(h, n))
            if collaborative:  # max over the concatenated pair = element-wise max
                expected += [
                    torch.maximum(stripes[:, :, k], stripes[:, :, k + 1]) for k in range(n - 1)
                ]
            else:
                expected += [stripes[:, :, k] for k in range(n)]
    torch.testing.assert_close(got, torch.stack(expected, dim=1))


def test_layer4_copies_start_equal_and_train_independently():
    model = build_model("can", 3, parts=(3, 5), input_size=(96, 32), **TINY)
    names = list(model.branches)
    assert names == ["global", "part_3", "part_5"]
    params = {n: list(model.branches[n].parameters()) for n in names}
    for a, b in zip(params["global"], params["part_5"]):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    before = {n: [p.detach().clone() for p in ps] for n, ps in params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.feature_maps(torch.randn(2, 3, 96, 32))["part_3"].pow(2).mean().backward()
    opt.step()
    for n in names:
        changed = any(not torch.equal(p, q) for p, q in zip(params[n], before[n]))
        assert changed == (n == "part_3"), n


def test_resnet50_maps_and_parameter_count():
    model = build_model("can", 751, seed=0).eval()
    with torch.no_grad():
        maps = model.feature_maps(torch.randn(1, 3, 384, 128))
    assert {n: tuple(m.shape) for n, m in maps.items()} == {
        n: (1, 2048, 24, 8) for n in ["global", "part_3", "part_5", "part_7"]
    }
    # The same count from torchvision's ResNet-50 pieces: trunk up to layer3, 4 layer4 copies,
    # the shared 1x1 conv 4096 -> 256 (no bias), 16 BNs of 256 (weight + bias),
    # 16 cosine classifiers 256 x 751 (no bias).
    r50 = torchvision.models.resnet50()
    trunk = sum(_n_params(getattr(r50, k)) for k in ["conv1", "bn1", "layer1", "layer2", "layer3"])
    without_cls = trunk + 4 * _n_params(r50.layer4) + 4096 * 256 + 16 * 2 * 256
    expected = without_cls + 16 * 256 * 751
    assert _n_params(model) == expected
    # REFERENCES.md: 72.5 M with 751-class classifiers, 69.5 M without
    assert round(expected / 1e6, 1) == 72.5 and round(without_cls / 1e6, 1) == 69.5


def test_mgn_layout_strides_and_parameter_count():
    model = build_model("mgn", 10, backbone="resnet18-half").eval()
    with torch.no_grad():
        maps = model.feature_maps(torch.randn(1, 3, 384, 128))
    # MGN keeps stride 2 in the global branch: 12x4; part branches 24x8; half-width R18 -> 256 ch
    assert {n: tuple(m.shape) for n, m in maps.items()} == {
        "global": (1, 256, 12, 4),
        "part_2": (1, 256, 24, 8),
        "part_3": (1, 256, 24, 8),
    }
    # 3 global + 2 + 3 local = 8 features; max pooling only -> 256-channel reductions
    assert model.num_features == 8 and sum(model.is_global) == 3
    assert model.in_dim == 256
    # Count with ResNet-50 from torchvision's pieces: MGN forks after layer3[0], each of the 3
    # branches copies layer3[1:] and layer4; 8 reductions (conv 2048->256, BN 256),
    # 8 linear classifiers 256 -> C with bias.
    mgn50 = build_model("mgn", 751)
    r50 = torchvision.models.resnet50()
    trunk = sum(_n_params(getattr(r50, k)) for k in ["conv1", "bn1", "layer1", "layer2"])
    trunk += _n_params(r50.layer3[0])
    branch = _n_params(r50.layer3) - _n_params(r50.layer3[0]) + _n_params(r50.layer4)
    expected = trunk + 3 * branch + 8 * (2048 * 256 + 2 * 256) + 8 * (256 * 751 + 751)
    assert _n_params(mgn50) == expected


def test_eval_embedding_options():
    model = build_model("can", 4, parts=(2,), input_size=(64, 32), embed_dim=8, **TINY).eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        pre, bn = model.embedding(model.pooled_features(model.feature_maps(x)))
        _, bn_f = model.embedding(model.pooled_features(model.feature_maps(x.flip(3))))
        norm = torch.nn.functional.normalize
        torch.testing.assert_close(model(x), norm(bn.flatten(1), dim=1))
        model.test_features = "pre_bn"
        torch.testing.assert_close(model(x), norm(pre.flatten(1), dim=1))
        model.test_features = "bn"
        model.flip_test = True
        torch.testing.assert_close(model(x), norm((bn + bn_f).flatten(1), dim=1))


def test_cosine_classifier_logits_are_scaled_cosines():
    model = build_model("can", 6, parts=(2,), input_size=(64, 32), scale=10.0, **TINY)
    out = model(torch.randn(2, 3, 64, 32))
    w = model.classifier.weight  # (F, C, D)
    f = out["bn_features"]
    cos = torch.stack(
        [
            torch.stack(
                [
                    torch.nn.functional.cosine_similarity(f[b, k][None], w[k], dim=1)
                    for k in range(f.shape[1])
                ]
            )
            for b in range(2)
        ]
    )
    torch.testing.assert_close(out["logits"], 10.0 * cos)


def test_global_model_and_no_classifier():
    model = build_model("global", 0, input_size=(64, 32), **TINY)
    out = model(torch.randn(2, 3, 64, 32))
    assert model.num_features == 1 and model.is_global == [True]
    assert out["logits"].shape == (2, 1, 0)


def test_describe_layout():
    model = build_model("can", 3, **TINY)
    records = model.describe()
    assert [r["kind"] == "global" for r in records] == model.is_global
    assert [r["index"] for r in records] == list(range(16))
    part3 = [r for r in records if r["branch"] == "part_3"]
    # 24 rows in 3 bins of 8; CA pairs cover rows 0-16 and 8-24
    assert [(r["stripes"], r["rows"]) for r in part3] == [
        ((), (0, 24)),
        ((0, 1), (0, 16)),
        ((1, 2), (8, 24)),
    ]
    eq1 = build_model("can", 3, pooling="eq1", **TINY).describe()
    # eq. (1) for 5 stripes: windows [0,8), [4,12), ...; the first CA pair covers rows 0-12
    assert [r["rows"] for r in eq1 if r["branch"] == "part_5"][1] == (0, 12)


def test_seed_gives_identical_models_without_touching_global_rng():
    state = torch.get_rng_state()
    a = build_model("can", 3, parts=(2,), seed=5, **TINY)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_model("can", 3, parts=(2,), seed=5, **TINY)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_pretrained_from_local_file(tmp_path):
    source = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    model = build_model("can", 3, parts=(2,), backbone="resnet18", pretrained=str(path))
    torch.testing.assert_close(model.stem[0].weight, source.conv1.weight, rtol=0, atol=0)
    for branch in model.branches.values():
        for p, q in zip(branch.parameters(), source.layer4.parameters()):
            assert torch.equal(p, q)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="do not fit resnet18"):
        build_model("can", 3, backbone="resnet18", pretrained=str(bad))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("can", 3, backbone="resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_pretrained_file_saved_from_data_parallel_loads_the_same(tmp_path):
    """``DataParallel``/DDP prefix every key with ``module.``, and a training checkpoint may
    wrap the weights under ``state_dict``: both load as the plain torchvision file does."""
    source = torchvision.models.resnet18()
    wrapped = torch.nn.DataParallel(source).state_dict()
    assert all(k.startswith("module.") for k in wrapped)
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": wrapped, "epoch": 90}, path)
    net = build_resnet("resnet18", pretrained=str(path))
    for (name, p), q in zip(net.named_parameters(), source.parameters()):
        if not name.startswith("fc."):
            assert torch.equal(p, q), name
    # A prefix on some keys only is not a wrapper: refused, naming the odd keys.
    mixed = {
        ("module." + k if k.startswith("conv1") else k): v for k, v in source.state_dict().items()
    }
    torch.save(mixed, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="unexpected \\['module.conv1.weight'\\]"):
        build_resnet("resnet18", pretrained=str(tmp_path / "mixed.pth"))


def test_pretrained_offline_says_where_to_put_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match=r"resnet18-f37072fd\.pth in .*checkpoints"):
        build_model("can", 3, backbone="resnet18", pretrained=True)


def test_training_overfits_one_pk_batch():
    torch.manual_seed(0)
    model = build_model("can", 4, parts=(2, 3), input_size=(64, 32), embed_dim=32, seed=0, **TINY)
    crit = CANLoss(4, model.num_features, model.embed_dim, model.is_global, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    center_opt = torch.optim.SGD(crit.parameters(), lr=0.5)
    x = torch.randn(16, 3, 64, 32)
    pids = torch.arange(4).repeat_interleave(4)  # P x K = 4 x 4
    losses = []
    for _ in range(30):
        total = crit(model(x), pids)["total"]
        opt.zero_grad()
        center_opt.zero_grad()
        total.backward()
        opt.step()
        center_opt.step()
        losses.append(total.item())
    assert losses[-1] < losses[0] / 10


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("pcb", {}, "valid: can, global, mgn"),
        ("can", {"stripes": 3}, "unknown model option"),
        ("mgn", {"parts": (3,)}, "fixes"),
        ("can", {"parts": (5, 3)}, "sorted"),
        ("can", {"parts": (3, 3)}, "unique"),
        ("can", {"parts": (1, 3)}, ">= 2"),
        ("can", {"parts": (3.0,)}, "tuple of ints"),
        ("can", {"parts": (3, 5, 7, 9), "input_size": (128, 64)}, "only 8 rows"),
        ("can", {"backbone": "vgg16"}, "valid: resnet18"),
        ("can", {"backbone": "resnet18-half", "pretrained": True}, "full-width"),
        ("can", {"pooling": "avg"}, "valid: adaptive, eq1"),
        ("can", {"pool_type": "sum"}, "valid: concat, max, avg"),
        ("can", {"parts": (), "global_branch": False}, "needs a branch"),
    ],
)
def test_bad_options_raise_config_error(name, options, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name, 3, **{**TINY, **options})


def test_too_small_input_at_forward_is_a_clear_error():
    model = build_model("can", 3, parts=(3, 5, 7), **TINY)
    with pytest.raises(
        ConfigError, match="branch part_5 needs >= 5 rows but the layer-4 map has 4"
    ):
        model(torch.randn(2, 3, 64, 32))


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_classifier_logits_stay_fp32_under_bf16_autocast(kind):
    """Under autocast the logits are computed in fp32 from the (bf16) features, by hand here."""
    from canlib.model import _Classifiers

    torch.manual_seed(0)
    head = _Classifiers(kind, num_features=3, num_classes=7, embed_dim=16, scale=16.0)
    x = torch.randn(5, 3, 16).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x)
    assert logits.dtype == torch.float32
    xf, w = x.float(), head.weight.detach()
    for f in range(3):
        if kind == "cosine":
            expected = (
                16.0
                * (xf[:, f] / xf[:, f].norm(dim=1, keepdim=True))
                @ (w[f] / w[f].norm(dim=1, keepdim=True)).T
            )
        else:
            expected = xf[:, f] @ w[f].T + head.bias.detach()[f]
        torch.testing.assert_close(logits[:, f], expected, rtol=1e-5, atol=1e-5)


def test_without_embedding_bn_every_loss_and_the_test_embedding_see_the_conv_output():
    with_bn = build_model("can", 4, parts=(3,), input_size=(96, 32), seed=0, **TINY)
    without = build_model("can", 4, parts=(3,), input_size=(96, 32), seed=0, embed_bn=False, **TINY)
    # The only parameters removed are the BN's weight and bias: F * D each (F = 1 + 1 + 2).
    removed = sum(p.numel() for p in with_bn.parameters()) - sum(
        p.numel() for p in without.parameters()
    )
    assert removed == 2 * 4 * without.embed_dim
    x = torch.randn(4, 3, 96, 32)
    out = without.train()(x)
    torch.testing.assert_close(out["features"], out["bn_features"])
    without.eval()
    with torch.no_grad():
        emb = without(x)
        feats, _ = without._embed(x)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(feats.flatten(1), dim=1))


@pytest.mark.parametrize("name", ["can", "global", "mgn"])
def test_trunk_of_a_model_loads_into_a_narrow_resnet(tmp_path, name):
    model = build_model(name, 3, seed=1, **TINY)
    model.stem[1].running_mean.fill_(0.5)  # buffers travel too
    path = tmp_path / "trunk.pth"
    torch.save(trunk_state_dict(model), path)
    net = build_resnet("resnet18-quarter", pretrained=str(path))
    first = next(iter(model.branches.values()))
    assert torch.equal(net.conv1.weight, model.stem[0].weight)
    assert torch.equal(net.bn1.running_mean, torch.full_like(net.bn1.running_mean, 0.5))
    layer4 = first[1] if name == "mgn" else first
    for p, q in zip(net.layer4.state_dict().values(), layer4.state_dict().values()):
        assert torch.equal(p, q)
    if name == "mgn":  # layer3 is split between the stem (block 0) and each branch
        assert torch.equal(net.layer3[0].conv1.weight, model.stem[6].conv1.weight)
        assert torch.equal(net.layer3[1].conv1.weight, first[0][0].conv1.weight)
    # a CAN built on the file starts every branch from that layer4
    can = build_model("can", 3, parts=(2,), backbone="resnet18-quarter", pretrained=str(path))
    for branch in can.branches.values():
        for p, q in zip(branch.parameters(), net.layer4.parameters()):
            assert torch.equal(p, q)
    with pytest.raises(ConfigError, match="full-width"):
        build_resnet("resnet18-quarter", pretrained=True)


def test_the_builders_tables_cover_the_rules_names():
    from canlib import model, rules

    assert set(model._PRESETS) == set(rules.MODEL_NAMES)
    assert set(model._RESNETS) == set(rules.RESNETS)


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode_even_when_the_body_fails(training):
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.Dropout())
    net.train(training)
    with eval_mode(net):
        assert not net.training and not net[0].training and not net[1].training
    assert net.training is training and net[0].training is training
    with pytest.raises(KeyboardInterrupt), eval_mode(net):
        raise KeyboardInterrupt
    assert net.training is training and net[1].training is training


def test_model_device_is_the_first_parameters_device_and_cpu_without_parameters():
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2).to("meta")) == torch.device("meta")
