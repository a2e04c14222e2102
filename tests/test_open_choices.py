"""The choices the paper leaves open (notebook 08): data, verdicts and the options they use."""

import math

import pytest

from canlib.config import ExperimentConfig
from canlib.engine import load_trained_model
from canlib.errors import ConfigError
from canlib.repro import experiments, stats

PROFILE_ARGS = {"smoke": [], "synthetic": [], "paper": ["data.data_root=/data"]}


@pytest.mark.parametrize("profile", sorted(PROFILE_ARGS))
@pytest.mark.parametrize("choice", experiments.OPEN_CHOICES, ids=lambda c: c.choice)
def test_each_choice_builds_two_valid_configs_that_differ_as_described(profile, choice):
    base = experiments.experiment(*choice.row, profile, PROFILE_ARGS[profile])
    default = base.with_overrides(dict(choice.default_overrides)).validate()
    alternative = default.with_overrides(dict(choice.alternative_overrides)).validate()
    changed = {
        f"{section}.{key}"
        for section, fields in alternative.to_dict().items()
        if isinstance(fields, dict)
        for key, value in fields.items()
        if default.to_dict()[section][key] != value
    }
    assert changed == {key for key, _ in choice.alternative_overrides}
    # An evaluation-only choice changes no trained weight: only eval.* fields move.
    assert choice.eval_only == all(key.startswith("eval.") for key in changed)


def test_the_choices_cover_what_the_issue_lists():
    names = [c.choice for c in experiments.OPEN_CHOICES]
    assert names == [
        "Stripe pooling, part-1,3,5,7",
        "Stripe pooling, part-1,3,5,7,9",
        "Epoch definition",
        "Adam's weight decay",
        "BN after the shared 1x1 embedding",
        "Cosine-classifier scale",
        "Triplet distance",
        "Test embedding",
        "Flip averaging at test",
        "Re-ranking",
    ]
    weight_decay = next(c for c in experiments.OPEN_CHOICES if c.choice == "Adam's weight decay")
    # "Adam with default parameters" (paper §4.6) against BoT's 5e-4, both stated explicitly.
    assert dict(weight_decay.default_overrides) == {"train.weight_decay": 5e-4}
    assert dict(weight_decay.alternative_overrides) == {"train.weight_decay": 0.0}


def test_an_evaluation_only_choice_may_not_retrain():
    with pytest.raises(ConfigError, match="evaluation-only"):
        experiments.OpenChoice(
            "x", "y", ("table4", "CAN + CE"), "a", "b", (("model.scale", 30.0),), eval_only=True
        )
    with pytest.raises(ConfigError, match="no row"):
        experiments.OpenChoice("x", "y", ("table4", "nope"), "a", "b", (("eval.flip", True),))


@pytest.mark.parametrize(
    "low, high, verdict",
    [
        (0.2, 1.0, "matters"),
        (-1.0, -0.1, "matters"),
        (-0.5, 0.5, "no measurable effect"),
        (0.0, 1.0, "no measurable effect"),
        (math.nan, math.nan, "no measurable effect"),
    ],
)
def test_choice_verdict(low, high, verdict):
    assert stats.choice_verdict(low, high) == verdict


def test_choice_sentence():
    row = {
        "choice": "Scale",
        "claim": "30 instead of 16",
        "effect_mean": 1.25,
        "ci_low": 0.5,
        "ci_high": 2.0,
        "n_seeds": 3,
        "verdict": "matters",
    }
    assert stats.choice_sentence(row) == (
        "Scale: 30 instead of 16: +1.2 mAP (95% CI +0.5 to +2.0, 3 seeds): matters."
    )


def test_new_fields_are_marked_and_checked():
    sources = {r["field"]: r["origin"] for r in experiments.sources(ExperimentConfig(), "paper")}
    assert sources["loss.triplet_distance"] == "deviation"  # eq. (7) says squared and summed
    assert sources["model.embed_bn"] == "ours" and sources["eval.features"] == "ours"
    with pytest.raises(ConfigError, match="loss.triplet_distance='squared-sum' has no effect"):
        experiments.profile("smoke", ["loss.mode=ce", "loss.triplet_distance=squared-sum"])
    with pytest.raises(ConfigError, match="eval.features must be one of"):
        experiments.profile("smoke", ["eval.features=raw"])
    with pytest.raises(ConfigError, match="model.embed_bn=False has no effect"):
        experiments.experiment("sota", "MGN", "smoke", ["model.embed_bn=false"])


def test_rescoring_may_only_change_test_time_settings(tmp_path):
    with pytest.raises(ConfigError, match=r"only set eval\.\* fields"):
        load_trained_model(tmp_path / "any.pt", eval_overrides={"model.scale": 30.0})
