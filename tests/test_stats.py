"""Seed statistics: t intervals, paired effects, verdicts and the claims table.

Expected numbers are worked by hand (the t quantiles from printed tables: t(0.975, 2) =
4.302653, t(0.975, 3) = 3.182446) or come from scipy.stats.t.interval, a second
implementation.
"""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from canlib.repro import stats
from canlib.repro.experiments import CLAIMS, Claim

T_2 = 4.302653  # t_{0.975, 2 d.o.f.}
T_3 = 3.182446  # t_{0.975, 3 d.o.f.}


# --- t interval ----------------------------------------------------------------------------


def test_t_interval_of_one_to_four_by_hand():
    # mean 2.5; sd = sqrt(((1.5^2 + 0.5^2) * 2) / 3) = sqrt(5/3) = 1.29099;
    # half-width = 3.182446 * 1.29099 / sqrt(4) = 2.05426.
    mean, low, high, n = stats.t_interval([1, 2, 3, 4])
    assert (mean, n) == (2.5, 4)
    assert low == pytest.approx(2.5 - 2.05426, abs=1e-5)
    assert high == pytest.approx(2.5 + 2.05426, abs=1e-5)
    assert (high - low) / 2 == pytest.approx(T_3 * math.sqrt(5 / 3) / 2, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_t_interval_equals_scipys(n):
    x = np.random.default_rng(n).normal(80.0, 2.0, size=n)
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    got = stats.t_interval(x)
    assert got.ci_low == pytest.approx(low, rel=1e-12)
    assert got.ci_high == pytest.approx(high, rel=1e-12)
    lo90, hi90 = scipy_stats.t.interval(0.90, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    assert stats.t_interval(x, confidence=0.90)[1:3] == pytest.approx((lo90, hi90), rel=1e-12)


def test_one_value_has_no_interval_and_none_has_no_mean():
    one = stats.t_interval([87.5])
    assert one.mean == 87.5 and one.n == 1
    assert math.isnan(one.ci_low) and math.isnan(one.ci_high)
    assert stats.t_interval([]).n == 0 and math.isnan(stats.t_interval([]).mean)
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1, 2], confidence=95)


def test_summarize_seeds_per_metric_with_notes():
    per_seed = [{"mAP": v, "rank1": 90.0} for v in (1, 2, 3, 4)]
    out = stats.summarize_seeds(per_seed, metrics=("mAP", "rank1", "body_share"))
    assert out["mAP"]["mean"] == 2.5 and out["mAP"]["n"] == 4 and out["mAP"]["note"] == ""
    assert out["mAP"]["ci_high"] == pytest.approx(4.55426, abs=1e-5)
    # No spread: a zero-width interval.
    assert (out["rank1"]["ci_low"], out["rank1"]["ci_high"]) == (90.0, 90.0)
    assert out["body_share"]["n"] == 0 and out["body_share"]["note"] == "not measured"
    single = stats.summarize_seeds([{"mAP": 70.0}], metrics=("mAP",))["mAP"]
    assert single["note"] == "1 seed: no interval" and math.isnan(single["ci_low"])


def test_format_half_width():
    assert stats.format_half_width(stats.t_interval([1, 2, 3, 4])) == "±2.1"
    assert stats.format_half_width(stats.t_interval([3.0])) == "n/a (1 seed)"
    assert stats.format_half_width({"ci_low": math.nan, "ci_high": math.nan, "n": 0}) is None


# --- paired effects --------------------------------------------------------------------------


