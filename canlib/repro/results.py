"""Run folders, cached runs, side-by-side tables and manifests.

A table row is trained once per config: :func:`run_experiment` keys the run folder by the
config's hash, returns the stored metrics of a finished run, resumes an interrupted one
and trains a missing one. :func:`run_seeds` does so once per seed (``train.seed + i`` for
``i < train.seeds``). Tables show, over seeds, the mean and its 95% interval next to the
paper's number as a reference (:func:`seeds_table`; never a paper-minus-ours column, which
means nothing off the paper's dataset); they are written as CSV and Markdown.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from canlib import checkpoint
from canlib.config import SYNTHETIC_TRUNK, ExperimentConfig
from canlib.engine import build_data, evaluate_model, load_trained_model, resolve_device, train
from canlib.errors import ConfigError
from canlib.repro import stats
from canlib.repro.paper import paper_rows

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_experiment(
    cfg: ExperimentConfig, runs_root: str | Path, *, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Metrics of ``cfg``: reused when finished, resumed when interrupted, else trained.

    Args:
        cfg: the experiment.
        runs_root: folder holding one sub-folder per run.
        force: retrain from scratch even when a finished run exists (the old folder is
            renamed ``<folder>.old-<timestamp>``, never deleted).
        progress: show tqdm bars.

    Returns:
        The run's summary (metrics in percent, wall time, speed, memory) plus ``run_dir``
        and ``reused`` (True when nothing was trained).
    """
    # Keyed by the config's hash, not its name: the same model under two names (Table 3's
    # "part-1,3,5,7 with CA" is Table 4's "CAN + CE + Triplet") is trained once and shared.
    run_dir = Path(runs_root) / cfg.config_hash()
    summary_path = run_dir / "summary.json"
    if force and run_dir.exists():
        backup = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(backup)
        log.info("force: moved the previous run to %s", backup)
    reused = summary_path.exists()
    if reused:
        metrics = json.loads(summary_path.read_text())
    else:
        # An existing folder is an interrupted run: resume it (from scratch if it died
        # before its first checkpoint).
        metrics = train(cfg, run_dir, resume=run_dir.exists(), progress=progress).metrics
    return {
        **metrics,
        "run_dir": str(run_dir),
        "checkpoint": str(final_checkpoint(run_dir)),
        "reused": reused,
    }


def seed_configs(cfg: ExperimentConfig, seeds: int | None = None) -> list[ExperimentConfig]:
    """The configs of a row's seeds: ``train.seed + i`` for ``i`` in ``range(seeds)``.

    Args:
        cfg: the row's config; its ``train.seed`` is the first seed.
        seeds: how many; default ``cfg.train.seeds`` (the profile's count).

    Returns:
        ``seeds`` configs, equal but for ``train.seed``; the first is ``cfg`` itself, so the
        single run of a one-seed study is reused by a study of several.
    """
    count = cfg.train.seeds if seeds is None else seeds
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"seeds must be a positive integer (got {count!r})")
    return [replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + i)) for i in range(count)]


def run_seeds(
    cfg: ExperimentConfig,
    runs_root: str | Path,
    seeds: int | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Metrics of one table row per seed, each reused, resumed or trained by run_experiment.

    Args:
        cfg: the row's config; seed i runs with ``train.seed = cfg.train.seed + i``.
        runs_root, force, progress: as for :func:`run_experiment`.
        seeds: how many seeds; default ``cfg.train.seeds``.

    Returns:
        One dict per seed, in seed order: :func:`run_experiment`'s summary (metrics in
        percent) plus ``seed``, the ``train.seed`` it ran with (what
        :mod:`canlib.repro.stats` pairs rows by).
    """
    return [
        {**run_experiment(one, runs_root, force=force, progress=progress), "seed": one.train.seed}
        for one in seed_configs(cfg, seeds)
    ]


def score_checkpoint(path: str | Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """Metrics of a checkpoint trained elsewhere, on the dataset named by ``cfg``.

    The model (architecture, input size) comes from the checkpoint's own config; only the
    dataset and the evaluation settings come from ``cfg``.
    """
    device = resolve_device(cfg.train.device)
    model, trained = load_trained_model(path, device=device)
    dataset = ("dataset", "data_root", "synthetic_size", "cuhk03_subset")
    eval_cfg = trained.with_overrides({f"data.{k}": getattr(cfg.data, k) for k in dataset})
    eval_cfg = replace(eval_cfg, eval=cfg.eval)
    metrics = evaluate_model(model, build_data(eval_cfg), eval_cfg, device=device)
    return {**metrics, "run_dir": str(Path(path).parent), "checkpoint": str(path), "reused": True}


def final_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint file of a finished run (what later notebooks reuse)."""
    files = checkpoint.list_checkpoints(Path(run_dir))
    if not files:
        raise ConfigError(f"run folder {run_dir} has no checkpoint; train it first")
    return files[-1]


