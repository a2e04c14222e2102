"""Tests of canlib.repro.viz: every figure on tiny inputs, the pure helpers on worked values."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from canlib.errors import ConfigError, DatasetNotFoundError
from canlib.model import build_model
from canlib.repro import viz

INPUT = (144, 48)


# --------------------------------------------------------------------------- fixtures


def write_image(path: Path, value: int, size: tuple[int, int] = (16, 8)) -> str:
    """A (height, width) = ``size`` image whose every pixel is (value, value, value)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return str(path)


def make_records(root: Path, specs: list[tuple[int, int]], start: int = 0) -> list[tuple]:
    """Records ``(path, pid, camid)``; image ``i`` has grey level ``start + i``."""
    return [
        (write_image(root / f"{start + i:03d}.png", start + i), pid, cam)
        for i, (pid, cam) in enumerate(specs)
    ]


def shown_value(ax) -> int:
    """The grey level of the image drawn in ``ax`` (fixture images are uniform)."""
    return int(np.asarray(ax.images[0].get_array())[0, 0, 0])


@pytest.fixture(scope="module")
def can_model():
    torch.manual_seed(0)
    return build_model("can", 5, backbone="resnet18-quarter", input_size=INPUT)


@pytest.fixture(scope="module")
def mgn_model():
    torch.manual_seed(1)
    return build_model("mgn", 5, backbone="resnet18-quarter", input_size=INPUT)


# --------------------------------------------------------------------------- saving


