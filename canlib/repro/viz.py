"""Figures and small tables for the notebooks: data exploration, training curves, result bars,
feature-map overlays (the paper's Figure 4), Grad-CAM and ranked lists.

Every figure function returns a :class:`matplotlib.figure.Figure` that pyplot has already
closed (ours: a notebook cell whose last expression is the figure shows it exactly once, and a
loop of figures leaks nothing); nothing here calls ``plt.show``. Notebooks hold no logic:
everything they draw is computed here.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torch import Tensor, nn

from canlib import synthetic
from canlib.data.transforms import decode_image
from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError
from canlib.evaluate import ranked_gallery
from canlib.model import eval_mode, model_device
from canlib.repro import stats
from canlib.rules import JUNK_PID  # never a match, never shown in a ranked list
from canlib.synthetic import ACCESSORY_COLOURS

logger = logging.getLogger(__name__)

__all__ = [
    "SimilarityTarget",
    "activation_map",
    "branch_maps",
    "camera_grid",
    "claims_forest",
    "cmc_curve",
    "combine_maps",
    "family_grid",
    "feature_map_figure",
    "gradcam_figure",
    "gradcam_maps",
    "image_size_table",
    "images_per_id_plot",
    "junk_distractor_grid",
    "model_inputs",
    "overlay",
    "ranked_gallery",
    "ranked_list_grid",
    "save_figure",
    "seed_bars",
    "target_layers",
    "training_curves",
]

DISTRACTOR_PID = 0
"""Market-1501's distractor pid: an ordinary negative."""
HIT_COLOR = "green"
MISS_COLOR = "red"
PAPER_COLOR = "0.6"  # grey for the paper's effects in :func:`claims_forest`
OURS_COLOR = "tab:orange"
# Inches per image cell; person crops are about 2:1 (128x64, 384x128).
_CELL_W, _CELL_H = 1.1, 2.3

Record = tuple[str, int, int]


# --------------------------------------------------------------------------- helpers


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<name>.png`` (dpi 120) and ``<name>.pdf``.

    Args:
        fig: the figure.
        out_dir: folder, created if missing.
        name: file stem, without extension.

    Returns:
        The two paths written, PNG first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    logger.info("wrote %s", ", ".join(map(str, paths)))
    return paths


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout, made by pyplot but not kept in its registry.

    Made by pyplot for the current backend's canvas (in Jupyter the inline backend draws a
    returned figure); closed at once so pyplot neither shows it twice nor holds on to it.
    """
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _grid(rows: int, cols: int) -> tuple[Figure, np.ndarray]:
    """A figure with a ``rows x cols`` array of image axes."""
    fig = _new_figure((cols * _CELL_W, rows * _CELL_H))
    return fig, fig.subplots(rows, cols, squeeze=False)


def _load_rgb(path: str | Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 array (decoded as the loaders decode it)."""
    return decode_image(path).permute(1, 2, 0).numpy()


def model_inputs(
    paths: Sequence[str | Path], transform: Callable[[Tensor], Tensor]
) -> tuple[Tensor, list[np.ndarray]]:
    """Images as a model sees them and as a figure shows them (for notebook 06).

    Args:
        paths: N image files, e.g. ``[r[0] for r in data.query[:4]]``.
        transform: the test transform, e.g. ``canlib.data.transforms.build_test_transform(cfg)``
            ((3, H, W) uint8 -> normalised float).

    Returns:
        ``(images, raw_images)``: the (N, 3, H, W) normalised batch and the N decoded
        (H', W', 3) uint8 images, as :func:`feature_map_figure` and :func:`gradcam_figure`
        take them.
    """
    if not paths:
        raise ConfigError("paths is empty; expected at least one image file")
    decoded = [decode_image(p) for p in paths]
    images = torch.stack([transform(image) for image in decoded])
    return images, [image.permute(1, 2, 0).numpy() for image in decoded]


