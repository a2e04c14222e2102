"""Tests of ``python -m canlib`` in real subprocesses: kill and resume, torchrun DDP, bad input.

Each subprocess pays about 3 s of torch import, so the cases that only check an error are
started together and awaited together. The tiny Market-1501-layout tree and the smoke
settings are those of ``test_engine.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from test_engine import (  # noqa: F401  (_restore_torch_globals: an autouse fixture)
    SCORE_KEYS,
    _restore_torch_globals,
    smoke_config,
    write_tiny_market,
)

from canlib import checkpoint, engine

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def market_root(tmp_path_factory) -> Path:
    return write_tiny_market(tmp_path_factory.mktemp("tiny-market-cli"))


def canlib_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "canlib", *args]


def run_canlib(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        canlib_command(*args),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def data_args(root: Path) -> list[str]:
    return ["--profile", "smoke", "--dataset", "market1501", "--data-root", str(root)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- kill + resume


def test_sigkilled_run_resumed_from_the_command_line_equals_uninterrupted(market_root, tmp_path):
    options = ["--set", "train.epochs=3", "--set", "train.deterministic=true"]
    run_dir = tmp_path / "killed"
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            canlib_command("train", *data_args(market_root), *options, "--out", str(run_dir)),
            cwd=REPO,
            env=ENV,
            stdout=out,
            stderr=err,
        )
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint-e00001.pt").exists():
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "no first checkpoint within 120 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # Killed before the end: epochs 2-3 still take a few hundred ms after the first checkpoint.
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()

    resumed = run_canlib("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    resumed_metrics = json.loads(resumed.stdout)
    assert resumed_metrics["run_dir"] == str(run_dir)

    cfg = smoke_config(market_root, "train.epochs=3", "train.deterministic=true")
    whole = engine.train(cfg, tmp_path / "whole", progress=False)
    a = checkpoint.load_checkpoint(tmp_path / "whole" / "checkpoint-e00003.pt")
    b = checkpoint.load_checkpoint(run_dir / "checkpoint-e00003.pt")
    assert a["config_hash"] == b["config_hash"] == cfg.config_hash()
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key in SCORE_KEYS:
        assert resumed_metrics[key] == whole.metrics[key], key


# ----------------------------------------------------------------------------- DDP


def reference_two_share_training(cfg, epochs: int) -> tuple[dict, dict]:
    """Single-process equivalent of 2-rank DDP with per-rank BatchNorm, written out plainly.

    Each step takes the global P x K batch split into the two ranks' shares
    (``PKSampler(rank=r, world_size=2)``), computes each share's loss separately (BatchNorm
    normalises with the share's own statistics, as unsynchronised DDP does), averages the
    two gradients, and takes one Adam step; the centre-loss centres get the averaged
    gradient divided by the loss weight and one SGD step. BatchNorm running statistics are
    rank 0's: DDP broadcasts rank 0's buffers before every forward, so rank 1's share never
    changes them; here they are put back after the second share's forward.

    Returns:
        ``(model state, criterion state)`` after ``epochs`` x ``steps_per_epoch`` steps.
    """
    from canlib.data.loader import ImageDataset
    from canlib.data.sampling import PKSampler
    from canlib.data.transforms import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        decode_to_size,
        normalize,
        to_float,
    )
    from canlib.datasets import build_dataset
    from canlib.losses import CANLoss
    from canlib.model import build_model

    data = build_dataset("market1501", cfg.data.data_root)
    pids = [r[1] for r in data.train]
    num_classes = len(set(pids))
    # Augmentation is off in this test (flip_p = pad = erasing_p = 0): images are fixed, the
    # decoded input-size pixels, normalised.
    images = ImageDataset(
        data.train,
        lambda image: normalize(to_float(image), IMAGENET_MEAN, IMAGENET_STD),
        lambda path: decode_to_size(path, cfg.data.height, cfg.data.width),
    )

    # The ranks run with train.threads; the same count keeps every sum in the same order.
    # (Adam's first steps normalise gradients, so rounding noise in a near-zero gradient
    # would become an lr-sized weight difference: about 5e-2 after 4 steps with 2 threads.)
    torch.set_num_threads(cfg.train.threads or 1)
    torch.manual_seed(cfg.train.seed)  # the engine seeds, then builds the model, then the loss
    m = cfg.model
    model = build_model(
        m.name,
        num_classes,
        backbone=m.backbone,
        pretrained=False,
        embed_dim=m.embed_dim,
        input_size=(cfg.data.height, cfg.data.width),
        scale=m.scale,
        pooling=m.pooling,
        parts=m.parts,
        collaborative=m.collaborative,
    )
    criterion = CANLoss(
        num_classes=num_classes,
        num_features=model.num_features,
        feat_dim=model.embed_dim,
        is_global=model.is_global,
        mode=cfg.loss.mode,
        margin=cfg.loss.margin,
        center_weight=cfg.loss.center_weight,
        label_smoothing=cfg.loss.label_smoothing,
    )
    # The engine's Adam variant (fused by default): their rounding differs, and Adam's first
    # steps would turn that into lr-sized weight differences.
    adam = torch.optim.Adam(
        model.parameters(),
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        fused=cfg.train.fused_adam,
    )
    centers = list(criterion.parameters())
    sgd = torch.optim.SGD(centers, lr=cfg.loss.center_lr)
    shares = [
        PKSampler(pids, p=cfg.data.p, k=cfg.data.k, seed=cfg.train.seed, rank=r, world_size=2)
        for r in (0, 1)
    ]
    model.train()
    for epoch in range(epochs):
        batches = [share.batches(epoch)[: cfg.train.steps_per_epoch] for share in shares]
        for step_batches in zip(*batches):
            adam.zero_grad()
            sgd.zero_grad()
            rank0_buffers = None
            for rank, indices in enumerate(step_batches):
                x = torch.stack([images[i][0] for i in indices])
                y = torch.tensor([images[i][1] for i in indices])
                criterion(model(x), y)["total"].backward()
                if rank == 0:
                    rank0_buffers = {k: v.clone() for k, v in model.named_buffers()}
            for name, buffer in model.named_buffers():
                buffer.copy_(rank0_buffers[name])
            for p in [*model.parameters(), *centers]:
                if p.grad is not None:
                    p.grad /= 2
            for p in centers:
                p.grad /= cfg.loss.center_weight
            adam.step()
            sgd.step()
    return model.state_dict(), criterion.state_dict()


def test_torchrun_two_gloo_ranks_equal_the_two_share_reference(market_root, tmp_path):
    sets = ["data.p=4", "train.epochs=2", "data.flip_p=0", "data.pad=0", "data.erasing_p=0"]
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master-port={free_port()}",
        "-m",
        "canlib",
        "train",
        *data_args(market_root),
        "--device",
        "cpu",
        *[a for s in sets for a in ("--set", s)],
        "--out",
        str(run_dir),
    ]
    done = subprocess.run(
        command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # Rank 0 alone logs, checkpoints and prints: one JSON document, one row per epoch.
    assert done.stdout.count('"run_dir"') == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint-e00001.pt",
        "checkpoint-e00002.pt",
        "config.json",
        "metrics.jsonl",
        "summary.json",
    ]
    rows = engine.read_log(run_dir)
    assert [(r["kind"], r["epoch"]) for r in rows] == [
        ("train", 1),
        ("eval", 1),
        ("train", 2),
        ("eval", 2),
    ]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2

    cfg = smoke_config(market_root, "train.device=cpu", *sets)
    model_state, criterion_state = reference_two_share_training(cfg, epochs=2)
    state = checkpoint.load_checkpoint(run_dir / "checkpoint-e00002.pt")
    assert state["config_hash"] == cfg.config_hash()
    assert state["model"].keys() == model_state.keys()
    for key, value in model_state.items():
        assert torch.allclose(state["model"][key].to(value.dtype), value, atol=1e-5), key
    for key, value in criterion_state.items():
        assert torch.allclose(state["criterion"][key], value, atol=1e-5), key
    # The reference really moved away from the initialisation (the comparison is not vacuous).
    assert state["epoch"] == 2 and state["optimizer"]["state"]


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def trained_run(market_root, tmp_path_factory) -> Path:
    """A finished 2-epoch smoke run, trained in-process."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.train(smoke_config(market_root), run_dir, progress=False)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)
    return run_dir


