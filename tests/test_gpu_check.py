"""`make gpu-check` at its toy size on the CPU: the mini paper tier end to end, and the perf ratios."""

from __future__ import annotations

import csv
import json
import math

from kind_bench import gpu_check
from kind_bench.perf import TARGETS


def test_the_gpu_check_runs_its_mini_tier_and_the_perf_ratios_at_toy_size(tmp_path):
    out = tmp_path / "gpu"
    summary = gpu_check.run(out, smoke=True)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert set(summary["cells"]) == {"kind-novel-0", "full_finetune-novel-0", "lora-novel-0"}
    for numbers in summary["cells"].values():
        assert numbers["images_per_s"] > 0 and numbers["peak_memory_mb"] > 0 and math.isfinite(numbers["fd_digits"])
    assert summary["protocol"] == {"vae": True, "storage": "files", "flip": True, "latents": "sample", "ema": 0.99,
                                   "sampler": "ddpm"}  # what the cells' records say they ran: suite=paper's paths
    assert summary["perf"]["input"] == [4, 8, 8]  # perf timed the tier's latents, not the digits default
    ratios = summary["perf"]["ratios"]
    assert set(ratios) == set(TARGETS)
    for row in ratios.values():
        assert row["ratio_q1"] <= row["ratio"] <= row["ratio_q3"] and row["kind_ms"] > 0 and row["dense_ms"] > 0
    assert ratios["pretrain step (KIND / vanilla)"]["floor"] > 1  # the gated path adds FLOPs to every layer
    assert ratios["transfer step (KIND / full fine-tune)"]["floor"] < ratios["pretrain step (KIND / vanilla)"]["floor"]
    assert ratios["sampling (merged KIND / dense)"]["floor"] == 1.0  # merged weights: the dense model's FLOPs
    with open(out / "leaderboard.csv") as f:
        methods = {row["method"] for row in csv.DictReader(f)}
    assert {"kind", "full_finetune", "lora"} <= methods


def test_bad_options_are_one_line_and_exit_2(capsys, tmp_path):
    from kind_bench.perf import main as perf

    assert gpu_check.main(["--smoke", "--out"]) == 2
    assert perf(["--rounds", "0"]) == 2
    assert perf([f"model.vae_path={tmp_path}"]) == 2  # perf times the latents' shape: it loads the VAE
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["kind_bench.gpu_check: error: --out needs a value",
                       "kind_bench.perf: error: --rounds=0 and --repeats=5 must be whole numbers >= 1"]
    assert len(err) == 3 and err[2].startswith(f"kind_bench.perf: error: model.vae_path={tmp_path}: not a loadable")


def test_one_round_gives_a_ratio_with_no_spread():
    from kind_bench.perf import ratio

    row = ratio(lambda: None, lambda: None, repeats=1, rounds=1)  # quartiles need two rounds
    assert row["ratio_q1"] == row["ratio"] == row["ratio_q3"] > 0


def test_a_target_is_met_only_when_the_upper_quartile_is_within_it_and_missed_when_the_lower_is_above():
    from kind_bench.perf import verdict

    def row(q1: float, q3: float, floor: float = 1.2) -> dict[str, float]:
        return {"ratio_q1": q1, "ratio": (q1 + q3) / 2, "ratio_q3": q3, "floor": floor}

    pretrain, transfer = "pretrain step (KIND / vanilla)", "transfer step (KIND / full fine-tune)"
    assert verdict(pretrain, row(1.25, 1.32)) == "met"  # 1.1 x its floor of 1.2 is 1.32
    assert verdict(pretrain, row(1.30, 1.35)) == "on the line"
    assert verdict(pretrain, row(1.33, 1.35)) == "missed"
    assert verdict(transfer, row(0.95, 1.0)) == "met"  # a bound of its own, whatever the floor
    assert verdict(transfer, row(0.99, 1.02)) == "on the line"
    assert verdict(transfer, row(1.01, 1.02, floor=2.0)) == "missed"


def test_perf_steps_run_in_each_phases_precision_and_batch_size(tmp_path, monkeypatch):
    import torch

    from kind_bench import perf
    from kind_bench.stages import common

    tf32: list[bool] = []
    monkeypatch.setattr(common, "use_tf32", lambda device, enabled: tf32.append(enabled))  # as training sets it

    seen: list[tuple[bool, int, int]] = []  # (autocast on, batch size, the null label = classes) of every step
    labels: list[int] = []  # the largest label of every step
    real = perf.diffusion_loss
    monkeypatch.setattr(perf, "diffusion_loss", lambda *a, **k: seen.append(
        (torch.is_autocast_enabled("cpu"), len(a[1]), a[4])) or labels.append(int(a[2].max())) or real(*a, **k))
    out = tmp_path / "perf.json"
    assert perf.main(["pretrain.precision=bf16", "pretrain.batch_size=6", "transfer.batch_size=4", "runtime.tf32=false",
                      "task.target_classes=[5,6]", "sample.samples_per_class=2", "eval.kid_subset_size=2",
                      "--rounds", "1", "--repeats", "1", "--json", str(out)]) == 0
    pretrain = seen.index((False, 4, 2))  # the pre-training steps (5 ancestry classes) come first, then transfer's
    assert pretrain > 0 and set(seen[:pretrain]) == {(True, 6, 5)} and set(seen[pretrain:]) == {(False, 4, 2)}
    assert min(labels[:pretrain]) >= 2 and max(labels[:pretrain]) < 5 and max(labels[pretrain:]) < 2  # its classes
    table = json.loads(out.read_text())
    assert table["precision"] == {"pretrain": "bf16", "transfer": "fp32", "sample": "fp32"}
    assert table["batch_size"] == {"pretrain": 6, "transfer": 4}
    assert tf32 == [False]


def test_a_failed_perf_run_stops_the_gpu_check(tmp_path, monkeypatch):
    import pytest

    from kind_bench import cli, perf

    monkeypatch.setattr(cli, "main", lambda argv: 0)  # every stage "succeeds" at once
    monkeypatch.setattr(perf, "main", lambda argv: 2)  # perf refuses, as on a bad option
    with pytest.raises(SystemExit, match="kind_bench.perf` failed"):
        gpu_check.run(tmp_path / "gpu", smoke=True)
    assert not (tmp_path / "gpu" / "summary.json").exists()
