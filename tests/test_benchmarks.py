"""The benchmark scripts stay runnable: each runs end to end at its smallest size.

Their numbers are not checked here (speed is never asserted in tests); what is checked is
that every variant produces a table row with positive throughput and that the ratios are
taken against the first variant of the same run. eval_speed checks internally that canlib
and the textbook algorithm give identical CMC, mAP and mINP.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # as when a script runs: its folder's bench_timing.py imports


def _load(name: str):
    """Import ``benchmarks/<name>.py`` (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


eval_speed = _load("eval_speed")
train_speed = _load("train_speed")
pipeline_accuracy = _load("pipeline_accuracy")
conv_weight_grad = _load("conv_weight_grad")
adam_step = _load("adam_step")


def test_train_speed_quick_prints_a_row_per_variant_and_the_test_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path / "cache"))  # synthetic data, image cache
    argv = [
        "--quick",
        "--size",
        "smoke",
        "--device",
        "cpu",
        "--variants",
        "abc",
        "--batches",
        "8",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--workers",
        "0",
    ]
    assert train_speed.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if re.match(r"\| [abcd] \|", line)]
    assert [r[0].strip() for r in rows] == ["a", "b", "c"]
    for row in rows:
        assert row[1].strip() == "8" and float(row[2]) > 0 and float(row[3]) > 0
    assert rows[0][-1].strip() == "1.00x"
    # Ratios are images/s over variant a's, i.e. a's step time over c's (printed to 0.1 ms).
    ratio = float(rows[0][3]) / float(rows[2][3])
    assert float(rows[2][-1].strip().rstrip("x")) == pytest.approx(ratio, abs=0.015)
    assert re.search(r"test set on CPU: \d+ query \+ \d+ gallery images embedded", out)


def test_train_speed_reports_a_failing_variant_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path / "cache"))
    real = train_speed.time_variant

    def fail_on_compile(cfg, *args):
        if cfg.train.compile:
            raise RuntimeError("no C compiler found\nlong traceback text")
        return real(cfg, *args)

    monkeypatch.setattr(train_speed, "time_variant", fail_on_compile)
    argv = [
        "--quick",
        "--size",
        "smoke",
        "--device",
        "cpu",
        "--variants",
        "da",
        "--batches",
        "8",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--workers",
        "0",
        "--skip-test-set",
    ]
    assert train_speed.main(argv) == 0
    out = capsys.readouterr().out
    assert "| d | 8 | failed: RuntimeError: no C compiler found |" in out
    assert re.search(r"\| a \| 8 \| [\d.]+ \|.*\| 1\.00x \|", out)


def test_eval_speed_quick_runs_and_agrees_with_the_textbook(capsys):
    threads = torch.get_num_threads()  # the script sets torch's thread count
    try:
        assert eval_speed.main(["--quick", "--repeats", "1", "--skip-msmt", "--skip-rerank"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.count("| canlib evaluate_rank |") == 2 and out.count("textbook") >= 2


def test_conv_weight_grad_prints_both_tables_with_same_run_ratios(capsys):
    threads = torch.get_num_threads()
    try:
        argv = ["--repeats", "1", "--steps", "2", "--model", "global", "--threads", "1"]
        assert conv_weight_grad.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    layers = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| (")]
    assert len(layers) == len(conv_weight_grad.SHAPES)
    for row in layers:  # oneDNN ms / matmul ms, both printed to 0.01 ms
        onednn, mine, ratio = float(row[3]), float(row[4]), float(row[5].strip().rstrip("x"))
        assert onednn > 0 and mine > 0
        assert ratio == pytest.approx(onednn / mine, rel=0.1, abs=0.05)
    steps = [line for line in out.splitlines() if line.startswith(("| oneDNN", "| matmul"))]
    # On a CPU without AMX the engine trains in fp32 and says that nothing was switched.
    assert len(steps) == 2 or "no convolution switched" in out
    if steps:
        assert steps[0].rstrip().endswith("| 1.00x |")


@pytest.mark.parametrize("script", [train_speed, eval_speed, conv_weight_grad])
def test_benchmarks_refuse_an_unknown_option(script):
    with pytest.raises(SystemExit) as info:
        script.main(["--no-such-option"])
    assert info.value.code == 2


def test_pipeline_accuracy_smoke_compares_both_configs_over_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path / "cache"))
    argv = ["--profile", "smoke", "--seeds", "0,1", "--device", "cpu", "--runs", str(tmp_path)]
    assert pipeline_accuracy.main(argv) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): line
        for line in out.splitlines()
        if line.startswith(("| baseline", "| fast"))
    }
    assert set(rows) == {"baseline", "fast"}
    assert re.search(r"fast - baseline: [+-]\d+\.\d mAP, standard error \d+\.\d", out)
    # Four runs, each cached by its config hash: a second call trains nothing.
    assert len([p for p in tmp_path.iterdir() if (p / "summary.json").exists()]) == 4


def test_adam_step_prints_a_row_per_implementation_with_same_run_ratios(capsys):
    threads = torch.get_num_threads()
    try:
        assert adam_step.main(["--profile", "smoke", "--repeats", "2", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()]
    rows = {
        r[0].strip(): (float(r[1]), float(r[2].strip().rstrip("x")))
        for r in rows
        if len(r) == 3 and r[0].strip() in adam_step.VARIANTS
    }
    assert set(rows) == set(adam_step.VARIANTS) and rows["fused"][1] == 1.0
    for ms, ratio in rows.values():  # each ratio is that row's ms over the fused row's
        assert ratio == pytest.approx(ms / rows["fused"][0], rel=0.1, abs=0.05)
