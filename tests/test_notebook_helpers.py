"""Helpers the notebooks call, on hand-worked inputs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from canlib.errors import ConfigError
from canlib.repro import notebook
from canlib.repro.reproduce import notebook_parameters, output_dirs


def test_family_confusions_by_hand():
    # Gallery: pid 1, 2, 4, 3, 5 (all camera 1); families: {1, 2} and {3, 4}; 5 has none.
    # q0 (pid 1): ranked 1 (hit), 2, ... -> first wrong is 2, its family: a confusion.
    # q1 (pid 3): ranked 2, 3 (hit), ... -> first wrong is 2, another family: none.
    # q2 (pid 5): no family. Shares: 1 of 3 queries, 1 of 2 family queries.
    raw = {
        "distmat": np.array(
            [[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.1, 0.3, 0.2, 0.6], [0.1, 0.2, 0.3, 0.4, 0.05]]
        ),
        "q_pids": np.array([1, 3, 5]),
        "q_camids": np.array([0, 0, 0]),
        "g_pids": np.array([1, 2, 4, 3, 5]),
        "g_camids": np.array([1, 1, 1, 1, 1]),
    }
    got = notebook.family_confusions(raw, {1: 0, 2: 0, 3: 1, 4: 1})
    assert got["queries"] == 3 and got["queries in families"] == 2
    assert got["top wrong match in the family (% of all queries)"] == pytest.approx(100 / 3)
    assert got["top wrong match in the family (% of family queries)"] == pytest.approx(50.0)


class _MapModel(nn.Module):
    """A stand-in whose layer-4 'map' is fixed: 1 on the top half of the image, 0 below."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.size = (height, width)

    def feature_maps(self, images):
        fmap = torch.zeros(len(images), 2, *self.size)
        fmap[:, :, : self.size[0] // 2] = 1.0
        return {"global": fmap}


def test_body_share_is_the_maps_mass_inside_the_person_mask(tmp_path, monkeypatch):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path))
    from canlib import engine, synthetic
    from canlib.repro.experiments import profile

    cfg = profile("smoke")
    data = engine.build_data(cfg)
    name = str(Path(data.query[0][0]).relative_to(data.root))
    mask = synthetic.render_masks(data.root, [name])[name] > 0
    h, w = mask.shape
    # The map is drawn at the crop's own size, so no resizing: the share is the person's
    # pixels in the top half over all top-half pixels.
    want = 100.0 * mask[: h // 2].sum() / (h // 2 * w)
    got = notebook.body_share(_MapModel(h, w), data, cfg, count=1)
    assert got == pytest.approx(want, rel=1e-5)
    assert (
        notebook.body_share(
            _MapModel(h, w),
            data,
            cfg.with_overrides({"data.dataset": "market1501", "data.data_root": "/x"}),
            count=1,
        )
        is None
    )


# ----------------------------------------------------------------------------- start()


@pytest.fixture
def output_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CANLIB_OUTPUT_ROOT", str(tmp_path))
    return tmp_path


def test_start_puts_outputs_under_the_output_root_by_default(output_root):
    run = notebook.start("smoke", device="cpu", seed=2, overrides=["data.pad=2"])
    assert run.results_dir == output_root / "results" / "smoke"
    assert run.figures_dir == output_root / "figures" / "smoke"
    assert run.runs_dir == output_root / "results" / "smoke" / "runs"
    assert all(p.is_dir() for p in (run.results_dir, run.figures_dir, run.runs_dir))
    assert not run.force and run.checkpoint is None
    cfg = run.base_config()
    assert (cfg.train.seed, cfg.data.pad, cfg.train.device) == (2, 2, "cpu")


def test_start_takes_the_plumbing_from_options(output_root, tmp_path):
    checkpoint = tmp_path / "can.pt"
    checkpoint.write_bytes(b"not read by start")
    options = {
        "force": True,
        "checkpoint": str(checkpoint),
        "results_dir": str(tmp_path / "r"),
        "figures_dir": str(tmp_path / "f"),
        "runs_dir": str(tmp_path / "cache"),
    }
    run = notebook.start("smoke", None, None, "cpu", 0, [], options)
    assert run.force and run.checkpoint == checkpoint
    assert (run.results_dir, run.figures_dir, run.runs_dir) == (
        tmp_path / "r",
        tmp_path / "f",
        tmp_path / "cache",
    )
    # runs_dir follows a custom results_dir unless it is set itself.
    run = notebook.start("smoke", options={"results_dir": str(tmp_path / "r2")})
    assert run.runs_dir == tmp_path / "r2" / "runs"


def test_start_option_epochs_rescales_the_profiles_milestones(output_root):
    # synthetic: 3 epochs, one decay at epoch 2; 8 epochs decay at round(2 * 8 / 3) = 5.
    cfg = notebook.start("synthetic", options={"epochs": 8}).base_config()
    assert (cfg.train.epochs, cfg.train.milestones) == (8, (5,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, r"parameter seed must be a non-negative integer \(got -1\)"),
        ({"seed": True}, r"parameter seed must be a non-negative integer \(got True\)"),
        ({"dataset": "market"}, r"bad notebook parameter: data.dataset must be one of"),
        ({"overrides": ["train.lrr=1"]}, r"bad notebook parameter: .*'lrr'"),
        ({"overrides": ["pad"]}, r"override 'pad' must look like 'section.field=value'"),
        ({"options": ["force"]}, r"parameter options must be a dict such as"),
        ({"options": {"forse": True}}, r"parameter options: unknown key 'forse'; known keys: "),
        ({"options": {"force": "yes"}}, r"option force must be True or False \(got 'yes'\)"),
        ({"options": {"epochs": 0}}, r"option epochs must be None or a positive integer"),
        ({"options": {"checkpoint": "/nowhere/can.pt"}}, r"option checkpoint: no file at"),
        ({"options": {"runs_dir": 3}}, r"option runs_dir must be a path or None \(got 3\)"),
    ],
)
def test_start_refuses_a_bad_parameter_in_one_sentence_before_any_folder(
    output_root, kwargs, message
):
    with pytest.raises(ConfigError, match=message) as caught:
        notebook.start("smoke", **kwargs)
    assert "\n" not in str(caught.value)
    assert not (output_root / "results").exists()


