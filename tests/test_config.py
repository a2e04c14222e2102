"""Config dataclasses, profiles and table rows."""

import dataclasses
import json
import re

import pytest

from canlib.config import SECTIONS, ExperimentConfig, describe_sources, source_kind
from canlib.errors import ConfigError
from canlib.repro import experiments, paper


def test_every_field_has_one_of_the_three_source_kinds():
    cfg = ExperimentConfig()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            source = f.metadata.get("source", "")
            kind, sep, note = source.partition(": ")
            assert kind in ("paper", "ours", "deviation") and sep and note, f"{section}.{f.name}"


def test_weight_decay_pooling_and_cuhk03_are_classified_as_the_paper_says():
    # §4.6: "Adam optimizer is utilized with default parameters": torch's default is 0.
    assert source_kind("train", "weight_decay")[0] == "paper"
    assert ExperimentConfig().train.weight_decay == 0.0
    # Eq. (1) states the stripe windows; we keep torch's adaptive bins: a deviation.
    assert source_kind("model", "pooling")[0] == "deviation"
    assert ExperimentConfig().model.pooling == "adaptive"
    # §4.7: all CUHK03 testing images, labeled and detected together.
    assert source_kind("data", "cuhk03_subset") == (
        "paper",
        "§4.7, all testing images, labeled and detected together",
    )
    assert ExperimentConfig().data.cuhk03_subset == "both"


def test_no_ours_note_claims_that_the_paper_builds_on_mgn_code():
    # The paper only says it is inspired by MGN's multi-branch structure (§2.3).
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(ExperimentConfig(), section)):
            note = f.metadata["source"]
            assert "builds on" not in note and "MGN code" not in note, f"{section}.{f.name}"


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
        [
            "train.epochs=12",
            "model.collaborative=false",
            "model.parts=(3,5)",
            "train.grad_clip=none",
        ]
    )
    assert cfg.train.epochs == 12 and cfg.model.collaborative is False
    assert cfg.model.parts == (3, 5) and cfg.train.grad_clip is None


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1", "lrr"),
        ("trainer.lr=1", "section"),
        ("train.epochs=ten", "train.epochs"),
        # float("inf") is a float, but int() of it overflows: the same one sentence.
        ("train.epochs=inf", "train.epochs expects an integer, got 'inf'"),
        ("train.epochs=2.5", "train.epochs expects an integer"),
        ("train.epochs=true", "train.epochs expects an integer"),
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
    cfg = ExperimentConfig().with_overrides(["train.lr=1", "train.seed=3", "model.pooling=eq1"])
    rows = {r["field"]: r for r in describe_sources(cfg)}
    # A changed paper value is a deviation; its note names what the paper states.
    assert rows["train.lr"]["origin"] == "deviation (overridden)"
    assert "0.0003" in rows["train.lr"]["note"] and "§4.6" in rows["train.lr"]["note"]
    assert rows["train.epochs"]["origin"] == "paper"
    assert rows["train.weight_decay"]["origin"] == "paper"
    assert rows["train.seed"]["origin"] == "ours (overridden)"
    assert rows["train.grad_clip"]["origin"] == "ours"
    assert rows["model.pooling"]["origin"] == "paper (overridden)"  # eq. (1) itself
    assert rows["loss.center_lr"]["origin"] == "deviation"


def test_describe_sources_reads_profile_reasons_and_table_rows():
    cfg = experiments.experiment("sota", "MGN", "synthetic")
    rows = {r["field"]: r for r in experiments.sources(cfg, "synthetic", "sota", "MGN")}
    wd = rows["train.weight_decay"]
    assert (wd["value"], wd["origin"]) == ("0.0005", "deviation (overridden)")
    assert "0.0" in wd["note"] and "BoT" in wd["note"]
    assert rows["model.name"]["origin"] == "paper (overridden)"  # the paper's MGN baseline
    assert rows["loss.mode"]["origin"] == "ours (overridden)"  # MGN's recipe, not the paper's
    assert "MGN" in rows["loss.margin"]["note"]
    t2 = experiments.experiment("table2", "part-1,2,3", "smoke")
    rows = {r["field"]: r for r in experiments.sources(t2, "smoke", "table2", "part-1,2,3")}
    assert rows["model.parts"]["origin"] == "paper (overridden)"
    # Every field a profile changes has a reason.
    for name in experiments.PROFILES:
        changed = [
            r["field"]
            for r in describe_sources(experiments.PROFILES[name]())
            if "(overridden)" in r["origin"]
        ]
        assert set(changed) <= set(experiments.PROFILE_REASONS[name]), name