def seeds_table(
    per_row_seeds: Mapping[str, Sequence[Mapping[str, Any]]],
    paper_table: str | None = None,
    *,
    metrics: tuple[str, ...] = ("mAP", "rank1"),
    rows: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean and 95% interval over seeds, one row per table row, the paper's number beside it.

    Args:
        per_row_seeds: row name -> one metrics dict per seed (:func:`run_seeds`), percent.
        paper_table: ``table2`` .. ``table6`` of :mod:`canlib.repro.paper` for the reference
            column, or None for none.
        metrics: the metrics to show.
        rows: the rows in order (default: those of ``per_row_seeds``); a row without runs
            is shown with empty cells.

    Returns:
        Index ``row``; columns ``seeds``, then per metric ``<m> mean`` (one decimal),
        ``<m> ci`` (``"±x.x"``, the interval's half-width; ``"n/a (1 seed)"`` with one
        seed) and ``<m> paper``.
    """
    reference = {r["row"]: r for r in paper_rows(paper_table)} if paper_table else {}
    out = []
    for name in rows or list(per_row_seeds):
        per_seed = per_row_seeds.get(name, [])
        summary = stats.summarize_seeds(per_seed, metrics)
        line: dict[str, Any] = {"row": name, "seeds": len(per_seed)}
        for col in metrics:
            s = summary[col]
            line[f"{col} mean"] = None if s["n"] == 0 else round(s["mean"], 1)
            line[f"{col} ci"] = stats.format_half_width(s)
            line[f"{col} paper"] = reference.get(name, {}).get(col)
        out.append(line)
    return pd.DataFrame(out).set_index("row")


# Effects are written to 3 decimals, one row per claim or choice (no index column).
_EFFECT_CSV = {"index": False, "float_format": "%.3f"}


def save_claims(table: pd.DataFrame, results_dir: str | Path, note: str = "") -> list[Path]:
    """Write a :func:`canlib.repro.stats.claims_table` as ``claims.csv`` and ``claims.md``.

    The CSV keeps the columns as they are (numbers to 3 decimals); the Markdown copy shows
    the effects signed to one decimal, ``note`` above the table.

    Returns:
        The two paths written.
    """
    shown = _signed(table, ("paper_effect", "effect_mean", "ci_low", "ci_high"))
    return _write(table, shown.set_index("claim"), results_dir, "claims", note, **_EFFECT_CSV)


def save_open_choices(table: pd.DataFrame, results_dir: str | Path, note: str = "") -> list[Path]:
    """Write :meth:`canlib.repro.notebook.NotebookRun.open_choices` as ``open_choices.csv`` (the
    columns of ``claims.csv`` plus ``choice``) and ``open_choices.md``."""
    columns = ["choice", "default", "alternative", "effect_mean", "ci_low", "ci_high"]
    shown = _signed(table[[*columns, "n_seeds", "verdict"]], ("effect_mean", "ci_low", "ci_high"))
    csv = table[[*stats.CLAIM_COLUMNS, "choice"]]
    return _write(csv, shown.set_index("choice"), results_dir, "open_choices", note, **_EFFECT_CSV)


def save_table(table: pd.DataFrame, out_dir: str | Path, name: str, note: str = "") -> list[Path]:
    """Write ``table`` as ``<name>.csv`` and ``<name>.md`` (with ``note`` above the table)."""
    return _write(table, table, out_dir, name, note)


def _signed(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy with ``columns`` as signed numbers to one decimal (blank where missing)."""
    shown = table.copy()
    for col in columns:
        shown[col] = [None if pd.isna(v) else f"{v:+.1f}" for v in table[col]]
    return shown


def _write(
    csv: pd.DataFrame, shown: pd.DataFrame, out_dir: str | Path, name: str, note: str, **to_csv
) -> list[Path]:
    """``csv`` as ``<name>.csv`` (``to_csv``: pandas' options) and ``shown`` as ``<name>.md``,
    with ``note`` above the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    csv.to_csv(csv_path, **to_csv)
    md_path.write_text((note.strip() + "\n\n" if note else "") + to_markdown(shown) + "\n")
    return [csv_path, md_path]


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' own needs the optional ``tabulate`` package)."""
    index_name = table.index.name or ""
    header = [index_name, *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for idx, row in table.iterrows():
        cells = [
            "" if pd.isna(v) else (f"{v:.1f}" if isinstance(v, float) else str(v)) for v in row
        ]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def _init_words(pretrained: bool | str) -> str:
    if pretrained == SYNTHETIC_TRUNK:
        return "fine-tuned from canlib's trunk, pretrained on disjoint synthetic identities"
    if isinstance(pretrained, str):
        return f"initialised from {Path(pretrained).name}"
    return "ImageNet-pretrained" if pretrained else "trained from scratch"


def run_description(cfg: ExperimentConfig) -> str:
    """One honest sentence saying what a measured number was measured on."""
    d, m, t = cfg.data, cfg.model, cfg.train
    dataset = (
        f"the built-in synthetic dataset ({d.synthetic_size})"
        if d.dataset == "synthetic"
        else d.dataset
    )
    return (
        f"Measured on {dataset}, {t.epochs} epochs of '{d.epoch}' "
        f"({t.steps_per_epoch or 'all'} steps each), backbone {m.backbone} "
        f"({_init_words(m.pretrained)}), "
        f"{d.height}x{d.width} inputs, P x K = {d.p} x {d.k}, {m.pooling} pooling."
    )


def environment() -> dict[str, Any]:
    """OS, Python, package versions, device and git state, for manifests."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_count": _cpu_count(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        **{name: _version(name) for name in ("torchvision", "papermill", "nbval", "canlib")},
        **git_state(),
    }


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the working tree (``None`` outside a git checkout)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        sha, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": sha, "git_dirty": bool(dirty)}


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
