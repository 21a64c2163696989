"""Stages ``tune@<method>`` and ``tuning``: learning rates chosen on validation data, and the budget rule.

``kind-bench tune method=m`` trains method m at every rate of its grid (``tuning.grids``: its own, else
``default``; log-spaced) on ``tuning.tasks`` x ``tuning.seeds`` for ``transfer.steps`` steps, exactly as
the published cells train, and scores each run on the task's **validation** images (``eval.split=val``,
one draw of ``tuning.samples_per_class`` per class). Rates are compared by the geometric mean over the
tasks of the validation primary metric: one rate per method, pooled over the tasks (the leaderboard's
``lr`` column). A best rate at an edge of the grid extends the grid by one step on that side, up to
``tuning.extend`` times; a choice still at an edge is flagged (``at_edge``). Every method gets the same
grid size, tasks, seeds and steps.

The budget rule (``tuning.budget_methods``, KIND and full fine-tuning): those methods train twice as long
with snapshots at 1/8, 1/4, 1/2 and all of the run, i.e. at B/4, B/2, B and 2B for B = ``transfer.steps``
(a snapshot of a longer run *is* a shorter run: the learning rate is constant after warm-up). At every
budget b the best rate's validation score, pooled over tasks, is compared with its score at 2b; the
converged budget is the smallest b within ``tuning.budget_tolerance`` (5%) of 2b for every budget method.
``kind-bench tuning`` writes the tables (``results/tuning/<suite>.csv``, ``<suite>_budget.csv``) and
plots, and says whether ``transfer.steps`` is the budget the rule picks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from typing import Any

import pandas as pd

from kind_bench.config import Config, TaskConfig, as_dict, compose, config_dir
from kind_bench.errors import UserError
from kind_bench.io import atomic_path, read_json, write_json
from kind_bench.metrics import primary_metric
from kind_bench.paths import Cell, result_path, tuning_path

BUDGET_SNAPSHOTS = [0.125, 0.25, 0.5, 1.0]


def chosen_lr(cfg: Config, method: str) -> float:
    """The learning rate the ``tune`` stage chose for ``method`` (a one-line error if it has not run)."""
    path = tuning_path(cfg, method)
    if not path.is_file():
        raise UserError(f"no tuned learning rate for method={method} ({path} not found): run `dvc repro "
                        f"tune@{method}` (or `kind-bench tune method={method}`), or pass transfer.lr=...")
    return float(read_json(path, "tuning record")["chosen_lr"])


def grid_of(cfg: Config, method: str) -> list[float]:
    """The method's starting grid of learning rates."""
    return list(cfg.tuning.grids.get(method, cfg.tuning.grids["default"]))


def lr_tag(lr: float) -> str:
    """A path-safe name for a learning rate, e.g. ``lr-0.003``."""
    return f"lr-{lr:.3g}"


@functools.cache
def _task(name: str, config_dir: str) -> TaskConfig:
    return compose([f"task={name}"]).task


def trial(cfg: Config, lr: float, task: str, seed: int, budget: bool) -> Config:
    """The config of one tuning run: the call's config on (``task``, ``seed``) at ``lr``, trained as the
    published cells are (or twice as long with budget snapshots), scored on validation data."""
    steps, snapshots = (2 * cfg.transfer.steps, BUDGET_SNAPSHOTS) if budget else (cfg.transfer.steps, [1.0])
    return dataclasses.replace(
        cfg, task=_task(task, str(config_dir())), seed=seed, namespace=f"tuning/{lr_tag(lr)}",
        transfer=dataclasses.replace(cfg.transfer, lr=lr, steps=steps, snapshots=snapshots, checkpoint_every=0),
        eval=dataclasses.replace(cfg.eval, split="val", draws=1),
        sample=dataclasses.replace(cfg.sample, samples_per_class=cfg.tuning.samples_per_class,
                                   snapshot_samples_per_class=cfg.tuning.samples_per_class),
    )


def read_trial(cfg: Config) -> list[dict[str, Any]]:
    """One row per budget of a finished tuning run: its validation metrics (inf when it failed)."""
    record = read_json(result_path(cfg, Cell(str(cfg.method["name"]), cfg.task.name, cfg.seed)), "tuning result")
    base = {"method": cfg.method["name"], "task": cfg.task.name, "seed": cfg.seed, "lr": cfg.transfer.lr,
            "status": record["run_info"]["status"]}
    if base["status"] != "success":
        return [{**base, "steps": round(f * cfg.transfer.steps), "fraction": f, "score": math.inf}
                for f in cfg.transfer.snapshots]
    primary = primary_metric(cfg)
    return [{**base, "steps": round(float(f) * cfg.transfer.steps), "fraction": float(f), "score": m[primary],
             **{f"val_{k}": v for k, v in m.items()}} for f, m in record["metrics_by_budget"].items()]


def pooled(rows: pd.DataFrame) -> pd.Series:
    """Score per learning rate: geometric mean over tasks of the mean over seeds (inf if any run failed)."""
    per_task = rows.groupby(["lr", "task"]).score.mean()
    return per_task.groupby("lr").apply(lambda s: math.exp(statistics.fmean(math.log(v) for v in s))
                                        if all(0 < v < math.inf for v in s) else math.inf)