def test_reproduce_sends_parameters_that_start_accepts(output_root, tmp_path, monkeypatch):
    # The runner's parameters and start()'s signature are one contract: papermill injects
    # these names into the parameters cell, whose values the notebook passes to start().
    dirs = output_dirs("smoke", tmp_path / "repo")
    cwd = tmp_path / "repo" / "notebooks"
    cwd.mkdir(parents=True)
    params = notebook_parameters("smoke", ["data.pad=2"], "cpu", True, dirs, cwd=cwd)
    assert params["options"]["results_dir"] == "../results/smoke"
    monkeypatch.chdir(cwd)
    run = notebook.start(**params)
    assert run.force and run.base_config().data.pad == 2
    assert (run.results_dir, run.figures_dir, run.runs_dir) == (
        Path("../results/smoke"),
        Path("../figures/smoke"),
        Path("../results/smoke/runs"),
    )
    assert (tmp_path / "repo" / "figures" / "smoke").is_dir()


def test_run_longer_doubles_the_epochs_but_keeps_the_milestones(output_root, monkeypatch):
    trained = []
    monkeypatch.setattr(
        notebook.results,
        "run_experiment",
        lambda cfg, runs_dir, **kwargs: trained.append(cfg) or {"run_dir": "x"},
    )
    run = notebook.start("synthetic")
    profile_cfg = run.config("table4", "global & local to L_c")
    assert run.run_longer("table4", "global & local to L_c") == {"run_dir": "x"}
    (cfg,) = trained
    assert cfg.train.epochs == 2 * profile_cfg.train.epochs
    assert cfg.train.milestones == profile_cfg.train.milestones  # same schedule, run on
    assert cfg.train.eval_every == 1 and cfg.train.seed == profile_cfg.train.seed
    paper = notebook.NotebookRun("paper", [], output_root, output_root, output_root)
    assert paper.run_longer("table4", "global & local to L_c") is None
    assert len(trained) == 1  # the paper profile trains nothing


def test_convergence_note_reads_the_gain_after_the_profiles_stop():
    log = [
        {"kind": "train", "epoch": 1, "loss_total": 3.0},
        {"kind": "eval", "epoch": 1, "mAP": 80.0},
        {"kind": "eval", "epoch": 2, "mAP": 85.25},
        {"kind": "eval", "epoch": 3, "mAP": 86.0},
        {"kind": "eval", "epoch": 4, "mAP": 86.5},
    ]
    # 86.5 - 85.25 = 1.25, printed +1.2 (round half to even on 1.25)
    assert notebook.convergence_note(log, 2) == (
        "mAP 85.2 where the profile stops (epoch 2), 86.5 after 4 epochs: +1.2 points for "
        "2 more epochs"
    )
    assert notebook.convergence_note(log, 3).endswith("+0.5 points for 1 more epoch")
    assert notebook.convergence_note(log, 4) == "no evaluation after epoch 4 to compare with"