def test_every_row_of_every_table_validates_under_every_profile():
    for table, rows in experiments.TABLES.items():
        for row in rows:
            for name in experiments.PROFILES:
                root = ["data.data_root=/data"] if name == "paper" else None
                cfg = experiments.experiment(table, row, name, root)
                assert cfg.name.startswith(table)


def test_mgn_rows_use_mgns_own_losses():
    for table in ("figure4", "sota"):
        cfg = experiments.experiment(table, "MGN", "smoke")
        assert (cfg.model.name, cfg.loss.mode, cfg.loss.margin) == ("mgn", "mgn", 1.2)


def test_paper_profile_has_no_weight_decay_and_miniatures_keep_5e_4():
    assert experiments.profile("paper", ["data.data_root=/x"]).train.weight_decay == 0.0
    assert experiments.profile("synthetic").train.weight_decay == 5e-4
    assert experiments.profile("smoke").train.weight_decay == 5e-4


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.name=mgn", "model.scale=30"],
            (
                "model.scale=30.0 has no effect on model.name='mgn' (MGN uses linear classifiers); "
                "remove it"
            ),
        ),
        (
            ["model.name=mgn", "model.parts=2,3"],
            "model.parts=(2, 3) has no effect on model.name='mgn'",
        ),
        (
            ["model.name=mgn", "model.collaborative=false"],
            "model.collaborative=False has no effect on model.name='mgn'",
        ),
        (
            ["model.name=mgn", "model.pooling=eq1"],
            "model.pooling='eq1' has no effect on model.name='mgn'",
        ),
        (
            ["model.name=global", "model.parts=3,5"],
            "model.parts=(3, 5) has no effect on model.name='global'",
        ),
        (
            ["model.name=global", "model.collaborative=false"],
            "model.collaborative=False has no effect on model.name='global'",
        ),
        (
            ["model.name=global", "model.pooling=eq1"],
            "model.pooling='eq1' has no effect on model.name='global'",
        ),
        (["loss.mode=mgn"], "loss.mode='mgn' is MGN's own loss recipe, for model.name='mgn'"),
        (["loss.mode=ce", "loss.margin=0.5"], "loss.margin=0.5 has no effect on loss.mode='ce'"),
        (
            ["loss.mode=ce+triplet", "loss.center_weight=0.01"],
            "loss.center_weight=0.01 has no effect on loss.mode='ce+triplet'",
        ),
        (
            ["model.name=mgn", "loss.mode=mgn", "loss.center_lr=0.1"],
            "loss.center_lr=0.1 has no effect on loss.mode='mgn'",
        ),
    ],
)
def test_fields_the_model_or_loss_ignores_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        experiments.profile("smoke", overrides)


def test_fields_the_model_uses_are_accepted():
    # MGN honours the backbone, the embedding size (MGN-pytorch --feats) and its margin.
    cfg = experiments.profile("smoke", ["model.name=mgn", "model.embed_dim=64", "loss.margin=1.2"])
    assert cfg.model.embed_dim == 64
    experiments.profile("smoke", ["model.name=global", "model.scale=30"])  # cosine classifier


def test_hash_ignores_options_of_datasets_the_run_does_not_use():
    base = experiments.profile("synthetic")
    assert base.with_overrides(["data.cuhk03_subset=labeled"]).config_hash() == base.config_hash()
    real = experiments.profile("paper", ["data.data_root=/x", "data.dataset=cuhk03"])
    assert real.with_overrides(["data.cuhk03_subset=labeled"]).config_hash() != real.config_hash()
    market = experiments.profile("paper", ["data.data_root=/x"])
    assert (
        market.with_overrides(["data.synthetic_size=smoke"]).config_hash() == market.config_hash()
    )


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
    assert set(config.TRIPLET_MODES) == {m for m, f in losses._MODES.items() if f[0]}
    assert set(config.CENTER_MODES) == {m for m, f in losses._MODES.items() if f[1]}