def run(cfg: Config) -> str:
    """Tune one method: run its grid (extending it at an edge), then write its record."""
    from kind_bench.cli import run_all
    from kind_bench.stages.run import run as run_cell

    method = str(cfg.method["name"])
    budget = method in cfg.tuning.budget_methods
    grid, extended = grid_of(cfg, method), 0
    done: set[float] = set()
    while True:
        todo = [trial(cfg, lr, t, s, budget) for lr in grid if lr not in done
                for t in cfg.tuning.tasks for s in cfg.tuning.seeds]
        run_all(run_cell, todo, per_cell=True)
        done |= set(grid)
        rows = pd.DataFrame([r for lr in grid for t in cfg.tuning.tasks for s in cfg.tuning.seeds
                             for r in read_trial(trial(cfg, lr, t, s, budget))])
        at_budget = rows[rows.steps == cfg.transfer.steps]
        scores = pooled(at_budget)
        best = float(scores.idxmin())
        edge = "low" if best == grid[0] else "high" if best == grid[-1] else None
        if edge is None or extended >= cfg.tuning.extend or not math.isfinite(scores.min()):
            break
        step = grid[1] / grid[0]
        grid = [grid[0] / step, *grid] if edge == "low" else [*grid, grid[-1] * step]
        extended += 1
    record = {"method": method, "grid": grid, "extended": extended, "chosen_lr": best, "at_edge": edge,
              "pooled_over": list(cfg.tuning.tasks), "seeds": list(cfg.tuning.seeds), "steps": cfg.transfer.steps,
              "metric": f"validation {primary_metric(cfg)}", "scores": {f"{lr:.6g}": v for lr, v in scores.items()},
              "rows": rows.to_dict(orient="records"), "config": as_dict(cfg)}
    write_json(tuning_path(cfg, method), record)
    flag = f" (at the {edge} edge after {extended} extensions: flagged)" if edge else ""
    print(f"tune {method}: lr {best:.3g} chosen from {', '.join(f'{lr:.3g}' for lr in grid)}{flag} "
          f"-> {tuning_path(cfg, method)}")
    return "success"


def budget_rule(rows: pd.DataFrame, tolerance: float) -> tuple[pd.DataFrame, int | None]:
    """Per budget b and method: the best rate's pooled validation score at b and 2b; the smallest b that
    is within ``tolerance`` of 2b for every method (None if no budget passes)."""
    table = []
    for method, group in rows.groupby("method"):
        envelope = {steps: pooled(g).min() for steps, g in group.groupby("steps")}
        for steps in sorted(envelope):
            if 2 * steps in envelope:
                ratio = envelope[steps] / envelope[2 * steps]
                table.append({"method": method, "steps": steps, "score": envelope[steps],
                              "score_at_twice": envelope[2 * steps], "ratio": ratio,
                              "converged": bool(ratio <= 1 + tolerance)})
    table = pd.DataFrame(table)
    if table.empty:
        return table, None
    passing = table.groupby("steps").converged.all()
    chosen = [int(s) for s, ok in passing.items() if ok]
    return table, (min(chosen) if chosen else None)


def report(cfg: Config) -> str:
    """``kind-bench tuning``: the tuning table, the budget rule's table and their plots."""
    from kind_bench.plots import budget_plot, tuning_plot

    records = []
    for path in sorted(tuning_path(cfg, "x").parent.glob("*.json")):
        records.append(read_json(path, "tuning record"))
    if not records:
        raise UserError(f"no tuning records in {tuning_path(cfg, 'x').parent}: run the tune stages (dvc repro)")
    rows = pd.DataFrame([{**r, "chosen": r["lr"] == rec["chosen_lr"], "at_edge": rec["at_edge"] or ""}
                         for rec in records for r in rec["rows"]])
    final = rows[rows.steps == cfg.transfer.steps].drop(columns=["fraction"])
    columns = ["method", "task", "seed", "lr", "chosen", "at_edge", "status", "score",
               *sorted(c for c in final.columns if c.startswith("val_"))]
    final = final[columns].sort_values(["method", "task", "seed", "lr"])
    base = tuning_path(cfg, "x").parent.with_suffix("")
    with atomic_path(base.with_suffix(".csv")) as tmp:
        final.to_csv(tmp, index=False, float_format="%.4f")
    tuning_plot(final, base.with_name(base.name + ".png"))
    budget, chosen = budget_rule(rows[rows.method.isin(cfg.tuning.budget_methods)], cfg.tuning.budget_tolerance)
    with atomic_path(base.with_name(base.name + "_budget.csv")) as tmp:
        budget.to_csv(tmp, index=False, float_format="%.4f")
    write_json(base.with_name(base.name + "_budget.json"), {
        "rule": f"smallest budget b at which every budget method's best validation score is within "
                f"{cfg.tuning.budget_tolerance:.0%} of its score at 2b", "methods": list(cfg.tuning.budget_methods),
        "chosen_steps": chosen, "transfer_steps": cfg.transfer.steps, "consistent": chosen == cfg.transfer.steps})
    budget_plot(rows[rows.method.isin(cfg.tuning.budget_methods)], cfg.transfer.steps,
                base.with_name(base.name + "_budget.png"))
    verdict = "matches" if chosen == cfg.transfer.steps else f"does NOT match (the rule picks {chosen})"
    print(f"tuning: {base.with_suffix('.csv')} ({len(records)} methods); transfer.steps={cfg.transfer.steps} "
          f"{verdict}")
    return "success"
