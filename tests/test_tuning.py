"""The learning-rate choice and the budget rule (``kind_bench.tuning``) on stubbed runs: pooling, grid
extension, failure and stale records."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from kind_bench import tuning

from micro import micro


def rows(scores: dict[tuple[float, str], list[float]], steps: int = 600, method: str = "kind") -> pd.DataFrame:
    """Tuning rows: (lr, task) -> one score per seed."""
    return pd.DataFrame([{"method": method, "lr": lr, "task": task, "seed": seed, "steps": steps, "score": score}
                         for (lr, task), values in scores.items() for seed, score in enumerate(values)])


def test_rates_pool_the_seed_means_geometrically_over_tasks_and_bounded_metrics_arithmetically():
    table = rows({(0.01, "novel"): [1.0, 3.0], (0.01, "shift"): [8.0],
                  (0.03, "novel"): [1.0], (0.03, "shift"): [math.inf]})
    scores = tuning.pooled(table, "fd_digits")
    assert scores[0.01] == pytest.approx(4.0)  # sqrt(mean(1, 3) * 8)
    assert scores[0.03] == math.inf  # a failed run rules its rate out
    # top-1 shortfalls: one perfect task must not decide alone (a geometric mean would pick 0.01 here)
    shortfalls = rows({(0.01, "novel"): [0.0], (0.01, "shift"): [0.9],
                       (0.03, "novel"): [0.05], (0.03, "shift"): [0.05]})
    assert tuning.pooled(shortfalls, "top1").idxmin() == 0.03


def budget_rows(method: str, scores: dict[int, float]) -> pd.DataFrame:
    return pd.concat([rows({(0.01, "novel"): [s]}, steps=steps, method=method) for steps, s in scores.items()])


def test_the_budget_rule_needs_every_method_finished_and_not_worse_than_tolerance_at_twice_the_steps():
    both = ["kind", "full_finetune"]
    ok = budget_rows("full_finetune", {300: 1.0, 600: 1.0, 1200: 1.0})
    kind = budget_rows("kind", {300: 1.2, 600: 1.04, 1200: 1.0})  # 300 is 20% worse than 600, 600 is 4% worse
    rates = {"kind": 0.01, "full_finetune": 0.01}
    table, chosen = tuning.budget_rule(pd.concat([ok, kind]), rates, 0.05, both, "fd_digits")
    assert chosen == 600
    assert not table.set_index(["method", "steps"]).converged[("kind", 300)]
    better_early = budget_rows("kind", {300: 0.5, 600: 1.0, 1200: 1.0})  # better at b than at 2b: converged
    assert tuning.budget_rule(pd.concat([ok, better_early]), rates, 0.05, both, "fd_digits")[1] == 300
    failed_long = budget_rows("kind", {300: 1.5, 600: 1.0, 1200: math.inf})  # the run at 2b failed
    assert tuning.budget_rule(pd.concat([ok, failed_long]), rates, 0.05, both, "fd_digits")[1] is None
    # a budget method without runs at b and 2b passes no budget (the other method alone does not decide)
    assert tuning.budget_rule(ok, rates, 0.05, both, "fd_digits")[1] is None


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """A tuning config in an empty workspace whose runs are stubbed: ``score(lr)`` decides each trial."""
    import kind_bench.cli
    from kind_bench.methods import compose_cell

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kind_bench.cli, "run_all", lambda run, configs, per_cell: [])
    cfg = compose_cell(micro("method=head_only", "tuning.tasks=[novel,shift]", "tuning.seeds=[0]",
                             "tuning.grids={default:[0.001,0.003,0.01]}", "tuning.extend=2", ancestry=False))

    def use(score):
        def read_trial(trial_cfg):
            value = score(trial_cfg.transfer.lr)
            return {"method": "head_only", "task": trial_cfg.task.name, "seed": trial_cfg.seed,
                    "lr": trial_cfg.transfer.lr, "steps": trial_cfg.transfer.steps,
                    "status": "success" if math.isfinite(value) else "failed", "score": value}
        monkeypatch.setattr(tuning, "read_trial", read_trial)
        return cfg
    return use


def test_a_best_rate_at_the_edge_extends_the_grid_on_that_side_at_most_extend_times(stubbed):
    cfg = stubbed(lambda lr: 1 / lr)  # the higher the better, without end
    assert tuning.run(cfg) == "success"
    record = json.loads(tuning.record_path(cfg).read_text())
    assert record["grid"] == pytest.approx([0.001, 0.003, 0.01, 0.03, 0.09])
    assert (record["chosen_lr"], record["at_edge"], record["extended"]) == (pytest.approx(0.09), "high", 2)
    cfg = stubbed(lambda lr: abs(math.log(lr / 0.0003)))  # best one step below the grid: at the edge once more
    assert tuning.run(cfg) == "success"
    record = json.loads(tuning.record_path(cfg).read_text())
    assert record["grid"] == pytest.approx([0.001 / 9, 0.001 / 3, 0.001, 0.003, 0.01])
    assert (record["chosen_lr"], record["at_edge"], record["extended"]) == (pytest.approx(0.001 / 3), None, 2)


def test_a_method_whose_every_run_failed_gets_no_rate_and_loses_an_older_one(stubbed):
    cfg = stubbed(lambda lr: 1.0)
    assert tuning.run(cfg) == "success"
    assert tuning.record_path(cfg).is_file()
    cfg = stubbed(lambda lr: math.inf)
    assert tuning.run(cfg) == "failed"
    assert not tuning.record_path(cfg).exists()


def test_the_tuning_report_refuses_records_tuned_with_another_config_than_the_suites(tmp_path, monkeypatch):
    from pathlib import Path

    from kind_bench.config import compose
    from kind_bench.errors import UserError

    committed = Path(__file__).resolve().parents[1] / "results" / "tuning" / "digits_cls"
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results" / "tuning" / "digits_cls"
    folder.mkdir(parents=True)
    for method in ("kind", "full_finetune"):
        (folder / f"{method}.json").write_text((committed / f"{method}.json").read_text())
    cfg = compose(["suite=digits_cls"])
    assert tuning.report(cfg) == "success"  # the committed records are the suite's
    record = json.loads((folder / "kind.json").read_text())
    record["config"]["tuning"]["seeds"] = [100]  # tuned on one seed, filed for a suite that tunes on two
    (folder / "kind.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="tuning records of kind were tuned with another config than suite=digits_cls"):
        tuning.report(cfg)
    (folder / "kind.json").unlink()
    with pytest.raises(UserError, match="tuning.budget_methods kind have no tuning record"):
        tuning.report(cfg)