def _show(ax: Axes, image: np.ndarray | None, title: str = "", color: str | None = None) -> None:
    """Draw ``image`` without ticks; a coloured frame if ``color``; a blank cell if None."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is not None:
        ax.imshow(image)
    if title:
        ax.set_title(title, fontsize=7)
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_edgecolor(color)
            spine.set_linewidth(3)


def _sample(records: Sequence[Record], n: int, rng: np.random.Generator) -> list[Record]:
    """Up to ``n`` records drawn without replacement, kept in their original order."""
    if len(records) <= n:
        return list(records)
    return [records[i] for i in sorted(rng.choice(len(records), size=n, replace=False))]


def _fill_row(axes: Sequence[Axes], records: Sequence[Record], label: str) -> None:
    """Show ``records`` along a row of axes, blank cells after them; ``label`` on the left."""
    for ax, record in zip(axes, records):
        _show(ax, _load_rgb(record[0]), f"pid {record[1]} cam {record[2]}")
    for ax in axes[len(records) :]:
        _show(ax, None)
    axes[0].set_ylabel(label if records else f"{label}\n(none)", fontsize=8)


# --------------------------------------------------------------------------- data exploration


def images_per_id_plot(data: Any) -> Figure:
    """Histograms of images per identity, train and gallery side by side (notebook 01).

    Args:
        data: a dataset with ``.train`` and ``.gallery`` lists of ``(path, pid, camid)``
            (e.g. :class:`canlib.datasets.ReIDDataset`). Gallery junk and distractor images
            (``data.junk_pids``/``data.distractor_pids``, default -1 and 0) are not
            identities and are left out.

    Returns:
        A figure with two axes, train then gallery.
    """
    special = set(getattr(data, "junk_pids", (JUNK_PID,))) | set(
        getattr(data, "distractor_pids", (DISTRACTOR_PID,))
    )
    fig = _new_figure((9, 3.2))
    axes = fig.subplots(1, 2)
    for ax, split in zip(axes, ("train", "gallery")):
        pids = [r[1] for r in getattr(data, split)]
        if split != "train":  # train pids are relabelled: 0 is an ordinary class there
            pids = [p for p in pids if p not in special]
        counts = pd.Series(pids, dtype="int64").value_counts()
        if counts.empty:
            ax.text(0.5, 0.5, "no identities", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.histplot(x=counts.to_numpy(), discrete=True, ax=ax)
        ax.set(
            title=f"{split}: {len(counts)} ids", xlabel="images per identity", ylabel="identities"
        )
    return fig


def image_size_table(records: Sequence[Record], limit: int = 500) -> pd.DataFrame:
    """How many images have each (height, width), over an evenly spaced sample of ``records``.

    Only file headers are read (PIL opens lazily), so this is fast even on JPEGs.

    Args:
        records: ``(path, pid, camid)`` tuples.
        limit: at most this many images are read, evenly spaced over ``records`` (ours: a
            deterministic sample needs no seed). Default 500.

    Returns:
        DataFrame with columns ``height``, ``width``, ``images``, most frequent size first.
    """
    if limit < 1:
        raise ConfigError(f"limit must be a positive int, got {limit!r}")
    picks = np.unique(np.linspace(0, len(records) - 1, num=min(limit, len(records))).round())
    sizes = []
    for i in picks.astype(int):
        path = records[i][0]
        if not Path(path).is_file():
            raise DatasetNotFoundError(f"image {path} does not exist")
        try:
            with Image.open(path) as img:
                width, height = img.size
        except OSError as exc:
            raise DatasetError(f"image {path} could not be read ({exc})") from exc
        sizes.append((height, width))
    table = pd.DataFrame(sizes, columns=["height", "width"])
    table = table.value_counts().rename("images").reset_index()
    return table.sort_values(
        ["images", "height", "width"], ascending=[False, True, True], ignore_index=True
    )


def camera_grid(
    records: Sequence[Record],
    cameras: Sequence[int] | None = None,
    per_camera: int = 6,
    seed: int = 0,
) -> Figure:
    """Sample images per camera, one row per camera (notebook 01).

    Args:
        records: ``(path, pid, camid)`` tuples.
        cameras: camera ids (0-based) to show, in this order; default all, sorted.
        per_camera: images per row. Default 6.
        seed: seed of the draw. Default 0.

    Returns:
        A figure with ``len(cameras) x per_camera`` axes (cells left blank where a camera has
        fewer images).
    """
    present = sorted({r[2] for r in records})
    cameras = present if cameras is None else list(cameras)
    missing = sorted(set(cameras) - set(present))
    if missing or not cameras:
        raise ConfigError(f"cameras {missing or cameras} have no images; valid: {present}")
    if per_camera < 1:
        raise ConfigError(f"per_camera must be a positive int, got {per_camera!r}")
    rng = np.random.default_rng(seed)
    fig, axes = _grid(len(cameras), per_camera)
    for row, cam in zip(axes, cameras):
        chosen = _sample([r for r in records if r[2] == cam], per_camera, rng)
        _fill_row(row, chosen, f"camid {cam}")
    return fig


def junk_distractor_grid(
    gallery: Sequence[Record],
    n: int = 8,
    seed: int = 0,
    *,
    junk_pids: Sequence[int] = (JUNK_PID,),
    distractor_pids: Sequence[int] = (DISTRACTOR_PID,),
) -> Figure:
    """Junk images (top row) and distractors (bottom row) of a gallery (notebook 01).

    Args:
        gallery: ``(path, pid, camid)`` tuples.
        n: images per row. Default 8.
        seed: seed of the draw. Default 0.
        junk_pids: pids marking junk. Default ``(-1,)`` (Market-1501).
        distractor_pids: pids marking distractors. Default ``(0,)`` (Market-1501).

    Returns:
        A figure with ``2 x n`` axes.
    """
    if n < 1:
        raise ConfigError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    fig, axes = _grid(2, n)
    for row, pids, label in zip(axes, (junk_pids, distractor_pids), ("junk", "distractor")):
        _fill_row(row, _sample([r for r in gallery if r[1] in pids], n, rng), label)
    return fig


def family_grid(
    root_or_info: str | Path | Mapping[str, Any], families: int = 4, seed: int = 0
) -> Figure:
    """Look-alike families of the synthetic dataset side by side, like the paper's Figure 1.

    Each member is rendered by :func:`canlib.synthetic.render_person` in the same front view,
    pose, background and neutral camera (same ``seed``), so the only visible difference within
    a row is the family's distinguishing detail, which each title names.

    Args:
        root_or_info: a synthetic dataset root (its README.txt is read with
            :func:`canlib.synthetic.read_synthetic_info`) or that info dict.
        families: how many families to show (fewer if the dataset has fewer). Default 4.
        seed: seed of the family draw and of the shared pose. Default 0.

    Returns:
        A figure with ``families x (largest family size)`` axes, one row per family.
    """
    info = (
        dict(root_or_info)
        if isinstance(root_or_info, Mapping)
        else synthetic.read_synthetic_info(root_or_info)
    )
    if families < 1 or not info.get("families"):
        raise ConfigError(
            f"families must be >= 1 and the dataset must have families, got "
            f"families={families!r} and {len(info.get('families', []))} families"
        )
    rng = np.random.default_rng(seed)
    picks = sorted(
        rng.choice(len(info["families"]), size=min(families, len(info["families"])), replace=False)
    )
    size = (info["config"]["height"], info["config"]["width"])
    fig, axes = _grid(len(picks), max(len(info["families"][f]["pids"]) for f in picks))
    for row, f in zip(axes, picks):
        detail = info["families"][f]["detail"]
        members = synthetic.family_members(info, int(f))
        for ax, (pid, attrs) in zip(row, members):
            image = synthetic.render_person(attrs, None, seed, size=size, view="front")
            _show(ax, image, f"pid {pid}\n{detail}: {_detail_label(getattr(attrs, detail))}")
        for ax in row[len(members) :]:
            _show(ax, None)
        row[0].set_ylabel(f"family {info['families'][f]['family']}", fontsize=8)
    return fig


def _detail_label(value: Any) -> str:
    """A detail value in words: an accessory colour's name, ``none`` for absent, else str."""
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        names = {tuple(c): n for n, c in ACCESSORY_COLOURS.items()}
        return names.get(tuple(value), str(tuple(value)))
    return str(value)