# Fields that say how a run is kept or how many runs a row gets, not what one run learns:
# changing them must not rename any run folder (so a cached run is found again).
BOOKKEEPING = [
    "train.seeds=7",
    "train.threads=1",
    "train.device=cpu",
    "train.eval_every=3",
    "train.checkpoint_every=2",
    "data.num_workers=5",
]


@pytest.mark.parametrize(
    "table, row, profile_name",
    [
        ("table2", "part-1,2,3", "smoke"),
        ("table3", "part-1,3,5,7 with CA", "synthetic"),
        ("sota", "MGN", "synthetic"),
        ("table4", "global & local to L_c", "paper"),
    ],
)
def test_bookkeeping_fields_leave_the_run_folder_unchanged(table, row, profile_name):
    root = ["data.data_root=/data"] if profile_name == "paper" else []
    base = experiments.experiment(table, row, profile_name, root)
    for item in BOOKKEEPING:
        assert (
            experiments.experiment(table, row, profile_name, [*root, item]).config_hash()
            == base.config_hash()
        ), item
    assert (
        experiments.experiment(table, row, profile_name, [*root, "train.seed=5"]).config_hash()
        != base.config_hash()
    )


def test_seeds_is_a_profile_field_outside_the_hash():
    assert source_kind("train", "seeds")[0] == "paper"  # the paper reports single runs
    counts = {
        name: experiments.profile(name, ["data.data_root=/x"]).train.seeds
        for name in experiments.PROFILES
    }
    # smoke: 1 seed, so CI re-executes the notebooks three times within its time (make test)
    assert counts == {"smoke": 1, "synthetic": 3, "paper": 1}
    base = experiments.profile("synthetic")
    assert base.with_overrides(["train.seeds=7"]).config_hash() == base.config_hash()
    # Each seed's run differs in train.seed, which the hash keeps.
    assert base.with_overrides(["train.seed=1"]).config_hash() != base.config_hash()
    with pytest.raises(ConfigError, match=r"train\.seeds must be >= 1 \(got 0\)"):
        experiments.profile("smoke", ["train.seeds=0"])


def test_seeds_of_a_miniature_profile_read_as_a_deviation_with_a_reason():
    rows = {
        r["field"]: r for r in experiments.sources(experiments.profile("synthetic"), "synthetic")
    }
    assert rows["train.seeds"]["origin"] == "deviation (overridden)"
    assert "95% interval" in rows["train.seeds"]["note"]


# --- the paper's claims as data ------------------------------------------------------------

# Each claim's effect in the paper, worked by hand from the tables (mAP, Market-1501).
PAPER_EFFECTS = {
    # Table 2: part-1,3,5,7,9 83.9 - part-1,2,3 86.6.
    "Without CA, the finest partition (part-1,3,5,7,9) is worse than part-1,2,3": -2.7,
    # Table 3: part-1,3,5,7 with CA 87.9 - w/o CA 85.4.
    "CA improves part-1,3,5,7": 2.5,
    # (87.9 - 85.4) - (part-1,2,3 with CA 87.4, Table 3 - part-1,2,3 86.6, Table 2) = 2.5 - 0.8.
    "CA helps part-1,3,5,7 more than part-1,2,3": 1.7,
    # Table 4: CE + Triplet 87.9 - CE 87.0; + Center 88.3 - 87.9; global & local 89.6 - 88.3.
    "Triplet loss adds to cross-entropy": 0.9,
    "Center loss adds to cross-entropy + triplet": 0.4,
    "The clustering losses on global and local features beat them on global ones only": 1.3,
    # Table 5: CAN 90.6 - MGN 86.9.
    "CAN beats MGN": 3.7,
    # No number in the paper: a global-only model of its own, and Figure 4's coverage.
    "CAN beats the global-only baseline": None,
    "CAN's layer-4 activation covers more of the body than MGN's": None,
    "CAN's layer-4 activation covers more of the body than the model without CA": None,
}


