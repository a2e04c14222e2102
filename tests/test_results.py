"""results: per-seed runs, the seeds table and the claims files."""

import math

import pandas as pd
import pytest

from canlib.errors import ConfigError
from canlib.repro import experiments, results, stats
from canlib.repro.experiments import CLAIMS


def test_seed_configs_are_train_seed_plus_i():
    cfg = experiments.experiment("table2", "part-1,2,3", "synthetic", ["train.seed=5"])
    configs = results.seed_configs(cfg)
    assert [c.train.seed for c in configs] == [5, 6, 7]  # synthetic: 3 seeds
    assert configs[0] == cfg
    assert len({c.config_hash() for c in configs}) == 3
    assert [c.train.seed for c in results.seed_configs(cfg, seeds=1)] == [5]
    with pytest.raises(ConfigError, match="seeds must be a positive integer"):
        results.seed_configs(cfg, seeds=0)


def test_run_seeds_runs_each_seed_once_and_tags_it(monkeypatch, tmp_path):
    calls = []

    def fake_run(cfg, runs_root, *, force=False, progress=True):
        calls.append((cfg.train.seed, cfg.config_hash(), force))
        return {"mAP": 80.0 + cfg.train.seed, "run_dir": str(runs_root), "reused": False}

    monkeypatch.setattr(results, "run_experiment", fake_run)
    cfg = experiments.experiment("sota", "CAN", "smoke", ["train.seeds=2"])
    out = results.run_seeds(cfg, tmp_path, force=True)
    assert [(r["seed"], r["mAP"]) for r in out] == [(0, 80.0), (1, 81.0)]
    assert [c[0] for c in calls] == [0, 1] and all(c[2] for c in calls)
    assert calls[0][1] == cfg.config_hash()  # seed 0 is the row's usual run, reused
    assert len(results.run_seeds(cfg, tmp_path, seeds=3)) == 3


def test_seeds_table_shows_mean_interval_and_the_paper_only_as_reference():
    per_row = {
        "part-1,2,3": [{"mAP": v, "rank1": 90.0} for v in (1.0, 2.0, 3.0, 4.0)],
        "part-1,3,5": [{"mAP": 70.04, "rank1": 91.0}],
        "part-1,3,5,7": [],
    }
    table = results.seeds_table(per_row, "table2")
    assert list(table.columns) == [
        "seeds",
        "mAP mean",
        "mAP ci",
        "mAP paper",
        "rank1 mean",
        "rank1 ci",
        "rank1 paper",
    ]
    assert not any("Δ" in c or "delta" in c.lower() for c in table.columns)
    first = table.loc["part-1,2,3"]
    # [1, 2, 3, 4]: mean 2.5, half-width 3.182446 * 1.29099 / 2 = 2.054.
    assert (first["seeds"], first["mAP mean"], first["mAP ci"]) == (4, 2.5, "±2.1")
    assert (first["mAP paper"], first["rank1 paper"], first["rank1 ci"]) == (86.6, 94.4, "±0.0")
    single = table.loc["part-1,3,5"]
    assert (single["mAP mean"], single["mAP ci"]) == (70.0, "n/a (1 seed)")
    empty = table.loc["part-1,3,5,7"]
    assert empty["seeds"] == 0 and pd.isna(empty["mAP mean"]) and empty["mAP paper"] == 85.4
    # No paper table (Figure 4's rows): no reference numbers.
    figure = results.seeds_table({"CAN": [{"mAP": 1.0}, {"mAP": 2.0}]}, None, metrics=("mAP",))
    assert figure["mAP paper"].isna().all()


def test_save_claims_writes_csv_and_markdown(tmp_path):
    with_ca = [{"seed": s, "mAP": v} for s, v in enumerate((88.0, 89.0, 90.0))]
    runs = {
        ("table3", "part-1,3,5,7 with CA"): with_ca,
        ("table3", "part-1,3,5,7 w/o CA"): [{"seed": s, "mAP": 87.0} for s in range(3)],
    }
    table = stats.claims_table(runs, CLAIMS)
    paths = results.save_claims(table, tmp_path / "out", note="Synthetic data, 3 seeds.")
    assert [p.name for p in paths] == ["claims.csv", "claims.md"]
    again = pd.read_csv(paths[0])
    assert list(again.columns) == list(stats.CLAIM_COLUMNS)
    assert list(again["claim"]) == [c.claim for c in CLAIMS]
    row = again[again["claim"] == "CA improves part-1,3,5,7"].iloc[0]
    assert (row["effect_mean"], row["n_seeds"], row["verdict"]) == (2.0, 3, "not established")
    assert math.isclose(row["paper_effect"], 2.5)
    text = paths[1].read_text()
    assert text.startswith("Synthetic data, 3 seeds.\n\n| claim |")
    assert "| CA improves part-1,3,5,7 | Table 3 | +2.5 | + | +2.0 | -0.5 | +4.5 | 3 |" in text