# --------------------------------------------------------------------------- training


def training_curves(rows: Sequence[Mapping[str, Any]], stop_epoch: int | None = None) -> Figure:
    """Loss parts and test metrics over epochs, two panels (notebook 02).

    Args:
        rows: the rows of a run's ``metrics.jsonl`` (:func:`canlib.engine.read_log`): train rows
            (``kind == "train"``, one per logged step, with ``epoch`` and ``loss_*`` keys) and
            eval rows (``kind == "eval"``, with ``epoch``, ``mAP`` and ``rank1`` in percent).
            Train rows are averaged per epoch; a loss part that is missing or None in a row
            (e.g. ``loss_center`` when the center loss is off) is left out of that row.
        stop_epoch: draw a dashed line at this epoch (where the profile's run stops, for a
            run trained on past it).

    Returns:
        A figure with two axes: losses (one line per ``loss_*`` part), then mAP and rank-1.
    """
    train = pd.DataFrame([r for r in rows if r.get("kind") == "train"])
    evals = pd.DataFrame([r for r in rows if r.get("kind") == "eval"])
    if train.empty and evals.empty:
        raise ConfigError(
            "no train or eval rows to plot; expected metrics.jsonl rows with "
            "kind 'train' or 'eval' (is the run folder right?)"
        )
    fig = _new_figure((10, 3.5))
    ax_loss, ax_eval = fig.subplots(1, 2)
    parts = sorted(c for c in train.columns if c.startswith("loss_"))
    _epoch_lines(ax_loss, train, parts, "part", "loss")
    _epoch_lines(
        ax_eval, evals, [c for c in ("mAP", "rank1") if c in evals.columns], "metric", "percent"
    )
    ax_loss.set_title("training loss (mean per epoch)")
    ax_eval.set_title("test metrics")
    for ax in (ax_loss, ax_eval):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        if stop_epoch is not None:
            ax.axvline(stop_epoch, color="grey", linestyle="--", label="profile stops")
            legend = ax.get_legend()
            ax.legend(title=legend.get_title().get_text() if legend else None)
    return fig