def test_claims_paper_effects_equal_the_hand_computed_differences():
    got = {c.claim: c.paper_effect for c in experiments.CLAIMS}
    assert got.keys() == PAPER_EFFECTS.keys()
    for claim, expected in PAPER_EFFECTS.items():
        if expected is None:
            assert got[claim] is None, claim
        else:
            assert got[claim] == pytest.approx(expected, abs=1e-9), claim
    directions = {c.claim: c.direction for c in experiments.CLAIMS}
    assert directions.pop(next(iter(PAPER_EFFECTS))) == "-"
    assert set(directions.values()) == {"+"}


def test_every_claims_rows_exist_in_the_tables():
    for claim in experiments.CLAIMS:
        assert len(claim.rows) in (2, 4)
        for table, row in claim.rows:
            assert row in experiments.TABLES[table], (claim.claim, table, row)
    interaction = [c for c in experiments.CLAIMS if len(c.rows) == 4]
    assert [c.rows for c in interaction] == [
        (
            ("table3", "part-1,3,5,7 with CA"),
            ("table3", "part-1,3,5,7 w/o CA"),
            ("table3", "part-1,2,3 with CA"),
            ("table2", "part-1,2,3"),
        )
    ]
    figure4 = [c for c in experiments.CLAIMS if c.table == "Figure 4"]
    assert len(figure4) == 2 and {c.metric for c in figure4} == {"body_share"}
    assert {c.metric for c in experiments.CLAIMS if c.table != "Figure 4"} == {"mAP"}


def test_claim_rows_lists_each_row_once():
    rows = experiments.claim_rows()
    assert len(rows) == len(set(rows)) == 15
    assert ("table2", "part-1,2,3") in rows and ("figure4", "MGN") in rows


def test_a_claim_with_a_bad_row_or_direction_is_refused():
    with pytest.raises(ConfigError, match="no row 'part-9' in table 'table2'"):
        experiments.Claim("x", "Table 2", ("table2", "part-9"), ("table2", "part-1,2,3"), "+")
    with pytest.raises(ConfigError, match="direction"):
        experiments.Claim("x", "Table 2", ("table2", "part-1,2,3"), ("table2", "part-1,2,3"), ">")
    with pytest.raises(ConfigError, match="both c and d"):
        experiments.Claim(
            "x",
            "Table 2",
            ("table2", "part-1,2,3"),
            ("table2", "part-1,2,3"),
            "+",
            c=("table2", "part-1,2,3"),
        )


def test_paper_value_reads_the_mapped_table():
    assert experiments.paper_value("sota", "MGN") == 86.9  # Table 5, Market-1501
    assert experiments.paper_value("sota", "global only") is None
    assert experiments.paper_value("table3", "part-1,3,5,7 w/o CA", "rank10") == 98.8
    assert experiments.paper_value("table2", "part-1,2,3", "rank10") is None  # no column
    assert experiments.paper_value("figure4", "CAN") is None


def test_synthetic_seed_picks_the_data_and_only_a_non_default_seed_enters_the_hash():
    base = experiments.profile("synthetic")
    assert base.data.synthetic_seed == 0
    other = base.with_overrides(["data.synthetic_seed=1"])
    assert other.data.synthetic_seed == 1 and other.config_hash() != base.config_hash()
    # seed 0 leaves the payload as it was before the field existed (old run folders stay valid)
    assert "synthetic_seed" not in json.dumps(base.to_dict()["data"]).replace(
        '"synthetic_seed": 0', ""
    )
    market = experiments.profile("paper", ["data.data_root=/x"])
    assert market.with_overrides(["data.synthetic_seed=3"]).config_hash() == market.config_hash()


def test_pretrained_takes_true_false_or_a_path():
    cfg = experiments.profile("synthetic", ["model.pretrained=/tmp/trunk.pth"])
    assert cfg.model.pretrained == "/tmp/trunk.pth"
    assert experiments.profile("synthetic", ["model.pretrained=false"]).model.pretrained is False
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    # ImageNet weights exist only for full-width ResNets; a canlib-made trunk file fits any
    with pytest.raises(ConfigError, match="standard-width"):
        experiments.profile("synthetic", ["model.pretrained=true"])
    with pytest.raises(ConfigError, match="model.pretrained"):
        experiments.profile("synthetic", ["model.pretrained= "])
