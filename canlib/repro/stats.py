"""Seed statistics: means with 95% intervals, paired effects and the verdict on each claim.

One run is a demonstration, not evidence (DESIGN.md): a table row is trained with several
seeds (``train.seed + i``), and effects between rows are taken seed by seed (paired) with a
Student's t interval. Pure numpy/scipy/pandas: no torch, no files, no global state. Metrics
are in percent, so an effect on ``mAP`` is in mAP points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CONFIDENCE = 0.95

HOLDS = "holds"
CONTRADICTED = "contradicted"
NOT_ESTABLISHED = "not established"
NOT_MEASURED = "not measured"
DIRECTIONS = ("+", "-")
# How an effect on each metric reads in a sentence.
UNITS = {"mAP": "mAP", "rank1": "rank-1", "body_share": "points of body share"}

CLAIM_COLUMNS = (
    "claim",
    "table",
    "paper_effect",
    "direction",
    "effect_mean",
    "ci_low",
    "ci_high",
    "n_seeds",
    "verdict",
)

# Signs of the rows of a claim: a - b, or the interaction (a - b) - (c - d).
_SIGNS = {2: (1.0, -1.0), 4: (1.0, -1.0, -1.0, 1.0)}

RowKey = tuple[str, str]


class Interval(NamedTuple):
    """A mean with its two-sided Student's t interval.

    ``ci_low``/``ci_high`` are NaN when ``n < 2`` (one value has no spread to estimate) and
    ``mean`` is NaN when ``n == 0``.
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int