def _epoch_lines(ax: Axes, table: pd.DataFrame, columns: list[str], hue: str, ylabel: str) -> None:
    """One line per column of ``table``, averaged per epoch; a note if there is nothing."""
    if table.empty or not columns:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        return
    means = table[["epoch", *columns]].apply(pd.to_numeric, errors="coerce").groupby("epoch").mean()
    for column in columns:  # one labelled line each, so a reader (and a test) can find it
        line = means[column].dropna()
        sns.lineplot(x=line.index.to_numpy(), y=line.to_numpy(), label=column, marker="o", ax=ax)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.legend(title=hue)


def cmc_curve(cmcs: Mapping[str, np.ndarray]) -> Figure:
    """CMC curves, one line per name.

    Args:
        cmcs: name -> (R,) matching rates as fractions in [0, 1] for ranks 1..R (the ``cmc`` of
            :func:`canlib.evaluate.evaluate_rank`).

    Returns:
        A figure with one axes (matching rate in percent against rank).
    """
    if not cmcs:
        raise ConfigError("cmcs is empty; expected a dict name -> (R,) CMC array")
    fig = _new_figure((5, 3.5))
    ax = fig.subplots()
    for name, cmc in cmcs.items():
        cmc = np.asarray(cmc, dtype=float)
        if cmc.ndim != 1 or not len(cmc) or np.any((cmc < 0) | (cmc > 1)) or np.isnan(cmc).any():
            raise ConfigError(
                f"CMC {name!r} must be a non-empty 1-D array of fractions in "
                f"[0, 1], got shape {cmc.shape}"
            )
        ax.plot(np.arange(1, len(cmc) + 1), 100 * cmc, marker=".", label=name)
    ax.set(xlabel="rank", ylabel="matching rate (%)", title="CMC")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- result tables


