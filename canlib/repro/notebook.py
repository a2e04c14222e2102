"""What the notebooks call: validated parameters, cached table runs and post-conditions.

A notebook passes its parameters cell to :func:`start`, which validates every value (a bad
one fails there, in one sentence, not an hour later) and returns a :class:`NotebookRun` that
knows the profile, the overrides and where results, figures and runs go.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from canlib import engine
from canlib.config import ExperimentConfig, parse_overrides
from canlib.data.transforms import build_test_transform, decode_image, resize
from canlib.errors import ConfigError
from canlib.evaluate import ranked_gallery
from canlib.repro import results, stats, viz
from canlib.repro.experiments import (
    CLAIMS,
    OPEN_CHOICES,
    PAPER_TABLE_OF,
    TABLES,
    experiment,
)
from canlib.repro.experiments import profile as profile_config  # start() has a parameter profile
from canlib.synthetic import render_masks

# Reference values of the committed notebooks' default run, with tolerances measured across
# CPU numeric settings (written by benchmarks/numeric_spread.py; see check_reference).
REFERENCE_DIR = results.REPO_ROOT / "notebooks" / "reference"
TRAINED_METRICS = ("mAP", "mINP", "rank1", "rank3", "rank5", "rank10")
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
    seeds: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def device(self):
        """Where this notebook's models run (``train.device`` resolved: CUDA when present)."""
        return engine.resolve_device(self.base_config().train.device)

    def base_config(self) -> ExperimentConfig:
        """The profile's config with this run's overrides."""
        return profile_config(self.profile, self.overrides)

    def config(self, table: str, row: str) -> ExperimentConfig:
        """The config of one table row under this run's profile and overrides."""
        return experiment(table, row, self.profile, self.overrides)

    def _from_checkpoint(self, table: str, row: str) -> bool:
        """Whether this row is scored from the user's ``checkpoint`` instead of trained."""
        return self.checkpoint is not None and (table, row) in CAN_ROWS

    def _run_seeds(self, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        return results.run_seeds(cfg, self.runs_dir, force=self.force, progress=False)

    def run(
        self, table: str, row: str, progress: bool = False, eval_every: int | None = None
    ) -> dict[str, Any]:
        """Train (or reuse) one table row and return its metrics in percent.

        ``eval_every`` evaluates a newly trained run more often than its profile does (for a
        test-metric curve); it changes no weight, so the run is the row's cached one.
        """
        if self._from_checkpoint(table, row):
            metrics = results.score_checkpoint(self.checkpoint, self.base_config())
        else:
            cfg = self.config(table, row)
            if eval_every is not None:
                cfg = cfg.with_overrides({"train.eval_every": eval_every}).validate()
            metrics = results.run_experiment(
                cfg, self.runs_dir, force=self.force, progress=progress
            )
        self.measured.setdefault(table, {})[row] = metrics
        return metrics

    def run_longer(self, table: str, row: str, factor: int = 2) -> dict[str, Any] | None:
        """The row trained ``factor`` times as many epochs, evaluated after each (its first seed).

        The lr milestones stay where the profile puts them, so the first epochs repeat the
        profile's run and the rest show how much it would still gain: whether it stopped on a
        plateau. Returns None under the ``paper`` profile (twice its 600 epochs is days of
        GPU time) and when the row is scored from a user's checkpoint.
        """
        if self.profile == "paper" or self._from_checkpoint(table, row):
            return None
        cfg = self.config(table, row)
        longer = {"train.epochs": cfg.train.epochs * factor, "train.eval_every": 1}
        return results.run_experiment(
            cfg.with_overrides(longer).validate(), self.runs_dir, force=self.force, progress=False
        )

    def run_seeds(self, table: str, row: str) -> list[dict[str, Any]]:
        """Train (or reuse) one row under each of the profile's seeds (``train.seeds``).

        Seed i runs with ``train.seed + i``; each seed is its own cached run. A CAN row scored
        from a user's ``checkpoint`` is one run, so one seed. Returns one metrics dict per seed
        (percent, with ``seed``); :attr:`measured` gets their mean.
        """
        if self._from_checkpoint(table, row):
            per_seed = [{**self.run(table, row), "seed": self.config(table, row).train.seed}]
        else:
            per_seed = self._run_seeds(self.config(table, row))
        self.seeds.setdefault(table, {})[row] = per_seed
        self.measured.setdefault(table, {})[row] = mean_over_seeds(per_seed)
        return per_seed

    def run_table(self, table: str, rows: Iterable[str] | None = None) -> dict[str, dict]:
        """Train (or reuse) every row of ``table`` over the profile's seeds.

        Returns row -> metrics averaged over the seeds (the first seed's run folder and
        checkpoint); the per-seed metrics are in :attr:`seeds`.
        """
        for row in rows or TABLES[table]:
            self.run_seeds(table, row)
        return {row: self.measured[table][row] for row in (rows or TABLES[table])}

    def seeds_table(self, table: str, metrics: tuple[str, ...] = ("mAP", "rank1")):
        """Mean and 95% interval over seeds per row of ``table``, the paper's number beside
        it as a reference (:func:`canlib.repro.results.seeds_table`)."""
        return results.seeds_table(
            self.seeds.get(table, {}),
            PAPER_TABLE_OF.get(table),
            metrics=metrics,
            rows=list(TABLES[table]),
        )

    def claims(self, tables: Iterable[str] | None = None):
        """The paper's claims (:data:`canlib.repro.experiments.CLAIMS`) judged over seeds.

        Trains (or reuses) every row the claims compare, and measures Figure 4's body share
        where a claim needs it. ``tables`` keeps the claims of some paper tables
        (``"Table 3"``); default all.

        Returns:
            ``(table, sentences)``: the :func:`canlib.repro.stats.claims_table` frame and one
            generated sentence per claim.
        """
        chosen = [c for c in CLAIMS if tables is None or c.table in set(tables)]
        per_row: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for claim in chosen:
            for key in claim.rows:
                if claim.metric == "body_share":
                    per_row[key] = self.body_shares(*key)
                elif key not in per_row:
                    per_row[key] = self.seeds.get(key[0], {}).get(key[1]) or self.run_seeds(*key)
        frame = stats.claims_table(per_row, chosen)
        return frame, stats.claim_sentences(frame, chosen)

    def open_choices(self):
        """What each choice the paper leaves open does (``experiments.OPEN_CHOICES``).

        Per choice, both variants over the profile's seeds (the default usually is a cached
        table row; an evaluation-only alternative rescores the default's checkpoints), and
        the alternative's effect on mAP paired by seed: ``matters`` when its 95% interval
        excludes 0, ``no measurable effect`` otherwise.

        Returns:
            A frame with the columns of ``claims.csv`` (``claim`` says alternative vs default,
            ``table`` where the paper is ambiguous) plus ``choice``, ``default`` and
            ``alternative``.
        """
        lines = []
        for choice in OPEN_CHOICES:
            base = self.config(*choice.row).with_overrides(dict(choice.default_overrides))
            default = self._run_seeds(base.validate())
            changes = dict(choice.alternative_overrides)
            if choice.eval_only:
                alternative = [
                    {**self.rescore(m["checkpoint"], changes), "seed": m["seed"]} for m in default
                ]
            else:
                alternative = self._run_seeds(base.with_overrides(changes).validate())
            effect = stats.seed_effect([alternative, default], "mAP")
            claim = f"{choice.alternative} instead of {choice.default}"
            verdict = stats.choice_verdict(effect.ci_low, effect.ci_high)
            lines.append(
                {
                    **stats.effect_line(claim, choice.where, effect, verdict),
                    "choice": choice.choice,
                    "default": choice.default,
                    "alternative": choice.alternative,
                }
            )
        return pd.DataFrame(lines)

    def rescore(self, checkpoint: str | Path, eval_overrides: dict[str, Any]) -> dict[str, Any]:
        """Metrics of a trained checkpoint under other test-time settings (``eval.*``)."""
        model, cfg = engine.load_trained_model(
            checkpoint, self.device, eval_overrides=eval_overrides
        )
        return engine.evaluate_model(model, engine.build_data(cfg), cfg)

    def body_shares(self, table: str, row: str) -> list[dict[str, Any]]:
        """Per seed, the share of layer-4 activation mass inside the person masks, in
        percent (:func:`body_share`), added to the row's per-seed metrics."""
        per_seed = self.seeds.get(table, {}).get(row) or self.run_seeds(table, row)
        data = engine.build_data(self.config(table, row))
        out = []
        for metrics in per_seed:
            model, cfg = engine.load_trained_model(metrics["checkpoint"], self.device)
            share = body_share(model, data, cfg)
            out.append({**metrics, **({} if share is None else {"body_share": share})})
        self.seeds[table][row] = out
        return out

    def description(self) -> str:
        """An honest sentence on what this notebook's numbers were measured on."""
        return results.run_description(self.base_config())

    def check_reference(
        self, table: str, measured: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Print how the rows of ``table`` compare with the committed reference.

        ``measured`` defaults to each trained row's first seed (``train.seed``, the run the
        reference was measured on). The printed sentence holds only constants (row counts,
        tolerances), so nbval can check it exactly on any machine; a value outside its
        tolerance raises instead. See :func:`compare_with_reference`.
        """
        if measured is None:
            measured = {row: runs[0] for row, runs in self.seeds.get(table, {}).items()}
        print(compare_with_reference(self, table, measured))


# What a notebook's ``options`` parameter may hold: the plumbing of a run, set by
# ``python -m canlib reproduce`` or by hand; the parameters cell keeps what a reader changes.
OPTIONS = {
    "epochs": "train this many epochs instead of the profile's (its milestones rescaled)",
    "force": "True: retrain runs that are already cached",
    "checkpoint": "a CAN checkpoint trained elsewhere: scored in place of training the CAN rows",
    "results_dir": "where tables go (default results/<profile>)",
    "figures_dir": "where figures go (default figures/<profile>)",
    "runs_dir": "where trained runs are cached (default <results_dir>/runs)",
}


def start(
    profile: str = "smoke",
    dataset: str | None = None,
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    overrides: list[str] | dict[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> NotebookRun:
    """Validate a notebook's parameters and set up its output folders.

    The notebooks pass their parameters cell's values; ``options`` holds the rarely set
    plumbing (:data:`OPTIONS`, every key optional). Output folders default to
    ``results/<profile>``, ``figures/<profile>`` and ``results/<profile>/runs`` under
    ``$CANLIB_OUTPUT_ROOT`` (the repository when unset; the test suite points it at a
    temporary folder so nbval never touches ``results/``).

    Raises:
        ConfigError: any bad parameter or option, named, before work starts.
    """
    opts = _options(options)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"parameter seed must be a non-negative integer (got {seed!r})")
    items = [f"{k}={v}" for k, v in parse_overrides(overrides).items()]
    if dataset:
        items.append(f"data.dataset={dataset}")
    if data_root:
        items.append(f"data.data_root={data_root}")
    items += [f"train.device={device}", f"train.seed={seed}"]
    epochs, checkpoint = opts.get("epochs"), opts.get("checkpoint")
    if epochs is not None:
        items += [f"train.epochs={epochs}", f"train.milestones={_milestones(profile, epochs)}"]
    try:
        profile_config(profile, items)
    except ConfigError as exc:
        raise ConfigError(f"bad notebook parameter: {exc}") from None
    root = Path(os.environ.get("CANLIB_OUTPUT_ROOT", results.REPO_ROOT))
    results_dir = Path(opts.get("results_dir") or root / "results" / profile)
    run = NotebookRun(
        profile=profile,
        overrides=items,
        results_dir=results_dir,
        figures_dir=Path(opts.get("figures_dir") or root / "figures" / profile),
        runs_dir=Path(opts.get("runs_dir") or results_dir / "runs"),
        force=opts.get("force", False),
        checkpoint=Path(checkpoint) if checkpoint else None,
    )
    for path in (run.results_dir, run.figures_dir, run.runs_dir):
        path.mkdir(parents=True, exist_ok=True)
    return run


def _options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a dict, refusing an unknown key or a bad value, each in one sentence."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"parameter options must be a dict such as {{'force': True}} (got {options!r})"
        )
    unknown = sorted(str(key) for key in options if key not in OPTIONS)
    if unknown:
        raise ConfigError(
            f"parameter options: unknown key {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(OPTIONS)}"
        )
    for key in ("checkpoint", "results_dir", "figures_dir", "runs_dir"):
        value = options.get(key)
        if value is not None and not isinstance(value, str | os.PathLike):
            raise ConfigError(f"option {key} must be a path or None (got {value!r})")
    epochs, force = options.get("epochs"), options.get("force", False)
    if epochs is not None and (
        not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1
    ):
        raise ConfigError(f"option epochs must be None or a positive integer (got {epochs!r})")
    if not isinstance(force, bool):
        raise ConfigError(f"option force must be True or False (got {force!r})")
    checkpoint = options.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f"option checkpoint: no file at {checkpoint}")
    return dict(options)


def _milestones(name: str, epochs: int) -> str:
    """Profile ``name``'s lr milestones rescaled to ``epochs``, as an override value."""
    train = profile_config(name).train
    return ",".join(str(round(m * epochs / train.epochs)) for m in train.milestones)


def check_metrics(
    measured: Mapping[str, Mapping[str, Any]],
    table: str,
    rows: Iterable[str] | None = None,
    columns: Iterable[str] = ("mAP", "rank1"),
) -> None:
    """Post-condition: every row of ``table`` was measured, each metric a finite percentage.

    Args:
        measured: row name -> metrics in percent.
        table: a table of :data:`canlib.repro.experiments.TABLES`; its rows are what must be there.
        rows: a subset of the table's rows (default: all of them).
        columns: the metrics to check.
    """
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    expected = list(TABLES[table]) if rows is None else list(rows)
    unknown = [row for row in [*expected, *measured] if row not in TABLES[table]]
    if unknown:
        raise AssertionError(f"row(s) {unknown} are not rows of {table}: {list(TABLES[table])}")
    for row in expected:
        if row not in measured:
            raise AssertionError(f"row {row!r} was not measured")
        for col in columns:
            value = measured[row].get(col)
            if not (isinstance(value, (int, float)) and 0 <= value <= 100):  # NaN fails too
                raise AssertionError(f"row {row!r}: {col} = {value!r} is not a percentage")


def mean_over_seeds(per_seed: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of several seeds averaged (``seeds`` says how many), with the first
    seed's run folder and checkpoint (what a figure of "the" model uses)."""
    means = {
        name: sum(float(m[name]) for m in per_seed) / len(per_seed)
        for name in TRAINED_METRICS
        if all(name in m for m in per_seed)
    }
    first = per_seed[0]
    return {
        **means,
        "seeds": len(per_seed),
        "run_dir": first.get("run_dir"),
        "checkpoint": first.get("checkpoint"),
    }


def check_choices(choices) -> None:
    """Post-condition of notebook 08: every open choice measured, in order, with a verdict."""
    expected = [c.choice for c in OPEN_CHOICES]
    if list(choices["choice"]) != expected:
        raise AssertionError(
            f"open choices measured {list(choices['choice'])}, expected {expected}"
        )
    verdicts = set(choices["verdict"]) - {stats.MATTERS, stats.NO_MEASURABLE_EFFECT}
    if verdicts:
        raise AssertionError(f"unexpected verdicts {sorted(verdicts)}")


def check_files(paths: Iterable[Path | str]) -> None:
    """Post-condition: every expected output file exists and is not empty."""
    for path in paths:
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            raise AssertionError(f"expected output {path} is missing or empty")


def _test_images(cfg: ExperimentConfig, paths: Iterable[str | Path]) -> torch.Tensor:
    """Image files as a (N, 3, H, W) batch under ``cfg``'s test transform."""
    transform = build_test_transform(engine.transform_config(cfg))
    return torch.stack([transform(decode_image(path)) for path in paths])


def figure_inputs(data, cfg: ExperimentConfig, count: int = 4):
    """Query images for Figure 4 and, for each, its first cross-camera true match.

    Returns ``(queries, matches, raw_queries)``: normalised (N, 3, H, W) tensors of the
    queries and their matching gallery images, and the queries as uint8 HxWx3 arrays for
    the overlays. Only queries that have a valid match under the protocol are taken.
    """
    pairs = []
    for q in data.query:
        match = next((g for g in data.gallery if g[1] == q[1] and g[2] != q[2] and g[1] >= 0), None)
        if match is not None:
            pairs.append((q, match))
        if len(pairs) == count:
            break
    if not pairs:
        raise ConfigError("no query has a cross-camera match in the gallery; cannot draw Figure 4")
    queries = _test_images(cfg, [q[0] for q, _ in pairs])
    matches = _test_images(cfg, [g[0] for _, g in pairs])
    raw = [
        (
            resize(decode_image(q[0]).float() / 255, cfg.data.height, cfg.data.width)
            .clamp(0, 1)
            .permute(1, 2, 0)
            .numpy()
            * 255
        ).astype(np.uint8)
        for q, _ in pairs
    ]
    return queries, matches, raw


# ----------------------------------------------------------------------------- reference checks


def fingerprint(cfg: ExperimentConfig, data=None) -> dict[str, dict[str, float]]:
    """Numbers of the *untrained* model of ``cfg`` that any correct machine reproduces.

    The model is initialised from ``train.seed``. ``loss`` holds its loss parts (train mode)
    on a fixed batch: the first ``k`` images (sorted by path) of the first ``p`` train
    identities, test transform, no augmentation. ``untrained`` holds its test metrics. No
    training amplifies rounding here, so two CPUs agree to about 1e-6 relative; a changed
    model, loss or evaluation rule moves these numbers by far more.

    Args:
        cfg: one experiment (a table row).
        data: the dataset of ``cfg`` if already built (saves rebuilding it per row).
    """
    data = engine.build_data(cfg) if data is None else data
    engine.seed_everything(cfg.train.seed)
    parts = engine.build_training(cfg, data.num_train_pids, torch.device("cpu"))
    batch = _fixed_batch(data.train, cfg.data.p, cfg.data.k)
    images = _test_images(cfg, [path for path, _, _ in batch])
    pids = torch.tensor([pid for _, pid, _ in batch])
    parts.model.train()
    with torch.no_grad():
        losses = parts.criterion(parts.model(images), pids)
    untrained = engine.evaluate_model(parts.model, data, cfg, device="cpu")
    return {
        "loss": {name: float(value) for name, value in losses.items()},
        "untrained": {name: float(untrained[name]) for name in TRAINED_METRICS},
    }


def _fixed_batch(records, p: int, k: int) -> list[tuple[str, int, int]]:
    by_pid: dict[int, list] = {}
    for record in sorted(records, key=lambda r: (r[1], str(r[0]))):
        by_pid.setdefault(record[1], []).append(record)
    chosen = [group[:k] for group in by_pid.values() if len(group) >= k][:p]
    if len(chosen) < p:
        raise ConfigError(f"the train split has fewer than p={p} identities with k={k} images")
    return [record for group in chosen for record in group]


def load_reference(profile_name: str) -> dict[str, Any] | None:
    """The committed reference of a profile (``notebooks/reference/<profile>.json``), if any."""
    path = REFERENCE_DIR / f"{profile_name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def compare_with_reference(
    run: NotebookRun, table: str, measured: Mapping[str, Mapping[str, Any]]
) -> str:
    """Check the rows of ``table`` against the committed reference, within its tolerances.

    Three quantities per row, each within the tolerance stored in the reference (measured
    across CPU numeric settings by ``benchmarks/numeric_spread.py``): the untrained model's
    loss parts on a fixed batch (relative, about 1e-4), its test metrics, and the trained
    metrics in ``measured`` (short runs amplify rounding: the widest band).

    A row is compared only where the reference applies: same profile and config hash (a
    non-default seed or override trains something else), on the CPU, not a checkpoint
    scored in place of training.

    Returns:
        A sentence that holds only constants: safe for an exact nbval comparison.

    Raises:
        AssertionError: a value outside its tolerance, naming row, quantity, value,
            reference and tolerance.
    """
    reference = load_reference(run.profile)
    if reference is None:
        return f"{table}: no committed reference for profile {run.profile!r}; nothing compared."
    if run.device.type != reference["device"]:
        return f"{table}: the reference was measured on {reference['device']}; nothing compared."
    tolerance = reference["tolerance"]
    rows = reference["values"].get(table, {})
    compared, failures, data = [], [], None
    for row, metrics in measured.items():
        cfg = run.config(table, row)
        ref = rows.get(row)
        if (
            ref is None
            or ref["config_hash"] != cfg.config_hash()
            or run._from_checkpoint(table, row)
        ):
            continue
        if data is None:
            data = engine.build_data(cfg)
        found = fingerprint(cfg, data)
        found["trained"] = {name: float(metrics[name]) for name in TRAINED_METRICS}
        for quantity in ("loss", "untrained", "trained"):
            failures += _outside(row, quantity, found[quantity], ref[quantity], tolerance[quantity])
        compared.append(row)
    if failures:
        raise AssertionError(
            f"{table}: {len(failures)} value(s) outside the reference's tolerance "
            f"({REFERENCE_DIR.name}/{run.profile}.json):\n" + "\n".join(failures)
        )
    if not compared:
        return f"{table}: the reference does not apply to these parameters; nothing compared."
    trained = ", ".join(f"{k} ±{v:g}" for k, v in tolerance["trained"].items())
    untrained = ", ".join(f"{k} ±{v:g}" for k, v in tolerance["untrained"].items())
    return (
        f"{table}: {len(compared)} of {len(measured)} rows match the {run.profile} reference. "
        f"Untrained loss parts within {tolerance['loss']:g} (relative); untrained metrics "
        f"within {untrained}; trained metrics within {trained} points."
    )


def _outside(
    row: str,
    quantity: str,
    found: Mapping[str, float],
    ref: Mapping[str, float],
    tolerance: float | Mapping[str, float],
) -> list[str]:
    """Lines naming each value of ``found`` outside ``ref`` +- tolerance."""
    lines = []
    for name, expected in ref.items():
        value = found[name]
        if isinstance(tolerance, Mapping):
            allowed = tolerance[name]
        else:  # relative, with an absolute floor for parts that are zero
            allowed = tolerance * max(abs(expected), 1.0)
        if not abs(value - expected) <= allowed:
            lines.append(
                f"  {row}: {quantity} {name} = {value:.6g}, reference {expected:.6g} "
                f"(allowed ±{allowed:.3g})"
            )
    return lines


def reference_values(
    profile_name: str, out_root: str | Path, overrides: list[str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Everything :func:`compare_with_reference` checks, for every row of every table.

    Trains each row under the notebooks' default parameters (runs go under ``out_root``)
    and returns ``table -> row -> {config_hash, loss, untrained, trained}``.
    ``benchmarks/numeric_spread.py`` calls this once per CPU numeric setting.
    """
    out_root = Path(out_root)
    run = start(
        profile_name,
        overrides=overrides,
        options={
            "results_dir": str(out_root / "results"),
            "figures_dir": str(out_root / "figures"),
            "runs_dir": str(out_root / "runs"),
        },
    )

    data = engine.build_data(run.base_config())
    values: dict[str, dict[str, dict[str, Any]]] = {}
    for table, rows in TABLES.items():
        for row in rows:
            metrics = run.run(table, row)
            cfg = run.config(table, row)
            values.setdefault(table, {})[row] = {
                "config_hash": cfg.config_hash(),
                **fingerprint(cfg, data),
                "trained": {name: float(metrics[name]) for name in TRAINED_METRICS},
            }
    return values


def body_share(model, data, cfg: ExperimentConfig, count: int = 64) -> float | None:
    """Share of the Figure 4 activation map's mass that lies on the person, in percent.

    The map is the one Figure 4 draws (:func:`canlib.repro.viz.combine_maps` of
    :func:`canlib.repro.viz.branch_maps`), resized bilinearly to each query's original crop;
    the person mask comes from :func:`canlib.synthetic.render_masks`. A map spread evenly over
    the image scores the person's share of the area; one on the background scores less.

    Args:
        model: a trained model with ``feature_maps``.
        data: the dataset; only the built-in synthetic one has masks.
        cfg: the model's config (input size).
        count: how many queries (the first ``count``, in record order).

    Returns:
        The mean share over the queries in percent, or None for a dataset without masks.
    """
    if cfg.data.dataset != "synthetic":
        return None
    records = list(data.query)[:count]
    names = [str(Path(r[0]).relative_to(data.root)) for r in records]
    masks = render_masks(data.root, names)
    images = _test_images(cfg, [r[0] for r in records])
    heat = torch.as_tensor(viz.combine_maps(viz.branch_maps(model, images)))
    shares = []
    for name, one in zip(names, heat, strict=True):
        mask = torch.as_tensor(masks[name] > 0, dtype=torch.float32)
        resized = torch.nn.functional.interpolate(
            one[None, None], size=tuple(mask.shape), mode="bilinear", align_corners=False
        )[0, 0]
        total = resized.sum()
        if total <= 0:  # a map without contrast counts as spread evenly over the image
            resized, total = torch.ones_like(resized), float(resized.numel())
        shares.append(float((resized * mask).sum() / total))
    return 100.0 * float(np.mean(shares))


def family_confusions(raw: Mapping[str, Any], group_of: Mapping[int, int]) -> dict[str, Any]:
    """How often a query's highest-ranked *wrong* gallery item is one of its look-alikes.

    For each query the gallery is ranked under the Market-1501 protocol
    (:func:`canlib.evaluate.ranked_gallery`); its first item that is not a true match is a
    *family confusion* when it belongs to another identity of the query's family.

    Args:
        raw: :func:`canlib.engine.evaluate_model` output with ``return_raw=True``.
        group_of: pid -> family (:func:`canlib.synthetic.pid_families`).

    Returns:
        ``queries``, ``queries in families``, and the shares in percent of all queries and of
        the queries of family members whose top-ranked wrong match is in their family.
    """

    distmat = raw["distmat"]
    distmat = distmat.cpu().numpy() if hasattr(distmat, "cpu") else distmat
    q_pids, g_pids = raw["q_pids"], raw["g_pids"]
    confused = in_family = 0
    for i, (q_pid, q_cam) in enumerate(zip(q_pids, raw["q_camids"], strict=True)):
        ranked = ranked_gallery(distmat[i], q_pid, q_cam, g_pids, raw["g_camids"], topk=len(g_pids))
        wrong = next((int(g_pids[j]) for j, hit in ranked if not hit), None)
        family = group_of.get(int(q_pid))
        in_family += family is not None
        confused += family is not None and wrong is not None and group_of.get(wrong) == family
    return {
        "queries": len(q_pids),
        "queries in families": in_family,
        "top wrong match in the family (% of all queries)": 100.0 * confused / len(q_pids),
        "top wrong match in the family (% of family queries)": 100.0 * confused / in_family
        if in_family
        else float("nan"),
    }


def family_summary(info: Mapping[str, Any]) -> dict[str, Any]:
    """How much of the synthetic population has a look-alike: families, members, share.

    Args:
        info: the synthetic dataset's record (``data.info``,
            :func:`canlib.synthetic.read_synthetic_info`).
    """
    members = sum(len(family["pids"]) for family in info["families"])
    return {
        "families": len(info["families"]),
        "identities in families": members,
        "share of identities in families (%)": round(100.0 * info["family_share"], 1),
    }


def convergence_note(log: Iterable[Mapping[str, Any]], stop_epoch: int) -> str:
    """One sentence on what a run trained past the profile's ``stop_epoch`` gained after it.

    ``log`` holds the run's ``metrics.jsonl`` rows; the eval rows give mAP per epoch.
    """
    maps = {int(r["epoch"]): float(r["mAP"]) for r in log if r.get("kind") == "eval"}
    if stop_epoch not in maps or max(maps) <= stop_epoch:
        return f"no evaluation after epoch {stop_epoch} to compare with"
    last = max(maps)
    gain = maps[last] - maps[stop_epoch]
    return (
        f"mAP {maps[stop_epoch]:.1f} where the profile stops (epoch {stop_epoch}), "
        f"{maps[last]:.1f} after {last} epochs: {gain:+.1f} points for "
        f"{last - stop_epoch} more epoch{'s' if last - stop_epoch > 1 else ''}"
    )