def test_paired_effect_by_hand():
    # Differences [1, 2, 3]: mean 2, sd 1, half-width 4.302653 / sqrt(3) = 2.484138.
    mean, low, high, n = stats.paired_effect([10, 12, 14], [9, 10, 11])
    assert (mean, n) == (2.0, 3)
    assert (low, high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


def test_paired_effect_pairs_by_seed():
    # Seed noise shared by both rows cancels in a paired difference...
    base = [50.0, 60.0, 70.0]
    a = [v + 1 for v in base]
    paired = stats.paired_effect(a, base)
    assert paired == (1.0, 1.0, 1.0, 3)
    # ...so permuting b (breaking the pairs) changes the interval, not the mean: differences
    # [51-70, 61-50, 71-60] = [-19, 11, 11], mean 1, sd sqrt((400+100+100)/2) = sqrt(300),
    # half-width 4.302653 * sqrt(300) / sqrt(3) = 43.02653.
    shuffled = stats.paired_effect(a, [70.0, 50.0, 60.0])
    assert shuffled.mean == pytest.approx(1.0)
    assert (shuffled.ci_low, shuffled.ci_high) == pytest.approx((1 - 43.02653, 1 + 43.02653))
    assert stats.verdict("+", *shuffled[1:3]) == "not established"
    assert stats.verdict("+", *paired[1:3]) == "holds"
    with pytest.raises(ValueError, match="lengths"):
        stats.paired_effect([1, 2, 3], [1, 2])


def test_interaction_effect_is_a_difference_of_differences():
    # (a - b) - (c - d) = [1, 2, 3] - [1, 0, -1] = [0, 2, 4]: mean 2, sd 2.
    got = stats.interaction_effect([88, 89, 90], [87, 87, 87], [83, 84, 85], [82, 84, 86])
    half = T_2 * 2 / math.sqrt(3)
    assert got.mean == 2.0 and got.n == 3
    assert (got.ci_low, got.ci_high) == pytest.approx((2 - half, 2 + half), abs=1e-6)
    with pytest.raises(ValueError, match="both c and d"):
        stats.interaction_effect([1, 2], [1, 2], [1, 2])


# --- verdicts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "direction, low, high, n, expected",
    [
        ("+", 0.5, 2.0, 3, "holds"),
        ("+", -2.0, -0.5, 3, "contradicted"),
        ("+", -1.0, 1.0, 3, "not established"),
        ("-", -2.0, -0.5, 3, "holds"),
        ("-", 0.5, 2.0, 3, "contradicted"),
        ("-", -1.0, 1.0, 3, "not established"),
        ("+", 0.0, 1.0, 3, "not established"),  # touching 0 does not exclude it
        ("-", -1.0, 0.0, 3, "not established"),
        ("+", math.nan, math.nan, 1, "not established"),
        ("+", 0.5, 2.0, 1, "not established"),  # one seed is never evidence
        ("+", 0.5, 2.0, None, "holds"),
    ],
)
def test_verdict_truth_table(direction, low, high, n, expected):
    assert stats.verdict(direction, low, high, n) == expected


def test_verdict_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="'\\+' or '-'"):
        stats.verdict("up", 1.0, 2.0)


# --- the claims table ---------------------------------------------------------------------


def _runs(values, seeds=(0, 1, 2), metric="mAP"):
    return [{"seed": s, metric: v, "rank1": 90.0} for s, v in zip(seeds, values)]


def fabricated():
    """Per-seed mAP for the rows of the first five claims, worked through by hand below."""
    return {
        ("table2", "part-1,3,5,7,9"): _runs([80, 81, 82]),
        # Given in reverse seed order: rows are paired by their "seed" key, not position.
        ("table2", "part-1,2,3"): _runs([86, 84, 82], seeds=(2, 1, 0)),
        ("table3", "part-1,3,5,7 with CA"): _runs([88, 89, 90]),
        ("table3", "part-1,3,5,7 w/o CA"): _runs([87, 87, 87]),
        ("table3", "part-1,2,3 with CA"): _runs([83, 84, 85]),
        ("table4", "CAN + CE + Triplet"): _runs([70, 71, 72]),
        ("table4", "CAN + CE"): _runs([72, 74, 76]),
        ("table4", "CAN + CE + Triplet + Center"): _runs([75], seeds=(0,)),
        ("figure4", "CAN"): _runs([60, 61, 62]),  # mAP only: body_share not measured yet
        ("figure4", "MGN"): _runs([60, 61, 62]),
    }