def seed_bars(
    per_row_seeds: Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str = "mAP",
    rows: Sequence[str] | None = None,
) -> Figure:
    """Our rows over seeds: the mean as a bar, its 95% interval as a whisker, each seed a dot.

    The paper's numbers are not drawn: on another dataset they are no yardstick for ours
    (the notebooks show them as a reference column, and compare *effects* in the claims).

    Args:
        per_row_seeds: row name -> one metrics dict per seed (percent), as
            :meth:`canlib.repro.notebook.NotebookRun.run_seeds` returns.
        metric: e.g. ``"mAP"``. Default ``"mAP"``.
        rows: the rows in order (default: those of ``per_row_seeds``); rows without runs
            are left out.

    Returns:
        A figure with one axes; the whisker is absent for a row with one seed.
    """
    names = [r for r in (rows or list(per_row_seeds)) if per_row_seeds.get(r)]
    if not names:
        raise ConfigError(f"nothing to draw: no row has runs (rows: {list(per_row_seeds)})")
    for name in names:
        if any(metric not in m for m in per_row_seeds[name]):
            raise ConfigError(f"row {name!r} has runs without {metric!r}")
    summary = {n: stats.summarize_seeds(per_row_seeds[n], (metric,))[metric] for n in names}
    fig = _new_figure((7, 0.45 * len(names) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(names))
    means = [summary[n]["mean"] for n in names]
    half = [
        (summary[n]["ci_high"] - summary[n]["ci_low"]) / 2 if summary[n]["n"] > 1 else 0.0
        for n in names
    ]
    ax.barh(y, means, color=OURS_COLOR, alpha=0.8, xerr=half, capsize=3)
    for i, name in enumerate(names):
        ax.plot(
            [m[metric] for m in per_row_seeds[name]],
            [i] * len(per_row_seeds[name]),
            "o",
            color="black",
            markersize=3,
        )
    ax.bar_label(ax.containers[-1], fmt="%.1f", fontsize=7, padding=8)
    ax.set(yticks=y, yticklabels=names, xlabel=f"{metric} (%), mean and 95% CI over seeds")
    ax.invert_yaxis()
    return fig


def claims_forest(claims: pd.DataFrame, label: str = "claim") -> Figure:
    """The paper's claims as a forest plot: our effect with its 95% interval per claim.

    Args:
        claims: a :func:`canlib.repro.stats.claims_table` frame (effects in the claim's unit), or
            the open choices (:meth:`canlib.repro.notebook.NotebookRun.open_choices`).
        label: the column that names each line. Default ``claim``.

    Returns:
        A figure with one axes: a dot and whisker per measured claim coloured by verdict
        (green holds, red contradicted, grey not established), the paper's effect as a
        grey cross where it gives one, and a line at zero.
    """
    if claims.empty:
        raise ConfigError("nothing to draw: the claims table is empty")
    colours = {"holds": HIT_COLOR, "contradicted": MISS_COLOR, "matters": "tab:blue"}
    fig = _new_figure((9, 0.6 * len(claims) + 1.4))
    ax = fig.subplots()
    for i, (_, row) in enumerate(claims.iterrows()):
        if not np.isnan(row["effect_mean"]):
            low, high = row["ci_low"], row["ci_high"]
            err = (
                None if np.isnan(low) else [[row["effect_mean"] - low], [high - row["effect_mean"]]]
            )
            ax.errorbar(
                row["effect_mean"],
                i,
                xerr=err,
                fmt="o",
                capsize=3,
                color=colours.get(row["verdict"], "0.4"),
            )
        if not np.isnan(row["paper_effect"]):
            ax.plot(row["paper_effect"], i, "x", color=PAPER_COLOR, markersize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    labels = [
        textwrap.fill(f"{c} [{v}]", 48)
        for c, v in zip(claims[label], claims["verdict"], strict=True)
    ]
    ax.set(
        yticks=range(len(claims)),
        yticklabels=labels,
        xlabel="effect: mAP points (body share: % points)\ndot: ours, 95% CI over seeds; "
        "cross: the paper",
    )
    ax.invert_yaxis()
    return fig


# --------------------------------------------------------------------- feature maps (Figure 4)


def _unit_range(x: Tensor) -> Tensor:
    """Min-max scale the last two dims of ``x`` to [0, 1]; a constant map becomes zeros."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(
        span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x)
    )


def activation_map(feature_map: Tensor) -> np.ndarray:
    """Where a layer fires: the channel-wise mean of absolute activations, scaled to [0, 1].

    Ours (the paper's Figure 4 does not say how it is drawn): the activation-based attention
    map of Zagoruyko & Komodakis (arXiv:1612.03928) with p = 1, which needs no gradient or
    class; min-max scaled per map, so maps of different models share one colour scale (a
    constant map gives zeros, never NaN).

    Args:
        feature_map: (C, h, w) activations.

    Returns:
        (h, w) float32 array in [0, 1].
    """
    if feature_map.ndim != 3:
        raise ConfigError(f"feature_map must be (C, h, w), got shape {tuple(feature_map.shape)}")
    return _unit_range(feature_map.detach().float().abs().mean(dim=0)).cpu().numpy()


def combine_maps(maps: Mapping[str, np.ndarray]) -> np.ndarray:
    """Average per-branch activation maps into one map per image.

    Branch maps can differ in size (MGN's global branch has stride 2), so each is resized
    bilinearly to the largest height and width among them, averaged, and scaled to [0, 1]
    again (ours: every branch counts equally, as every branch feeds the embedding).

    Args:
        maps: branch -> (N, h, w) maps in [0, 1] (:func:`branch_maps`).

    Returns:
        (N, H, W) float32 array in [0, 1], ``H``/``W`` the largest branch sizes.
    """
    if not maps:
        raise ConfigError("maps is empty; expected branch name -> (N, h, w) array")
    size = (max(m.shape[1] for m in maps.values()), max(m.shape[2] for m in maps.values()))
    resized = [_resize(torch.as_tensor(m, dtype=torch.float32), size) for m in maps.values()]
    return _unit_range(torch.stack(resized).mean(dim=0)).numpy()


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (N, h, w) maps to (N, *size) (half-pixel centres, no corner alignment)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 (0..255) or float (0..1) image as float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"image must be (H, W, 3), got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a heat map, coloured with jet, over an image.

    Args:
        image: (H, W, 3) uint8 (0..255) or float (0..1) RGB image.
        heat: (h, w) map in [0, 1] (values outside are clipped); upsampled bilinearly to
            (H, W).
        alpha: weight of the heat colours. Default 0.5.

    Returns:
        (H, W, 3) float32 RGB in [0, 1]: ``(1 - alpha) * image + alpha * jet(heat)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha!r}")
    base = _as_float_image(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ConfigError(f"heat must be (h, w), got shape {heat.shape}")
    up = _resize(torch.from_numpy(heat)[None], base.shape[:2])[0].clamp(0, 1).numpy()
    colours = matplotlib.colormaps["jet"](up)[..., :3].astype(np.float32)
    return (1.0 - alpha) * base + alpha * colours


@torch.no_grad()
def branch_maps(model: nn.Module, images: Tensor) -> dict[str, np.ndarray]:
    """Each branch's layer-4 activation map, per image.

    In eval mode (running batch-norm statistics: maps independent of the batch, no
    statistics updated); the model's mode is restored afterwards.

    Args:
        model: a :class:`canlib.model.CANModel` (anything with ``feature_maps(images)``
            returning branch -> (N, C, h, w)).
        images: (N, 3, H, W) normalised images.

    Returns:
        branch -> (N, h, w) float32 maps in [0, 1] (:func:`activation_map` of each image).
    """
    with eval_mode(model):
        maps = model.feature_maps(images.to(model_device(model)))
    return {name: np.stack([activation_map(m) for m in fmap]) for name, fmap in maps.items()}


def _check_raw(images: Tensor, raw_images: Sequence[np.ndarray]) -> None:
    if images.ndim != 4 or len(raw_images) != images.shape[0]:
        raise ConfigError(
            f"expected (N, 3, H, W) images and N raw images, got shape "
            f"{tuple(images.shape)} and {len(raw_images)} raw images"
        )


def _overlay_figure(columns: Mapping[str, np.ndarray], raw_images: Sequence[np.ndarray]) -> Figure:
    """Rows: images; columns: the raw image, then one overlay per entry of ``columns``."""
    fig, axes = _grid(len(raw_images), 1 + len(columns))
    for i, (row, raw) in enumerate(zip(axes, raw_images)):
        _show(row[0], raw, "image" if i == 0 else "")
        for ax, (name, heat) in zip(row[1:], columns.items()):
            _show(ax, overlay(raw, heat[i]), name if i == 0 else "")
    return fig


def feature_map_figure(
    models: Mapping[str, nn.Module], images: Tensor, raw_images: Sequence[np.ndarray]
) -> Figure:
    """The paper's Figure 4: layer-4 activation maps of several models over the same images.

    Each model's map is its branches' :func:`branch_maps` averaged by :func:`combine_maps`.

    Args:
        models: column title -> model, e.g. ``{"part-1,3,5,7 w/o CA": m1, "MGN": m2,
            "CAN": m3}``.
        images: (N, 3, H, W) normalised model inputs.
        raw_images: the same N images as (H', W', 3) arrays for display.

    Returns:
        A figure with ``N x (1 + len(models))`` axes: per row the image, then each model's
        overlay.
    """
    _check_raw(images, raw_images)
    heat = {name: combine_maps(branch_maps(model, images)) for name, model in models.items()}
    return _overlay_figure(heat, raw_images)


# --------------------------------------------------------------------------- Grad-CAM


class SimilarityTarget:
    """Grad-CAM target for an embedding model: cosine similarity to a reference embedding.

    Ours (grad-cam has no target for embeddings): ``pytorch_grad_cam`` back-propagates
    ``cos(output, reference)`` of one image's output ((D,) or (B, D)), so the map shows what
    makes the image look like the reference. The gradient vanishes at the maximum, so an
    image's own embedding is a useless reference: use another image of the same person.

    Args:
        reference_embedding: (D,) embedding.
    """

    def __init__(self, reference_embedding: Tensor) -> None:
        if reference_embedding.ndim != 1:
            raise ConfigError(
                f"reference_embedding must be (D,), got shape {tuple(reference_embedding.shape)}"
            )
        self.reference = reference_embedding.detach()

    def __call__(self, model_output: Tensor) -> Tensor:
        ref = self.reference.to(device=model_output.device, dtype=model_output.dtype)
        return F.cosine_similarity(model_output, ref.expand_as(model_output), dim=-1)


def target_layers(model: nn.Module, branches: Sequence[str] | None = None) -> list[nn.Module]:
    """The last residual block of each branch's layer4 in a :class:`canlib.model.CANModel`.

    ``model.branches[name]`` is the branch's layer4 (``split="layer4"``, CAN) or
    ``Sequential(rest of layer3, layer4)`` (``split="layer3.1"``, MGN); its last block is the
    last convolutional output before pooling, the usual Grad-CAM layer.

    Args:
        model: a CANModel.
        branches: branch names (``global``, ``part_3``, ...). Default: all, in model order.

    Returns:
        One module per branch.
    """
    names = list(model.branches) if branches is None else list(branches)
    unknown = sorted(set(names) - set(model.branches))
    if unknown or not names:
        raise ConfigError(f"unknown branches {unknown or names}; valid: {list(model.branches)}")
    layers = []
    for name in names:
        last = model.branches[name][-1]
        layers.append(last[-1] if isinstance(last, nn.Sequential) else last)
    return layers


def gradcam_maps(
    model: nn.Module,
    images: Tensor,
    references: Tensor,
    target_layer: nn.Module | Sequence[nn.Module],
) -> np.ndarray:
    """Grad-CAM of each image's similarity to its reference embedding.

    Uses ``pytorch_grad_cam.GradCAM`` (grad-cam 1.5) with a :class:`SimilarityTarget` per
    image, in eval mode; the model's mode is restored and its parameter gradients cleared
    afterwards. Several target layers' maps are averaged (each scaled to [0, 1] first).

    Args:
        model: returns (N, D) embeddings in eval mode (a CANModel without ``flip_test``: a
            flip-averaged embedding runs each layer twice, which Grad-CAM cannot attribute).
        images: (N, 3, H, W) normalised images.
        references: (N, D) reference embeddings, one per image (see :class:`SimilarityTarget`
            for why not the image's own).
        target_layer: a module or list of modules, e.g. :func:`target_layers` of the model.

    Returns:
        (N, H, W) float32 maps in [0, 1], at the input size.
    """
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError as exc:  # optional: part of the "notebooks" extra
        raise ImportError(
            "Grad-CAM needs the grad-cam package: pip install 'canlib[notebooks]'"
        ) from exc
    if getattr(model, "flip_test", False):
        raise ConfigError("gradcam_maps needs a model with flip_test=False")
    if references.ndim != 2 or references.shape[0] != images.shape[0]:
        raise ConfigError(
            f"references must be (N, D) with N = {images.shape[0]} images, got "
            f"shape {tuple(references.shape)}"
        )
    layers = [target_layer] if isinstance(target_layer, nn.Module) else list(target_layer)
    with eval_mode(model), torch.enable_grad():
        cam = GradCAM(model=model, target_layers=layers)
        try:
            maps = cam(
                input_tensor=images.to(model_device(model)),
                targets=[SimilarityTarget(r) for r in references],
            )
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)  # the backward pass left gradients on the weights
    return np.asarray(maps, dtype=np.float32)


@torch.no_grad()
def _embed(model: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode embeddings of ``images``, the model's mode restored afterwards."""
    with eval_mode(model):
        return model(images.to(model_device(model)))


def gradcam_figure(
    models: Mapping[str, nn.Module],
    images: Tensor,
    reference_images: Tensor,
    raw_images: Sequence[np.ndarray],
    branches: Sequence[str] | None = None,
) -> Figure:
    """Grad-CAM overlays of several models: what makes each image match its reference.

    For every model, image ``i``'s target is the cosine similarity of its embedding to the
    embedding of ``reference_images[i]`` (e.g. a query and its true match in the gallery),
    back-propagated to the last block of the branches' layer4 (:func:`target_layers`).

    Args:
        models: column title -> CANModel.
        images: (N, 3, H, W) normalised images to explain.
        reference_images: (N, 3, H, W) normalised reference images, one per image.
        raw_images: the N images to explain as (H, W, 3) arrays for display (same size as
            ``images`` so the map lines up).
        branches: branch names for :func:`target_layers`; default all (maps averaged).

    Returns:
        A figure with ``N x (1 + len(models))`` axes.
    """
    _check_raw(images, raw_images)
    if reference_images.shape != images.shape:
        raise ConfigError(
            f"reference_images must match images' shape {tuple(images.shape)}, "
            f"got {tuple(reference_images.shape)}"
        )
    heat = {
        name: gradcam_maps(
            model, images, _embed(model, reference_images), target_layers(model, branches)
        )
        for name, model in models.items()
    }
    return _overlay_figure(heat, raw_images)


# --------------------------------------------------------------------------- ranked lists


def ranked_list_grid(
    distmat: np.ndarray,
    query_records: Sequence[Record],
    gallery_records: Sequence[Record],
    q_index: Sequence[int],
    topk: int = 10,
) -> Figure:
    """Per row a query and its top-k gallery images: green frame for a hit, red for a miss.

    Args:
        distmat: (Q, G) query-gallery distances.
        query_records, gallery_records: ``(path, pid, camid)`` tuples, Q and G of them.
        q_index: the queries to show (row order).
        topk: gallery images per row (:func:`ranked_gallery`). Default 10.

    Returns:
        A figure with ``len(q_index) x (1 + topk)`` axes.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query_records), len(gallery_records)):
        raise ConfigError(
            f"distmat must be (Q, G) = ({len(query_records)}, "
            f"{len(gallery_records)}), got shape {distmat.shape}"
        )
    bad = [i for i in q_index if not 0 <= i < len(query_records)]
    if bad or not len(q_index) or topk < 1:
        raise ConfigError(
            f"q_index must be non-empty indices in [0, {len(query_records)}) and "
            f"topk >= 1, got bad indices {bad} and topk={topk}"
        )
    g_pids = np.array([r[1] for r in gallery_records])
    g_cams = np.array([r[2] for r in gallery_records])
    fig, axes = _grid(len(q_index), 1 + topk)
    for row, qi in zip(axes, q_index):
        path, q_pid, q_cam = query_records[qi]
        _show(row[0], _load_rgb(path), f"query\npid {q_pid} cam {q_cam}")
        ranked = ranked_gallery(distmat[qi], q_pid, q_cam, g_pids, g_cams, topk)
        for rank, (ax, (gi, hit)) in enumerate(zip(row[1:], ranked), start=1):
            _show(
                ax,
                _load_rgb(gallery_records[gi][0]),
                f"{rank}: pid {g_pids[gi]}",
                HIT_COLOR if hit else MISS_COLOR,
            )
        for ax in row[1 + len(ranked) :]:
            _show(ax, None)
    return fig
