"""What the notebooks call: validated parameters, cached table runs and post-conditions.

Each notebook's first cell holds papermill parameters; its second cell passes them to
:func:`start`, which validates every one of them (a bad value fails there, in one
sentence, not an hour later) and returns a :class:`NotebookRun` that knows the profile,
the overrides and where results, figures and runs go.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canlib.config import ExperimentConfig, parse_overrides
from canlib.errors import ConfigError
from canlib.experiments import TABLES, experiment, profile

REPO_ROOT = Path(__file__).resolve().parents[1]
# The rows that are the paper's full CAN: a user's ``checkpoint`` is scored in their place.
CAN_ROWS = {("table4", "global & local to L_c"), ("figure4", "CAN"), ("sota", "CAN")}


@dataclass
class NotebookRun:
    """A notebook's validated parameters and output folders."""

    profile: str
    overrides: list[str]
    results_dir: Path
    figures_dir: Path
    runs_dir: Path
    force: bool = False
    checkpoint: Path | None = None
    measured: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def device(self):
        """Where this notebook's models run (``train.device`` resolved: CUDA when present)."""
        from canlib.engine import resolve_device

        return resolve_device(self.base_config().train.device)

    def base_config(self) -> ExperimentConfig:
        """The profile's config with this run's overrides."""
        return profile(self.profile, self.overrides)

    def config(self, table: str, row: str) -> ExperimentConfig:
        """The config of one table row under this run's profile and overrides."""
        return experiment(table, row, self.profile, self.overrides)

    def run(self, table: str, row: str, progress: bool = False) -> dict[str, Any]:
        """Train (or reuse) one table row and return its metrics in percent."""
        from canlib.results import run_experiment, score_checkpoint

        if self.checkpoint is not None and (table, row) in CAN_ROWS:
            metrics = score_checkpoint(self.checkpoint, self.base_config())
        else:
            metrics = run_experiment(
                self.config(table, row), self.runs_dir, force=self.force, progress=progress
            )
        self.measured.setdefault(table, {})[row] = metrics
        return metrics

    def run_table(self, table: str, rows: Iterable[str] | None = None) -> dict[str, dict]:
        """Train (or reuse) every row of ``table``; returns row -> metrics."""
        return {row: self.run(table, row) for row in (rows or TABLES[table])}

    def description(self) -> str:
        """An honest sentence on what this notebook's numbers were measured on."""
        from canlib.results import run_description

        return run_description(self.base_config())


def start(
    profile: str = "smoke",
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    device: str = "auto",
    epochs: int | None = None,
    seed: int = 0,
    overrides: list[str] | dict[str, Any] | None = None,
    force: bool = False,
    results_dir: str | None = None,
    figures_dir: str | None = None,
    runs_dir: str | None = None,
    checkpoint: str | None = None,
) -> NotebookRun:
    """Validate a notebook's parameters and set up its output folders.

    Output folders default to ``results/<profile>``, ``figures/<profile>`` and
    ``results/<profile>/runs`` under ``$CANLIB_OUTPUT_ROOT`` (the repository when unset;
    the test suite points it at a temporary folder so nbval never touches ``results/``).

    A ``checkpoint`` (a CAN checkpoint trained elsewhere, e.g. on a GPU) is evaluated on this
    notebook's dataset in place of training the CAN rows.

    Raises:
        ConfigError: any bad parameter, named, before work starts.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"parameter seed must be a non-negative integer (got {seed!r})")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"parameter epochs must be None or a positive integer (got {epochs!r})")
    if not isinstance(force, bool):
        raise ConfigError(f"parameter force must be True or False (got {force!r})")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f"parameter checkpoint: no file at {checkpoint}")
    items = [f"{k}={v}" for k, v in parse_overrides(overrides).items()]
    if dataset:
        items.append(f"data.dataset={dataset}")
    if data_root:
        items.append(f"data.data_root={data_root}")
    items.append(f"train.device={device}")
    items.append(f"train.seed={seed}")
    if epochs is not None:
        items.append(f"train.epochs={epochs}")
        items.append("train.milestones=" + ",".join(
            str(round(m * epochs / profile_epochs(profile))) for m in _milestones(profile)
        ))
    _validated(profile, items)
    root = Path(os.environ.get("CANLIB_OUTPUT_ROOT", REPO_ROOT))
    results = Path(results_dir) if results_dir else root / "results" / profile
    run = NotebookRun(
        profile=profile,
        overrides=items,
        results_dir=results,
        figures_dir=Path(figures_dir) if figures_dir else root / "figures" / profile,
        runs_dir=Path(runs_dir) if runs_dir else results / "runs",
        force=force,
        checkpoint=Path(checkpoint) if checkpoint else None,
    )
    for path in (run.results_dir, run.figures_dir, run.runs_dir):
        path.mkdir(parents=True, exist_ok=True)
    return run


def profile_epochs(name: str) -> int:
    """The profile's own epoch count (to rescale its milestones when ``epochs`` is set)."""
    return profile(name).train.epochs


def _milestones(name: str) -> tuple[int, ...]:
    return profile(name).train.milestones


def _validated(name: str, items: list[str]) -> ExperimentConfig:
    try:
        return profile(name, items)
    except ConfigError as exc:
        raise ConfigError(f"bad notebook parameter: {exc}") from None


def check_metrics(measured: dict[str, dict[str, Any]], rows: Iterable[str],
                  columns: Iterable[str] = ("mAP", "rank1")) -> None:
    """Post-condition: every row was measured and each metric is a finite percentage."""
    for row in rows:
        if row not in measured:
            raise AssertionError(f"row {row!r} was not measured")
        for col in columns:
            value = measured[row].get(col)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 100:
                raise AssertionError(f"row {row!r}: {col} = {value!r} is not a percentage")


def check_files(paths: Iterable[Path | str]) -> None:
    """Post-condition: every expected output file exists and is not empty."""
    for path in paths:
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            raise AssertionError(f"expected output {path} is missing or empty")


def figure_inputs(data, cfg: ExperimentConfig, count: int = 4):
    """Query images for Figure 4 and, for each, its first cross-camera true match.

    Returns ``(queries, matches, raw_queries)``: normalised (N, 3, H, W) tensors of the
    queries and their matching gallery images, and the queries as uint8 HxWx3 arrays for
    the overlays. Only queries that have a valid match under the protocol are taken.
    """
    import numpy as np
    import torch

    from canlib.engine import transform_config
    from canlib.transforms import build_test_transform, decode_image, resize

    pairs = []
    for q in data.query:
        match = next((g for g in data.gallery if g[1] == q[1] and g[2] != q[2] and g[1] >= 0), None)
        if match is not None:
            pairs.append((q, match))
        if len(pairs) == count:
            break
    if not pairs:
        raise ConfigError("no query has a cross-camera match in the gallery; cannot draw Figure 4")
    transform = build_test_transform(transform_config(cfg))
    queries = torch.stack([transform(decode_image(q[0])) for q, _ in pairs])
    matches = torch.stack([transform(decode_image(g[0])) for _, g in pairs])
    raw = [
        (resize(decode_image(q[0]).float() / 255, cfg.data.height, cfg.data.width)
         .clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        for q, _ in pairs
    ]
    return queries, matches, raw
