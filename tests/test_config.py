"""Config dataclasses, profiles and table rows."""

import dataclasses

import pytest

from canlib import experiments, paper
from canlib.config import SECTIONS, ExperimentConfig, describe_sources
from canlib.errors import ConfigError


def test_every_field_says_whether_it_is_the_papers_or_ours():
    cfg = ExperimentConfig()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            source = f.metadata.get("source", "")
            assert source.startswith(("paper: ", "ours: ")), f"{section}.{f.name}"


def test_paper_recipe_defaults_match_section_4_6():
    cfg = experiments.profile("paper", ["data.data_root=/x"])
    assert (cfg.data.p, cfg.data.k, cfg.data.height, cfg.data.width) == (8, 4, 384, 128)
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 600
    assert cfg.train.milestones == (250, 350, 450)
    assert cfg.loss.center_weight == 0.0005 and cfg.loss.mode == "global+local"
    assert cfg.model.parts == (3, 5, 7) and cfg.model.collaborative
    assert cfg.eval.metric == "cosine" and not cfg.eval.rerank


def test_round_trip_through_dict():
    cfg = experiments.profile("synthetic", ["model.parts=2,3", "train.grad_clip=5"])
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash() == cfg.config_hash()


def test_overrides_are_parsed_by_field_type():
    cfg = ExperimentConfig().with_overrides(
        ["train.epochs=12", "model.collaborative=false", "model.parts=(3,5)", "train.grad_clip=none"]
    )
    assert cfg.train.epochs == 12 and cfg.model.collaborative is False
    assert cfg.model.parts == (3, 5) and cfg.train.grad_clip is None


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1", "lrr"),
        ("trainer.lr=1", "section"),
        ("train.epochs=ten", "train.epochs"),
        ("model.collaborative=maybe", "model.collaborative"),
        ("noequals", "section.field=value"),
    ],
)
def test_bad_overrides_name_the_field(override, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        ExperimentConfig().with_overrides([override])


@pytest.mark.parametrize(
    "override, words",
    [
        ("data.dataset=market", "data.dataset"),
        ("model.backbone=vgg", "model.backbone"),
        ("loss.mode=all", "loss.mode"),
        ("train.epochs=0", "train.epochs"),
        ("data.erasing_p=2", "data.erasing_p"),
        ("model.parts=5,3", "model.parts"),
    ],
)
def test_validation_rejects_bad_values(override, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        experiments.profile("synthetic", [override])


def test_real_dataset_needs_a_root():
    with pytest.raises(ConfigError, match="data_root"):
        experiments.profile("paper")


def test_hash_ignores_bookkeeping_but_not_the_recipe():
    base = experiments.profile("synthetic")
    assert base.with_overrides(["train.eval_every=3"]).config_hash() == base.config_hash()
    assert base.with_overrides(["train.lr=0.1"]).config_hash() != base.config_hash()


def test_describe_sources_marks_overrides():
    rows = {r["field"]: r for r in describe_sources(ExperimentConfig().with_overrides(["train.lr=1"]))}
    assert rows["train.lr"]["origin"] == "paper (overridden)"
    assert rows["train.epochs"]["origin"] == "paper"
    assert rows["train.weight_decay"]["origin"] == "ours"


def test_every_paper_table_row_has_an_experiment():
    assert set(paper.TABLE2) == set(experiments.TABLE2)
    assert set(paper.TABLE3) == set(experiments.TABLE3)
    assert set(paper.TABLE4) == set(experiments.TABLE4)


def test_table_rows_differ_in_what_the_paper_varies():
    t2 = experiments.experiment("table2", "part-1,3,5,7", "smoke")
    t3 = experiments.experiment("table3", "part-1,3,5,7 with CA", "smoke")
    assert (t2.model.parts, t2.model.collaborative) == ((3, 5, 7), False)
    assert (t3.model.parts, t3.model.collaborative) == ((3, 5, 7), True)
    assert t2.loss.mode == t3.loss.mode == "ce+triplet"
    ce = experiments.experiment("table4", "CAN + CE", "smoke")
    assert ce.loss.mode == "ce" and ce.model.parts == (3, 5, 7)


def test_unknown_profile_table_and_row_list_the_choices():
    with pytest.raises(ConfigError, match="smoke, synthetic, paper"):
        experiments.profile("tiny")
    with pytest.raises(ConfigError, match="table2"):
        experiments.experiment("table9", "x", "smoke")
    with pytest.raises(ConfigError, match="part-1,2,3"):
        experiments.experiment("table2", "part-9", "smoke")
    with pytest.raises(ConfigError, match="table2"):
        paper.paper_rows("table9")


def test_paper_rows_copy_the_published_numbers():
    rows = {r["row"]: r for r in paper.paper_rows("table4")}
    assert rows["global & local to L_c"]["mAP"] == 89.6
    assert paper.TABLE5["CAN"] == (90.6, 96.4, 98.8, 99.3)
    assert paper.TABLE6["MGN"][0] is not None and paper.TABLE6["GLAD"][0] is None


def test_config_choices_equal_the_builders_names():
    from canlib import config, losses, model

    assert set(config.MODELS) == set(model.MODEL_NAMES)
    assert set(config.BACKBONES) == set(model.BACKBONES)
    assert set(config.LOSS_MODES) == set(losses.LOSS_MODES)