class ClaimLike(Protocol):
    """What :func:`claims_table` reads of a claim (``canlib.repro.experiments.Claim``)."""

    claim: str
    table: str
    direction: str
    metric: str

    @property
    def rows(self) -> tuple[RowKey, ...]: ...

    @property
    def paper_effect(self) -> float | None: ...


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` and its interval ``mean ± t_{(1+c)/2, n-1} · sd / √n``.

    ``sd`` is the sample standard deviation (ddof=1); ``t`` the Student's t quantile with
    ``n - 1`` degrees of freedom (for 95% and n = 4: 3.182446).

    Args:
        values: (n,) numbers, e.g. one metric of one row, one per seed, in percent.
        confidence: coverage of the interval, in (0, 1); default 0.95.

    Returns:
        :class:`Interval`; its bounds are NaN when n < 2, where no interval exists.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    x = np.asarray(values, dtype=float).reshape(-1)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def summarize_seeds(
    per_seed: Sequence[Mapping[str, Any]],
    metrics: Iterable[str] = ("mAP", "rank1"),
    confidence: float = CONFIDENCE,
) -> dict[str, dict[str, Any]]:
    """Mean and t interval of each metric over the seeds of one table row.

    Args:
        per_seed: one metrics dict per seed (as :func:`canlib.repro.results.run_seeds` returns),
            values in percent. A seed that lacks a metric does not count towards its ``n``.
        metrics: the metric keys to summarise.
        confidence: coverage of the intervals.

    Returns:
        ``{metric: {"mean", "ci_low", "ci_high", "n", "note"}}``; ``note`` is empty, or says
        why there is no interval (``"1 seed: no interval"``, ``"not measured"``).
    """
    out = {}
    for metric in metrics:
        values = [float(s[metric]) for s in per_seed if s.get(metric) is not None]
        interval = t_interval(values, confidence)
        out[metric] = {**interval._asdict(), "note": _interval_note(interval.n)}
    return out


def paired_effect(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """Mean of ``a_i - b_i`` over seeds i, with its t interval (a paired comparison).

    Args:
        a: (n,) one metric of row a, seed i at position i.
        b: (n,) the same metric of row b, seed i at position i (same order as ``a``).
        confidence: coverage of the interval.

    Returns:
        :class:`Interval` of the difference, in the metric's units (mAP points).
    """
    return interaction_effect(a, b, confidence=confidence)


def interaction_effect(
    a: Sequence[float],
    b: Sequence[float],
    c: Sequence[float] | None = None,
    d: Sequence[float] | None = None,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean of ``(a_i - b_i) - (c_i - d_i)`` over seeds i, with its t interval.

    A difference of differences: "CA helps part-1,3,5,7 more than part-1,2,3" is
    (with CA - without, for 1,3,5,7) - (with CA - without, for 1,2,3). Without ``c`` and
    ``d`` this is :func:`paired_effect`.

    Args:
        a, b, c, d: (n,) one metric per row, seed i at position i in each.
        confidence: coverage of the interval.
    """
    if (c is None) != (d is None):
        raise ValueError("interaction_effect needs both c and d, or neither")
    columns = [a, b] if c is None else [a, b, c, d]
    lengths = [len(v) for v in columns]
    if len(set(lengths)) != 1:
        raise ValueError(
            f"paired values need one value per seed in every row (got lengths {lengths})"
        )
    x = np.asarray(columns, dtype=float)
    diffs = np.asarray(_SIGNS[len(columns)]) @ x
    return t_interval(diffs, confidence)


def verdict(direction: str, ci_low: float, ci_high: float, n: int | None = None) -> str:
    """The verdict on a claim from the interval of its effect.

    Args:
        direction: the paper's direction: ``"+"`` (a > b) or ``"-"`` (a < b).
        ci_low, ci_high: the effect's interval (NaN when it does not exist).
        n: seeds behind the interval; fewer than 2 is never evidence.

    Returns:
        ``"holds"`` when the interval excludes 0 on the paper's side, ``"contradicted"``
        when it excludes 0 on the other, else ``"not established"``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be '+' or '-' (got {direction!r})")
    if (n is not None and n < 2) or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return NOT_ESTABLISHED
    if ci_low <= 0 <= ci_high:
        return NOT_ESTABLISHED
    side = "+" if ci_low > 0 else "-"
    return HOLDS if side == direction else CONTRADICTED


MATTERS = "matters"
NO_MEASURABLE_EFFECT = "no measurable effect"


def choice_verdict(ci_low: float, ci_high: float) -> str:
    """An open choice ``matters`` when the interval of its effect excludes 0; otherwise it
    has ``no measurable effect`` (also with one seed, which has no interval)."""
    if math.isnan(ci_low) or math.isnan(ci_high) or ci_low <= 0 <= ci_high:
        return NO_MEASURABLE_EFFECT
    return MATTERS


def seed_values(per_seed: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float] | None:
    """``{seed: value}`` of one metric of one row; None when any seed lacks the metric.

    Seeds are read from each dict's ``"seed"`` key (what :func:`canlib.repro.results.run_seeds`
    adds); dicts without one are numbered by position 0, 1, ... (all or none must have it).
    """
    has_seed = [("seed" in s) for s in per_seed]
    if any(has_seed) and not all(has_seed):
        raise ValueError("either every per-seed dict has a 'seed' key or none has")
    seeds = [int(s["seed"]) for s in per_seed] if all(has_seed) else list(range(len(per_seed)))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears twice among the runs of one row (seeds {seeds})")
    if not per_seed or any(s.get(metric) is None for s in per_seed):
        return None
    return {seed: float(s[metric]) for seed, s in zip(seeds, per_seed)}


def seed_effect(
    rows: Sequence[Sequence[Mapping[str, Any]]], metric: str, confidence: float = CONFIDENCE
) -> Interval | None:
    """The effect ``a - b`` (or ``(a - b) - (c - d)``) paired over the seeds every row has.

    Args:
        rows: 2 or 4 rows, each one metrics dict per seed (as :func:`seed_values` reads them).
        metric: the metric compared, e.g. ``"mAP"``.
        confidence: coverage of the interval.

    Returns:
        The :class:`Interval` of the effect, or None when a row is empty or a run lacks
        ``metric`` (not measured).
    """
    by_row = []
    for runs in rows:
        values = seed_values(runs, metric)
        if values is None:
            return None
        by_row.append(values)
    common = sorted(set.intersection(*(set(v) for v in by_row)))
    columns = [[values[s] for s in common] for values in by_row]
    return interaction_effect(*columns, confidence=confidence)


def claims_table(
    per_row_seeds: Mapping[RowKey, Sequence[Mapping[str, Any]]],
    claims: Sequence[ClaimLike],
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """One row per claim: the paper's effect, ours with its interval, and the verdict.

    Args:
        per_row_seeds: ``{(table_key, row): [metrics dict per seed]}`` in percent, e.g.
            ``{("table3", "part-1,3,5,7 with CA"): run_seeds(cfg, runs_root)}``.
        claims: the claims to judge (``canlib.repro.experiments.CLAIMS``).
        confidence: coverage of the intervals.

    Returns:
        Columns exactly :data:`CLAIM_COLUMNS`: ``claim``, ``table``, ``paper_effect`` (NaN
        where the paper gives only a direction), ``direction`` (``+``/``-``),
        ``effect_mean``, ``ci_low``, ``ci_high`` (in the claim's metric units: mAP points
        for the table claims), ``n_seeds`` and ``verdict``; a claim whose metric is absent
        from the runs is ``not measured`` with ``n_seeds`` 0.
    """
    lines = []
    for claim in claims:
        runs = [per_row_seeds.get(key, ()) for key in claim.rows]
        effect = seed_effect(runs, claim.metric, confidence)
        if effect is None:
            effect, judged = Interval(math.nan, math.nan, math.nan, 0), NOT_MEASURED
        else:
            judged = verdict(claim.direction, effect.ci_low, effect.ci_high, effect.n)
        paper = claim.paper_effect
        paper_effect = math.nan if paper is None else float(paper)
        lines.append(
            effect_line(claim.claim, claim.table, effect, judged, paper_effect, claim.direction)
        )
    return pd.DataFrame(lines, columns=list(CLAIM_COLUMNS))


def effect_line(
    claim: str,
    table: str,
    effect: Interval,
    verdict: str,
    paper_effect: float = math.nan,
    direction: str = "",
) -> dict[str, Any]:
    """One line of a claims table (:data:`CLAIM_COLUMNS`): a claim or an open choice."""
    return {
        "claim": claim,
        "table": table,
        "paper_effect": paper_effect,
        "direction": direction,
        "effect_mean": effect.mean,
        "ci_low": effect.ci_low,
        "ci_high": effect.ci_high,
        "n_seeds": effect.n,
        "verdict": verdict,
    }


def claim_sentence(row: Mapping[str, Any], unit: str = "mAP", metric: str | None = None) -> str:
    """A claims-table row in words, for a notebook's verdict.

    Example: ``"CA improves part-1,3,5,7: +1.8 mAP (95% CI +0.4 to +3.2, 3 seeds): holds
    (paper: +2.5)."``

    Args:
        row: one row of :func:`claims_table` (a dict or a pandas row).
        unit: the effect's unit in words (``mAP`` points by default, :data:`UNITS`).
        metric: the claim's metric, named when it was not measured (default: ``unit``).
    """
    paper = row["paper_effect"]
    if paper is None or pd.isna(paper):
        reference = f"paper: direction '{row['direction']}' only, no number"
    else:
        reference = f"paper: {paper:+.1f}"
    if row["verdict"] == NOT_MEASURED:
        return f"{row['claim']}: not measured ({metric or unit} is not in the runs) ({reference})."
    effect = f"{row['effect_mean']:+.1f} {unit}"
    return f"{row['claim']}: {effect} ({_spread(row)}): {row['verdict']} ({reference})."


def claim_sentences(table: pd.DataFrame, claims: Sequence[ClaimLike]) -> list[str]:
    """:func:`claim_sentence` of every row of ``table``, each in its claim's metric."""
    if list(table["claim"]) != [c.claim for c in claims]:
        raise ValueError("the claims table and the claims do not list the same claims in order")
    return [
        claim_sentence(row, unit=UNITS.get(claim.metric, claim.metric), metric=claim.metric)
        for (_, row), claim in zip(table.iterrows(), claims)
    ]


def choice_sentence(row: Mapping[str, Any]) -> str:
    """An open-choices row in words, e.g. ``"Stripe pooling, part-1,3,5,7: Eq. (1) windows
    instead of torch's bins: +0.4 mAP (95% CI -0.8 to +1.6, 3 seeds): no measurable
    effect."``"""
    return (
        f"{row['choice']}: {row['claim']}: {row['effect_mean']:+.1f} mAP ({_spread(row)}): "
        f"{row['verdict']}."
    )


def _spread(row: Mapping[str, Any]) -> str:
    """A claims-table row's interval in words, or that one seed has none."""
    n = int(row["n_seeds"])
    if n < 2:
        return f"{n} seed, no interval"
    return f"95% CI {row['ci_low']:+.1f} to {row['ci_high']:+.1f}, {n} seeds"


def format_half_width(interval: Interval | Mapping[str, Any]) -> str | None:
    """``"±x.x"``: half the width of a t interval; a note when it has none.

    Returns ``"n/a (1 seed)"`` for one seed and None for no measurement.
    """
    if isinstance(interval, Interval):
        interval = interval._asdict()
    if interval["n"] == 0:
        return None
    if interval["n"] < 2:
        return "n/a (1 seed)"
    return f"±{(interval['ci_high'] - interval['ci_low']) / 2:.1f}"


def _interval_note(n: int) -> str:
    if n == 0:
        return NOT_MEASURED
    if n == 1:
        return "1 seed: no interval"
    return ""
