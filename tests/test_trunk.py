"""canlib's own pretrained trunk (``model.pretrained="synthetic-trunk"``): its recipe, its
cache, and that the rows really start from its weights."""

from __future__ import annotations

import json

import pytest
import torch

from canlib import config, engine, trunk
from canlib.repro.experiments import experiment, profile


def _smoke_trunk_cfg(**overrides):
    return profile("smoke", {"model.pretrained": "synthetic-trunk", **overrides})


def test_every_row_shares_one_trunk_trained_on_disjoint_identities():
    rows = [
        experiment("table2", "part-1,2,3", "synthetic"),
        experiment("sota", "MGN", "synthetic"),
        experiment("table4", "CAN + CE", "synthetic"),
    ]
    recipes = {trunk.trunk_config(cfg).config_hash() for cfg in rows}
    assert len(recipes) == 1  # losses, parts and model name do not change the trunk
    recipe = trunk.trunk_config(rows[0])
    assert recipe.data.synthetic_seed == rows[0].data.synthetic_seed + 1  # disjoint identities
    assert recipe.model.name == "global" and recipe.model.pretrained is False
    assert (recipe.model.backbone, recipe.data.height, recipe.data.width) == (
        "resnet18-quarter",
        144,
        48,
    )
    other_size = profile("synthetic", {"data.height": 192, "data.width": 64})
    assert trunk.trunk_config(other_size).config_hash() not in recipes


def test_the_trunk_recipe_is_part_of_the_hash_of_every_run_that_uses_it(monkeypatch):
    cfg = profile("synthetic")
    before = cfg.config_hash()
    monkeypatch.setattr(config, "TRUNK_EPOCHS", config.TRUNK_EPOCHS + 1)
    assert cfg.config_hash() != before
    scratch = profile("synthetic", {"model.pretrained": False})
    monkeypatch.setattr(config, "TRUNK_EPOCHS", config.TRUNK_EPOCHS - 1)
    assert scratch.config_hash() == profile("synthetic", {"model.pretrained": False}).config_hash()


def test_the_trunk_is_pretrained_once_cached_and_loaded_into_every_branch(tmp_path, monkeypatch):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(trunk, "TRUNK_EPOCHS", 2)
    monkeypatch.setattr(trunk, "TRUNK_MILESTONES", ())
    cfg = _smoke_trunk_cfg()
    path = trunk.ensure_trunk(cfg, progress=False)
    record = json.loads((path.parent / "recipe.json").read_text())
    assert record["config"]["data"]["synthetic_seed"] == 1
    assert record["config"]["model"]["name"] == "global"
    assert record["wall_seconds"] > 0 and record["own_test_metrics"]["mAP"] is not None
    assert trunk.describe(cfg) == record

    # Cached: a second request trains nothing.
    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("retrained the trunk"))
    assert trunk.ensure_trunk(cfg) == path

    state = torch.load(path, weights_only=True)
    model = engine.build_model_from_config(cfg, num_classes=5)
    torch.testing.assert_close(model.stem[0].weight, state["conv1.weight"])
    for branch in model.branches.values():  # every branch's layer4 starts from the trunk's
        torch.testing.assert_close(branch[0].conv1.weight, state["layer4.0.conv1.weight"])
    scratch = engine.build_model_from_config(_smoke_trunk_cfg(**{"model.pretrained": False}), 5)
    assert not torch.equal(scratch.stem[0].weight, state["conv1.weight"])


def test_a_run_without_the_trunk_describes_none():
    assert trunk.describe(profile("smoke")) is None