def test_claims_table_on_fabricated_seeds():
    claims = [c for c in CLAIMS if c.table in ("Table 2", "Table 3", "Table 4", "Figure 4")]
    table = stats.claims_table(fabricated(), claims)
    assert list(table.columns) == [
        "claim",
        "table",
        "paper_effect",
        "direction",
        "effect_mean",
        "ci_low",
        "ci_high",
        "n_seeds",
        "verdict",
    ]
    h3 = T_2 / math.sqrt(3)  # half-width of differences with sd 1 over 3 seeds
    expected = [
        # (effect, half-width, n, verdict), worked by hand from fabricated():
        (-3.0, h3, 3, "holds"),  # [80,81,82] - [82,84,86] = [-2,-3,-4], paper '-'
        (2.0, h3, 3, "not established"),  # [1, 2, 3]: interval (-0.48, 4.48)
        (2.0, 2 * h3, 3, "not established"),  # [1,2,3] - ([83,84,85] - [82,84,86]) = [0,2,4]
        (-3.0, h3, 3, "contradicted"),  # triplet: [70,71,72] - [72,74,76], paper '+'
        (5.0, math.nan, 1, "not established"),  # center: seed 0 only, 75 - 70
        (math.nan, math.nan, 0, "not measured"),  # global & local: row absent
        (math.nan, math.nan, 0, "not measured"),  # body_share absent
        (math.nan, math.nan, 0, "not measured"),
    ]
    assert len(table) == len(expected)
    for (_, row), (effect, half, n, verdict) in zip(table.iterrows(), expected):
        assert row["verdict"] == verdict, row["claim"]
        assert row["n_seeds"] == n, row["claim"]
        np.testing.assert_allclose(
            [row["effect_mean"], row["ci_low"], row["ci_high"]],
            [effect, effect - half, effect + half],
            atol=1e-6,
            err_msg=row["claim"],
        )
    assert list(table["paper_effect"].iloc[:6]) == pytest.approx([-2.7, 2.5, 1.7, 0.9, 0.4, 1.3])
    assert table["paper_effect"].iloc[6:].isna().all()
    assert list(table["direction"]) == ["-"] + ["+"] * 7


def test_claim_sentences():
    row = {
        "claim": "CA improves part-1,3,5,7",
        "paper_effect": 2.5,
        "direction": "+",
        "effect_mean": 1.8,
        "ci_low": 0.4,
        "ci_high": 3.2,
        "n_seeds": 3,
        "verdict": "holds",
    }
    assert stats.claim_sentence(row) == (
        "CA improves part-1,3,5,7: +1.8 mAP (95% CI +0.4 to +3.2, 3 seeds): holds (paper: +2.5)."
    )
    one = {
        **row,
        "n_seeds": 1,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "verdict": "not established",
        "paper_effect": math.nan,
    }
    assert stats.claim_sentence(one) == (
        "CA improves part-1,3,5,7: +1.8 mAP (1 seed, no interval): not established "
        "(paper: direction '+' only, no number)."
    )
    claims = [c for c in CLAIMS if c.table == "Figure 4"]
    table = stats.claims_table(fabricated(), claims)
    assert stats.claim_sentences(table, claims)[0] == (
        "CAN's layer-4 activation covers more of the body than MGN's: not measured "
        "(body_share is not in the runs) (paper: direction '+' only, no number)."
    )
    with pytest.raises(ValueError, match="same claims"):
        stats.claim_sentences(table, claims[::-1])


def test_claims_are_measured_once_the_metric_is_present():
    claim = Claim(
        "body", "Figure 4", ("figure4", "CAN"), ("figure4", "MGN"), "+", metric="body_share"
    )
    runs = {
        ("figure4", "CAN"): _runs([70, 72, 74], metric="body_share"),
        ("figure4", "MGN"): _runs([60, 61, 62], metric="body_share"),
    }
    row = stats.claims_table(runs, [claim]).iloc[0]
    assert (row["effect_mean"], row["n_seeds"], row["verdict"]) == (11.0, 3, "holds")


def test_seed_keys_must_be_all_or_none_and_unique():
    runs = {
        ("table2", "part-1,2,3"): [{"mAP": 1.0}, {"mAP": 2.0}],
        ("table2", "part-1,3,5,7,9"): [{"mAP": 2.0}, {"mAP": 4.0}],
    }
    # No seed keys: paired by position.
    row = stats.claims_table(runs, CLAIMS[:1]).iloc[0]
    assert (row["effect_mean"], row["n_seeds"]) == (1.5, 2)
    with pytest.raises(ValueError, match="every per-seed dict"):
        stats.seed_values([{"mAP": 1.0, "seed": 0}, {"mAP": 2.0}], "mAP")
    with pytest.raises(ValueError, match="twice"):
        stats.seed_values([{"mAP": 1.0, "seed": 0}, {"mAP": 2.0, "seed": 0}], "mAP")


def test_stats_does_not_import_torch():
    code = "import sys, canlib.repro.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_claims_table_of_no_runs_is_all_not_measured():
    table = stats.claims_table({}, CLAIMS)
    assert (table["verdict"] == "not measured").all() and (table["n_seeds"] == 0).all()
    assert isinstance(table, pd.DataFrame) and len(table) == len(CLAIMS)
