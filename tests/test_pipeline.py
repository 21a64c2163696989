"""The whole pipeline on a micro config, through the CLI, in a throw-away folder."""

from __future__ import annotations

import json
import math

import pandas as pd

from kind_bench.cli import main

from micro import micro


def run_pipeline(methods: list[str], *extra: str) -> None:
    assert main(["pretrain", "ancestry=vanilla", *micro(*extra, ancestry=False)]) == 0
    assert main(["pretrain", "ancestry=kind", *micro(*extra)]) == 0
    for method in methods:
        overrides = micro(f"method={method}", *extra, ancestry=method == "kind")
        assert main(["transfer", *overrides]) == 0
        assert main(["evaluate", *overrides]) == 0
    assert main(["leaderboard", "quiet=true"]) == 0


def test_three_methods_reach_the_leaderboard_with_finite_metrics(in_workspace):
    run_pipeline(["kind", "scratch", "full_finetune"])
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv")
    assert sorted(table.method) == ["full_finetune", "kind", "scratch"]
    assert (table.status == "success").all()
    for metric in ("fd_digits", "is_digits", "kid_digits", "precision_digits", "recall_digits", "class_accuracy"):
        assert table[metric].map(math.isfinite).all(), metric
    kind = table.set_index("method").loc["kind"]
    full = table.set_index("method").loc["full_finetune"]
    assert kind.trainable_params < full.trainable_params
    assert (in_workspace / "results/leaderboard/digits.md").read_text().startswith("# Leaderboard")


def test_result_record_has_identity_config_cost_and_provenance(in_workspace):
    run_pipeline(["kind"])
    record = json.loads((in_workspace / "results/runs/digits/kind/kind-novel-0.json").read_text())
    info = record["run_info"]
    assert (info["run_id"], info["method"], info["task"], info["seed"]) == ("kind-novel-0", "kind", "novel", 0)
    assert info["status"] == "success" and info["error"] is None
    assert info["config"]["model"]["hidden_size"] == 16 and info["split"]["split_seed"] == 0
    train = record["train_info"]
    for key in ("trainable_params", "total_params", "transferred_params", "train_time_s", "peak_memory_mb", "steps"):
        assert train[key] > 0, key
    meta = record["meta_info"]
    assert {"torch", "diffusers", "timm", "torch-fidelity", "dvc"} <= set(meta["packages"])
    assert meta["created_at"] and meta["device_name"] and "git_dirty" in meta
    assert set(record["metrics_by_step"]) == {"4", "8"}  # snapshots at 0.5 and 1.0 of 8 steps
    numbers = json.loads((in_workspace / "results/metrics/digits/kind/kind-novel-0.json").read_text())
    assert numbers["metrics"] == record["metrics"]


def test_diverging_run_is_recorded_as_failed_and_the_leaderboard_still_builds(in_workspace):
    run_pipeline(["scratch"])
    overrides = micro("method=full_finetune", "transfer.lr=1e30", "transfer.grad_clip=0", ancestry=False)
    assert main(["transfer", *overrides]) == 0
    assert main(["evaluate", *overrides]) == 0
    record = json.loads((in_workspace / "results/runs/digits/full_finetune/full_finetune-novel-0.json").read_text())
    assert record["run_info"]["status"] == "failed"
    assert "loss became" in record["run_info"]["error"] or "NaN" in record["run_info"]["error"]
    assert main(["leaderboard", "quiet=true"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv").set_index("method")
    assert table.loc["full_finetune", "status"] == "failed" and table.loc["scratch", "status"] == "success"
