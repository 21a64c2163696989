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
    for name in ("digits_pareto.png", "digits_convergence.png"):
        assert (in_workspace / "results/leaderboard" / name).stat().st_size > 1000
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
    assert set(record["metrics_by_budget"]) == {"0.5", "1.0"}  # snapshots at half and all of the steps
    for key in ("flops_per_step", "flops_per_sample", "task_bytes"):
        assert train[key] > 0, key
    assert record["metrics"]["eval_noise_sd"] > 0 and train["n_draws"] == 2 and len(train["draws"]) == 2
    assert info["eval_split"] == "test" and info["ancestry_seed"] == 0 and info["namespace"] == "runs"
    assert meta["cpu_model"] and meta["cpu_capability"] and info["method_source"]["distribution"] == "kind-bench"


def test_diverging_run_is_recorded_as_failed_and_the_leaderboard_still_builds(in_workspace):
    run_pipeline(["scratch"])
    overrides = micro("method=full_finetune", "transfer.lr=1e30", "transfer.grad_clip=0", ancestry=False)
    assert main(["transfer", *overrides]) == 1  # a failed cell: exit 1 after the others
    assert main(["evaluate", *overrides]) == 1
    record = json.loads((in_workspace / "results/runs/digits/full_finetune/full_finetune-novel-0.json").read_text())
    assert record["run_info"]["status"] == "failed"
    assert "loss became" in record["run_info"]["error"] or "NaN" in record["run_info"]["error"]
    assert main(["leaderboard", "quiet=true"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv").set_index("method")
    assert table.loc["full_finetune", "status"] == "failed" and table.loc["scratch", "status"] == "success"


def test_sweep_over_tasks_and_seeds_with_workers_floor_recombination_and_statistics(in_workspace):
    assert main(["pretrain", "ancestry=vanilla", "seed=0,1", *micro(ancestry=False)]) == 0
    assert main(["pretrain", "ancestry=kind", "seed=0,1", *micro()]) == 0
    sweep = ["task=novel,small", "seed=0,1", "runtime.workers=2"]
    for method in ("kind", "full_finetune"):
        overrides = [*micro(f"method={method}", ancestry=method == "kind"), *sweep]
        assert main(["transfer", *overrides]) == 0
        assert main(["evaluate", *overrides]) == 0
    assert main(["floor", *micro(ancestry=False), "task=novel,small"]) == 0
    assert main(["recombine", *micro(), "ancestry=kind"]) == 0
    assert main(["leaderboard", "quiet=true"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv", keep_default_na=False, na_values=[""])
    table = table.set_index(["task", "method"])
    assert table.loc[("small", "full_finetune"), "status"] == "n/a"
    assert "depth" in table.loc[("small", "full_finetune"), "note"]
    assert table.loc[("small", "kind"), "status"] == "success" and table.loc[("small", "kind"), "n_seeds"] == 2
    assert table.loc[("novel", "real_data"), "status"] == "success"
    for column in ("fd_digits_std", "fd_digits_ci_low", "fd_digits_ci_high", "fd_digits@50%", "flops_per_step",
                   "flops_per_sample", "task_bytes", "rank", "avg_rank"):
        assert column in table.columns, column
    assert table.loc[("novel", "kind"), "fd_digits_ci_low"] <= table.loc[("novel", "kind"), "fd_digits"]
    curve = pd.read_csv(in_workspace / "results/recombination/digits.csv")
    assert list(curve.classes) == [1, 2, 3, 4, 5]
    assert curve.params.is_monotonic_increasing and curve.params.iloc[-1] == curve.full_params.iloc[-1]
    assert (curve.max_abs_sample_diff < 1e-3).all() and (curve.max_abs_deploy_diff < 1e-3).all()
    assert (curve.deploy_params < curve.full_params).all()
    assert (curve.kid_subset_size == 10).all()  # eval.kid_subset_size: every class here has more test images
    assert (in_workspace / "results/leaderboard/digits_samples/kind/novel.png").is_file()