def test_bad_command_lines_exit_2_with_one_error_line(market_root, trained_run, tmp_path):
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    cases = {
        # args: words the error line must contain
        ("train", "--profile", "nope"): ["unknown profile 'nope'", "smoke"],
        ("train", "--profile", "smoke", "--set", "train.nope=1"): ["unknown field 'nope'"],
        ("train", "--profile", "smoke", "--set", "train.epochs=many"): [
            "train.epochs",
            "integer",
            "'many'",
        ],
        ("train", "--profile", "smoke", "--set", "train.epochs"): [
            "train.epochs",
            "section.field=value",
        ],
        ("train", "--resume", str(not_a_run)): [str(not_a_run), "config.json"],
        ("train", "--resume", str(trained_run), "--set", "train.lr=0.5"): ["different config"],
        ("train", *data_args(tmp_path / "missing")): [str(tmp_path / "missing")],
        ("evaluate", "--checkpoint", str(tmp_path / "none.pt")): [str(tmp_path / "none.pt")],
    }
    procs = {
        args: subprocess.Popen(
            canlib_command(*args),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in cases
    }
    for args, words in cases.items():
        stdout, stderr = procs[args].communicate(timeout=120)
        assert procs[args].returncode == 2, (args, stderr)
        assert "Traceback" not in stderr, (args, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), (args, stderr)
        for word in words:
            assert word in errors[0], (args, word, errors[0])
        assert stdout == ""
    # The refused resume left the finished run as it was.
    assert len(engine.read_log(trained_run)) == 4


def test_evaluate_prints_the_runs_final_metrics_as_json(trained_run, tmp_path):
    out = tmp_path / "metrics.json"
    done = run_canlib(
        "evaluate",
        "--checkpoint",
        str(trained_run / "checkpoint-e00002.pt"),
        "--device",
        "cpu",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert {"rank1", "mAP", "mINP"} <= printed.keys()
    assert json.loads(out.read_text()) == printed
    # Same weights, same data, same protocol as the run's own last evaluation.
    final_eval = [r for r in engine.read_log(trained_run) if r["kind"] == "eval"][-1]
    for key in ("rank1", "mAP", "mINP", "num_valid"):
        assert printed[key] == pytest.approx(final_eval[key], abs=1e-6), key


def test_check_data_refuses_a_truncated_image_by_name_or_lists_it(tmp_path):
    root = tmp_path / "market"
    write_tiny_market(root)
    victim = min((root / "bounding_box_train").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:200])  # cut the JPEG short
    args = [
        sys.executable,
        "-m",
        "canlib",
        "check-data",
        "--dataset",
        "market1501",
        "--data-root",
        str(root),
    ]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert victim.name in refused.stderr.strip().splitlines()[-1]
    listed = subprocess.run(
        args + ["--remove-bad"], capture_output=True, text=True, timeout=120, check=False
    )
    assert listed.returncode == 0, listed.stderr[-1000:]
    assert "train: 39 readable, 1 unreadable" in listed.stdout and victim.name in listed.stdout


def test_train_refuses_a_truncated_training_jpeg_by_name_before_any_step(tmp_path):
    # Issue 15: the smoke run used to draw 2 x 2 batches, miss the file and exit 0.
    root = tmp_path / "market"
    write_tiny_market(root)
    victim = max((root / "bounding_box_train").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:300])  # cut the JPEG short
    env = {**ENV, "CANLIB_CACHE": str(tmp_path / "cache")}
    run_dir = tmp_path / "run"
    refused = subprocess.run(
        canlib_command("train", *data_args(root), "--out", str(run_dir)),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert str(victim) in last and "1 of 40 training images cannot be decoded" in last
    assert "before its first step" in last and "check-data --dataset market1501" in last
    assert not (run_dir / "metrics.jsonl").exists() and not list(run_dir.glob("checkpoint-*"))


@pytest.mark.parametrize(
    ("device", "backend"),
    [
        ("auto", "nccl"),
        ("cuda", "nccl"),
        ("cpu", "gloo"),
    ],
)
def test_torchrun_backend_follows_the_runs_device_not_the_machine(device, backend, monkeypatch):
    """On a GPU machine (CUDA faked available) a CPU run joins with gloo, a CUDA run with NCCL."""
    from datetime import timedelta

    import torch.distributed as dist

    from canlib.__main__ import _process_group

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroyed"))
    with _process_group(device) as rank:
        assert rank == 1
    options, destroyed = calls
    assert destroyed == "destroyed"
    assert options["backend"] == backend
    assert options["timeout"] == timedelta(hours=1)
    if backend == "nccl":
        assert options["device_id"] == torch.device("cuda", 1)
    else:
        assert "device_id" not in options


def test_reproduce_forwards_the_shared_run_options_and_keeps_the_device_its_own(monkeypatch):
    """``reproduce`` takes the same --dataset/--data-root/--device/--set as ``train``; the
    device goes to each notebook's own parameter, the rest become overrides in --set's order."""
    from canlib import __main__ as cli
    from canlib.repro import reproduce as reproduce_module

    calls = []

    def fake(profile, **kwargs):
        calls.append((profile, kwargs))
        return {"notebooks": {}}

    monkeypatch.setattr(reproduce_module, "reproduce", fake)
    argv = ["reproduce", "--profile", "smoke", "--dataset", "market1501", "--data-root", "/d"]
    assert cli.main([*argv, "--device", "cpu", "--set", "train.epochs=2", "--only", "03"]) == 0
    assert cli.main(["reproduce"]) == 0
    assert calls == [
        (
            "smoke",
            {
                "overrides": ["data.dataset=market1501", "data.data_root=/d", "train.epochs=2"],
                "device": "cpu",
                "only": ["03"],
                "force": False,
            },
        ),
        ("synthetic", {"overrides": [], "device": "auto", "only": None, "force": False}),
    ]