def test_save_figure_writes_png_and_pdf(tmp_path: Path) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    paths = viz.save_figure(fig, tmp_path / "figs", "curve")
    assert paths == [tmp_path / "figs" / "curve.png", tmp_path / "figs" / "curve.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


# --------------------------------------------------------------------------- data exploration


def test_images_per_id_plot_counts_identities_without_junk_and_distractors() -> None:
    # train: pids 0,1,2 have 2 images each, pid 3 has 1 -> histogram {1: 1 id, 2: 3 ids}.
    train = [("x", p, 0) for p in (0, 0, 1, 1, 2, 2, 3)]
    # gallery: pid 7 x3, pid 8 x1; junk (-1) and distractors (0) are not identities.
    gallery = [("x", p, 0) for p in (7, 7, 7, 8, -1, -1, 0)]
    data = SimpleNamespace(train=train, gallery=gallery, junk_pids=(-1,), distractor_pids=(0,))
    fig = viz.images_per_id_plot(data)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax_train, ax_gallery = fig.axes
    assert ax_train.get_title() == "train: 4 ids" and ax_gallery.get_title() == "gallery: 2 ids"
    bars = sorted((p.get_x() + p.get_width() / 2, p.get_height()) for p in ax_train.patches)
    assert bars == [(1.0, 1.0), (2.0, 3.0)]
    bars = sorted((p.get_x() + p.get_width() / 2, p.get_height()) for p in ax_gallery.patches)
    assert [b for b in bars if b[1]] == [(1.0, 1.0), (3.0, 1.0)]


def test_image_size_table_counts_sizes(tmp_path: Path) -> None:
    records = [(write_image(tmp_path / f"{i}.png", 0, (20, 10)), 1, 0) for i in range(3)]
    records.append((write_image(tmp_path / "big.png", 0, (30, 12)), 2, 0))
    table = viz.image_size_table(records)
    assert table.to_dict("records") == [
        {"height": 20, "width": 10, "images": 3},
        {"height": 30, "width": 12, "images": 1},
    ]
    # limit=2 reads the first and the last record (evenly spaced): one of each size.
    assert viz.image_size_table(records, limit=2)["images"].tolist() == [1, 1]
    with pytest.raises(DatasetNotFoundError, match="nope.png"):
        viz.image_size_table([(str(tmp_path / "nope.png"), 1, 0)])


def test_camera_grid_one_row_per_camera(tmp_path: Path) -> None:
    # camera 0: images 0..3, camera 2: images 4..5.
    records = make_records(tmp_path, [(1, 0), (2, 0), (3, 0), (4, 0), (1, 2), (2, 2)])
    fig = viz.camera_grid(records, per_camera=3, seed=0)
    assert len(fig.axes) == 2 * 3
    rows = np.array(fig.axes).reshape(2, 3)
    assert all(shown_value(ax) in (0, 1, 2, 3) for ax in rows[0])
    assert len({shown_value(ax) for ax in rows[0]}) == 3  # drawn without replacement
    assert [shown_value(ax) for ax in rows[1][:2]] == [4, 5] and not rows[1][2].images
    again = viz.camera_grid(records, per_camera=3, seed=0)
    assert [shown_value(ax) for ax in again.axes[:3]] == [shown_value(ax) for ax in rows[0]]
    assert len(viz.camera_grid(records, cameras=[2], per_camera=2).axes) == 2
    with pytest.raises(ConfigError, match=r"\[5\].*valid: \[0, 2\]"):
        viz.camera_grid(records, cameras=[5])


def test_junk_distractor_grid_rows(tmp_path: Path) -> None:
    gallery = make_records(tmp_path, [(-1, 0), (5, 0), (0, 1), (-1, 1), (0, 2), (0, 3)])
    fig = viz.junk_distractor_grid(gallery, n=3)
    assert len(fig.axes) == 2 * 3
    junk_row, distractor_row = np.array(fig.axes).reshape(2, 3)
    assert [shown_value(ax) for ax in junk_row[:2]] == [0, 3] and not junk_row[2].images
    assert [shown_value(ax) for ax in distractor_row] == [2, 4, 5]


def test_family_grid_names_the_detail(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("canlib.synthetic")
    root = synthetic.generate_synthetic(tmp_path / "syn", synthetic.SIZES["smoke"])
    info = synthetic.read_synthetic_info(root)
    per_family = info["config"]["ids_per_family"]
    fig = viz.family_grid(root, families=3, seed=0)
    assert len(fig.axes) == 3 * per_family
    for row in np.array(fig.axes).reshape(3, per_family):
        titles = [ax.get_title() for ax in row]
        family = next(f for f in info["families"] if f["pids"][0] == int(titles[0].split()[1]))
        assert all(f"\n{family['detail']}: " in t for t in titles)
        assert len({t.split("\n")[1] for t in titles}) == per_family  # members' values differ
    assert len(viz.family_grid(info, families=1).axes) == per_family


# --------------------------------------------------------------------------- training


def test_training_curves_average_per_epoch() -> None:
    rows = [
        {"kind": "train", "epoch": 1, "step": 1, "loss_total": 2.0, "loss_ce": 1.0},
        {"kind": "train", "epoch": 1, "step": 2, "loss_total": 4.0, "loss_ce": 2.0},
        {"kind": "train", "epoch": 2, "step": 3, "loss_total": 1.0, "loss_ce": 0.5},
        {"kind": "eval", "epoch": 2, "mAP": 50.0, "rank1": 70.0, "rank5": 80.0},
    ]
    fig = viz.training_curves(rows)
    assert len(fig.axes) == 2
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    # epoch 1: mean(2, 4) = 3 and mean(1, 2) = 1.5; epoch 2: 1 and 0.5.
    assert lines["loss_total"].get_xdata().tolist() == [1, 2]
    assert lines["loss_total"].get_ydata().tolist() == [3.0, 1.0]
    assert lines["loss_ce"].get_ydata().tolist() == [1.5, 0.5]
    assert lines["mAP"].get_ydata().tolist() == [50.0] and "rank5" not in lines
    with pytest.raises(ConfigError, match="no train or eval rows"):
        viz.training_curves([])


def test_training_curves_mark_where_the_profile_stops_and_tick_whole_epochs() -> None:
    rows = [{"kind": "eval", "epoch": e, "mAP": 80.0 + e, "rank1": 90.0} for e in (1, 2, 3, 4)]
    fig = viz.training_curves(rows, stop_epoch=2)
    ax_eval = fig.axes[1]
    stops = [line for line in ax_eval.get_lines() if line.get_label() == "profile stops"]
    assert len(stops) == 1 and list(stops[0].get_xdata()) == [2, 2]
    ax_eval.figure.canvas.draw()
    ticks = [t for t in ax_eval.get_xticks() if 1 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no half epochs
    assert ax_eval.get_legend().get_title().get_text() == "metric"
    assert not [
        line
        for line in viz.training_curves(rows).axes[1].get_lines()
        if line.get_label() == "profile stops"
    ]


def test_cmc_curve() -> None:
    fig = viz.cmc_curve({"a": np.array([0.5, 0.75, 1.0]), "b": [0.25, 0.5]})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.number not in plt.get_fignums()  # closed: shown once in Jupyter, never leaked
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["a"].get_xdata().tolist() == [1, 2, 3]
    assert lines["a"].get_ydata().tolist() == [50.0, 75.0, 100.0]
    with pytest.raises(ConfigError, match="fractions"):
        viz.cmc_curve({"bad": [50.0, 90.0]})  # percent, not fractions


# --------------------------------------------------------------------------- tables


def test_seed_bars_draw_mean_interval_and_each_seed() -> None:
    # Row a: seeds 10 and 20 -> mean 15, sd 7.0711, t(0.975, 1) = 12.7062 -> half-width
    # 12.7062 * 7.0711 / sqrt(2) = 63.531. Row b: one seed, 40 -> no whisker.
    per_row = {"a": [{"mAP": 10.0}, {"mAP": 20.0}], "b": [{"mAP": 40.0}], "c": []}
    fig = viz.seed_bars(per_row, "mAP")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [round(p.get_width(), 6) for p in ax.patches] == [15.0, 40.0]
    bars = next(c for c in ax.containers if hasattr(c, "errorbar"))
    whisker = bars.errorbar.lines[2][0].get_segments()
    assert whisker[0][:, 0].tolist() == pytest.approx([15 - 63.531, 15 + 63.531], abs=1e-3)
    assert whisker[1][:, 0].tolist() == [40.0, 40.0]
    dots = sorted(
        x for line in ax.get_lines() if line.get_marker() == "o" for x in line.get_xdata()
    )
    assert dots == [10.0, 20.0, 40.0]
    with pytest.raises(ConfigError, match="without 'rank1'"):
        viz.seed_bars(per_row, "rank1")
    with pytest.raises(ConfigError, match="no row has runs"):
        viz.seed_bars({"c": []})


def test_claims_forest_colours_by_verdict_and_marks_the_paper() -> None:
    claims = pd.DataFrame(
        [
            {
                "claim": "x",
                "table": "T",
                "paper_effect": 2.5,
                "direction": "+",
                "effect_mean": 1.0,
                "ci_low": 0.5,
                "ci_high": 1.5,
                "n_seeds": 3,
                "verdict": "holds",
            },
            {
                "claim": "y",
                "table": "T",
                "paper_effect": float("nan"),
                "direction": "+",
                "effect_mean": -2.0,
                "ci_low": -3.0,
                "ci_high": -1.0,
                "n_seeds": 3,
                "verdict": "contradicted",
            },
            {
                "claim": "z",
                "table": "T",
                "paper_effect": 1.0,
                "direction": "+",
                "effect_mean": float("nan"),
                "ci_low": float("nan"),
                "ci_high": float("nan"),
                "n_seeds": 0,
                "verdict": "not measured",
            },
        ]
    )
    fig = viz.claims_forest(claims)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "x [holds]",
        "y [contradicted]",
        "z [not measured]",
    ]
    dots = [
        (line.get_xdata()[0], line.get_ydata()[0], to_rgba(line.get_color()))
        for line in ax.get_lines()
        if line.get_marker() == "o"
    ]
    assert dots == [(1.0, 0, to_rgba(viz.HIT_COLOR)), (-2.0, 1, to_rgba(viz.MISS_COLOR))]
    crosses = [
        (line.get_xdata()[0], line.get_ydata()[0])
        for line in ax.get_lines()
        if line.get_marker() == "x"
    ]
    assert crosses == [(2.5, 0), (1.0, 2)]
    with pytest.raises(ConfigError, match="empty"):
        viz.claims_forest(claims.iloc[:0])


# --------------------------------------------------------------------------- maps


def test_activation_map_scaling_by_hand() -> None:
    fmap = torch.tensor([[[0.0, 1.0, 2.0]], [[0.0, -1.0, -2.0]]])  # |.| mean: [0, 1, 2]
    np.testing.assert_allclose(viz.activation_map(fmap), [[0.0, 0.5, 1.0]])
    # min-max, not divide-by-max: [1, 2, 3] -> [0, 0.5, 1].
    np.testing.assert_allclose(
        viz.activation_map(torch.tensor([[[1.0, 2.0, 3.0]]])), [[0.0, 0.5, 1.0]]
    )
    flat = viz.activation_map(torch.full((4, 2, 3), 7.0))
    assert flat.shape == (2, 3) and not np.isnan(flat).any() and (flat == 0).all()
    with pytest.raises(ConfigError, match=r"\(C, h, w\)"):
        viz.activation_map(torch.zeros(2, 3))


def test_combine_maps_resizes_averages_and_rescales() -> None:
    a = np.array([[[0.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    b = np.array([[[1.0]]])  # (1, 1, 1): bilinearly resized to 2x2 it stays all ones
    # mean [[.5, .5], [.5, 1]] -> min-max [[0, 0], [0, 1]]
    np.testing.assert_allclose(viz.combine_maps({"a": a, "b": b}), [[[0.0, 0.0], [0.0, 1.0]]])
    c = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    # mean of a and c: [[.5, 0], [0, .5]] -> [[1, 0], [0, 1]]
    np.testing.assert_allclose(viz.combine_maps({"a": a, "c": c}), [[[1.0, 0.0], [0.0, 1.0]]])


def test_overlay_shape_and_blend() -> None:
    image = np.full((4, 4, 3), 255, np.uint8)
    heat = np.array([[0.0, 1.0]])  # (1, 2)
    out = viz.overlay(image, heat, alpha=0.0)
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0)
    # Half-pixel bilinear upsampling of [0, 1] to 4 columns: [0, 0.25, 0.75, 1] in every row.
    jet = matplotlib.colormaps["jet"](np.array([0.0, 0.25, 0.75, 1.0]))[:, :3]
    full = viz.overlay(image, heat, alpha=1.0)
    np.testing.assert_allclose(full, np.broadcast_to(jet, (4, 4, 3)), atol=1e-6)
    half = viz.overlay(np.zeros((4, 4, 3)), heat, alpha=0.5)  # float image, black
    np.testing.assert_allclose(half, 0.5 * np.broadcast_to(jet, (4, 4, 3)), atol=1e-6)
    with pytest.raises(ConfigError, match="alpha"):
        viz.overlay(image, heat, alpha=2.0)


def test_branch_maps_and_feature_map_figure(can_model, mgn_model) -> None:
    images = torch.randn(2, 3, *INPUT)
    can_model.train()
    maps = viz.branch_maps(can_model, images)
    assert can_model.training  # mode restored
    assert list(maps) == ["global", "part_3", "part_5", "part_7"]
    for m in maps.values():  # layer 4 at stride 16: 144x48 -> 9x3
        assert m.shape == (2, 9, 3) and m.min() >= 0 and m.max() <= 1
    mgn = viz.branch_maps(mgn_model, images)
    assert mgn["global"].shape == (2, 5, 2) and mgn["part_2"].shape == (2, 9, 3)  # stride 2 vs 1
    raw = [np.zeros((*INPUT, 3), np.uint8)] * 2
    fig = viz.feature_map_figure({"MGN": mgn_model, "CAN": can_model}, images, raw)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "MGN", "CAN"]
    with pytest.raises(ConfigError, match="raw images"):
        viz.feature_map_figure({"CAN": can_model}, images, raw[:1])


def test_model_inputs_normalise_and_keep_raw(tmp_path: Path) -> None:
    from canlib.data.transforms import TransformConfig, build_test_transform

    cfg = TransformConfig(height=32, width=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    paths = [write_image(tmp_path / "a.png", 51), write_image(tmp_path / "b.png", 204)]
    images, raw = viz.model_inputs(paths, build_test_transform(cfg))
    assert images.shape == (2, 3, 32, 16)
    # 51/255 = 0.2 -> (0.2 - 0.5) / 0.25 = -1.2; 204/255 = 0.8 -> 1.2 (uniform, so no resize
    # effect).
    np.testing.assert_allclose(images[0].numpy(), -1.2, atol=1e-5)
    np.testing.assert_allclose(images[1].numpy(), 1.2, atol=1e-5)
    assert raw[0].shape == (16, 8, 3) and raw[0].dtype == np.uint8 and (raw[1] == 204).all()


# --------------------------------------------------------------------------- Grad-CAM


def test_similarity_target() -> None:
    e = torch.tensor([3.0, 4.0, 0.0])
    assert viz.SimilarityTarget(e)(e).item() == pytest.approx(1.0)
    assert viz.SimilarityTarget(e)(torch.tensor([-4.0, 3.0, 0.0])).item() == pytest.approx(0.0)
    batch = viz.SimilarityTarget(e)(torch.stack([e, -e]))
    np.testing.assert_allclose(batch.numpy(), [1.0, -1.0], atol=1e-6)


def test_target_layers_are_last_layer4_blocks(can_model, mgn_model) -> None:
    layers = viz.target_layers(can_model)
    assert [id(m) for m in layers] == [id(can_model.branches[n][-1]) for n in can_model.branches]
    # MGN's branches are Sequential(rest of layer3, layer4).
    assert viz.target_layers(mgn_model, ["part_3"])[0] is mgn_model.branches["part_3"][-1][-1]
    with pytest.raises(ConfigError, match="valid"):
        viz.target_layers(can_model, ["part_9"])


def test_gradcam_maps_finite_at_input_size(can_model) -> None:
    pytest.importorskip("pytorch_grad_cam")
    images = torch.randn(2, 3, *INPUT)
    with torch.no_grad():
        can_model.eval()
        refs = can_model(torch.randn(2, 3, *INPUT))
    can_model.train()
    maps = viz.gradcam_maps(can_model, images, refs, viz.target_layers(can_model, ["global"]))
    assert can_model.training  # GradCAM forces eval; restored
    assert maps.shape == (2, *INPUT) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    with pytest.raises(ConfigError, match=r"\(N, D\)"):
        viz.gradcam_maps(can_model, images, refs[:1], viz.target_layers(can_model))


def test_gradcam_figure(can_model) -> None:
    pytest.importorskip("pytorch_grad_cam")
    images = torch.randn(2, 3, *INPUT)
    raw = [np.zeros((*INPUT, 3), np.uint8)] * 2
    fig = viz.gradcam_figure({"CAN": can_model}, images, torch.randn(2, 3, *INPUT), raw)
    assert len(fig.axes) == 2 * 2


# --------------------------------------------------------------------------- ranked lists


def test_ranked_gallery_by_hand() -> None:
    d = np.array([0.5, 0.1, 0.3, 0.2, 0.1, 0.4])
    g_pids = np.array([1, 1, 2, -1, 1, 0])
    g_cams = np.array([0, 0, 1, 1, 1, 0])
    # Query pid 1, cam 0: items 0 and 1 share pid and camera (removed), 3 is junk (removed).
    # Left: 4 (0.1, hit), 2 (0.3, miss), 5 (0.4, distractor: miss).
    assert viz.ranked_gallery(d, 1, 0, g_pids, g_cams, topk=10) == [
        (4, True),
        (2, False),
        (5, False),
    ]
    assert viz.ranked_gallery(d, 1, 0, g_pids, g_cams, topk=2) == [(4, True), (2, False)]
    # Ties are broken by gallery order; a query from camera 1 keeps items 0 and 1 but not 4.
    assert viz.ranked_gallery(d, 1, 1, g_pids, g_cams, topk=3) == [
        (1, True),
        (2, False),
        (5, False),
    ]


def test_ranked_list_grid_images_and_colours(tmp_path: Path) -> None:
    query = make_records(tmp_path / "q", [(1, 0), (2, 1)], start=100)
    gallery = make_records(tmp_path / "g", [(1, 1), (2, 0), (1, 0), (-1, 1), (2, 1)])
    distmat = np.array(
        [
            [0.3, 0.1, 0.0, 0.2, 0.9],  # drop 2 (same pid+cam), 3 (junk): 1 miss, 0 hit, 4 miss
            [0.5, 0.4, 0.3, 0.0, 0.1],  # drop 4 (same pid+cam), 3 (junk): 2 miss, 1 hit, 0 miss
        ]
    )
    fig = viz.ranked_list_grid(distmat, query, gallery, [1, 0], topk=2)
    assert len(fig.axes) == 2 * 3
    rows = np.array(fig.axes).reshape(2, 3)
    assert [shown_value(ax) for ax in rows[0]] == [101, 2, 1]
    assert [shown_value(ax) for ax in rows[1]] == [100, 1, 0]
    frames = [[to_rgba(ax.spines["top"].get_edgecolor()) for ax in row[1:]] for row in rows]
    red, green = to_rgba(viz.MISS_COLOR), to_rgba(viz.HIT_COLOR)
    assert frames == [[red, green], [red, green]]
    assert not any(s.get_visible() for s in rows[0][0].spines.values())  # no frame on the query
    with pytest.raises(ConfigError, match="distmat"):
        viz.ranked_list_grid(distmat[:, :3], query, gallery, [0])
