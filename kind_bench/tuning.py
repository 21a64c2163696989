"""Stages ``tune@<method>`` and ``tuning``: learning rates chosen on validation data, and the budget rule.

``kind-bench tune method=m`` trains method m at every rate of its grid (``tuning.grids``: its own, else
``default``; log-spaced) on ``tuning.tasks`` x ``tuning.seeds`` for ``transfer.steps`` steps, exactly as
the published cells train, and scores each run on the task's **validation** images (``eval.split=val``,
one draw of ``tuning.samples_per_class`` per class). Rates are compared by the geometric mean over the
tasks of the validation primary metric (scale-free: FD and NLL differ in scale between tasks; for a metric
bounded in [0, 1], ``metrics.BOUNDED``, the arithmetic mean of the metric or, where higher is better, of its
shortfall from 1, which one perfect task does not decide alone): one rate per method, pooled over the tasks
(the leaderboard's ``lr`` column). A method whose every rate failed gets no rate (the stage fails). A best
rate at an edge of the grid extends the grid by one step on that side, up to ``tuning.extend`` times; a
choice still at an edge is flagged (``at_edge``). Every method gets the same grid size, tasks, seeds and steps.

The budget rule (``tuning.budget_methods``, KIND and full fine-tuning): at its chosen rate each of those
methods is also trained for half and for twice ``transfer.steps`` (separate runs: the learning rate
follows one schedule over a run's own length). A budget b is converged when the pooled validation score
at b is at most ``tuning.budget_tolerance`` (5%) worse than the score at 2b (both runs finished), for
every budget method. ``kind-bench tuning`` refuses records tuned with another config than the suite's,
writes the tables (``results/tuning/<suite>.csv``, ``<suite>_budget.csv``/``.json``) and plots, and says
whether ``transfer.steps`` is the smallest converged budget for every budget method.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from kind_bench.config import Config, TaskConfig, as_dict, compose, config_dir, with_defaults
from kind_bench.errors import UserError
from kind_bench.identity import digest, identifying
from kind_bench.io import atomic_path, read_json, write_json
from kind_bench.metrics import BOUNDED, DIRECTION, primary_metric
from kind_bench.paths import Cell, result_path, tuning_path


def tuning_identity(config: dict[str, Any]) -> str:
    """What decides a tuning record: the config without the cell (task, seed) and the rate it chooses, plus
    the tuning settings (grids, tasks, seeds, metric) that :data:`~kind_bench.identity.UNIDENTIFYING` leaves
    out of a run's identity."""
    kept = identifying(config, drop=("task", "seed"))
    kept["transfer"] = {k: v for k, v in kept["transfer"].items() if k not in ("lr", *TRIAL_SETS["transfer"])}
    for section in ("sample", "eval"):
        kept[section] = {k: v for k, v in kept[section].items() if k not in TRIAL_SETS[section]}
    kept["tuning_settings"] = {k: v for k, v in config["tuning"].items() if k != "lr_source"}  # not UNIDENTIFYING
    return digest(kept)


def recorded_identity(record: dict[str, Any]) -> str | None:
    """The tuning identity of the config a tuning record holds (None when it holds none)."""
    config = record.get("config")
    return tuning_identity(with_defaults(config)) if isinstance(config, dict) else None


@functools.cache
def _published_identity(suite: str, method: str) -> str:
    from kind_bench.methods import compose_cell

    return tuning_identity(as_dict(compose_cell([f"suite={suite}", f"method={method}"], resolve_lr=False)))


def is_published(cfg: Config) -> bool:
    """Whether ``cfg`` tunes its method as the published grid does (else its records go to ``adhoc/``)."""
    return tuning_identity(as_dict(cfg)) == _published_identity(cfg.suite.name, str(cfg.method["name"]))


def record_path(cfg: Config) -> Path:
    """The tuning record of ``cfg``'s method and config: the published one, or ``adhoc/<identity>/``."""
    path = tuning_path(cfg, str(cfg.method["name"]))
    return path if is_published(cfg) else path.parent / "adhoc" / tuning_identity(as_dict(cfg)) / path.name


#: what :func:`trial` sets itself, so that it cannot change a tuning
TRIAL_SETS = {"transfer": ("snapshots", "checkpoint_every"), "eval": ("split", "draws"),
              "sample": ("samples_per_class", "snapshot_samples_per_class")}


def chosen_lr(cfg: Config, method: str) -> float:
    """The learning rate the ``tune`` stage chose for ``method``: the one tuned with this very config if
    there is one, else the published one (which serves every other config: ablation variants, ad-hoc
    runs). A record whose recorded config is not the one it is filed for is refused."""
    own, published = record_path(cfg), tuning_path(cfg, method)  # cfg is a cell of ``method``
    path = own if own.is_file() else published
    if not path.is_file():
        raise UserError(f"no tuned learning rate for method={method} ({published} not found): run `dvc repro "
                        f"tune@{method}` (or `kind-bench tune method={method}`), or pass transfer.lr=...")
    record = read_json(path, "tuning record")
    expected = tuning_identity(as_dict(cfg)) if path == own else _published_identity(cfg.suite.name, method)
    if recorded_identity(record) != expected:
        raise UserError(f"tuning record {path} was tuned with another config than it is filed for: rerun "
                        f"`kind-bench tune method={method}` (dvc repro tune@{method})")
    return float(record["chosen_lr"])


def grid_of(cfg: Config, method: str) -> list[float]:
    """The method's starting grid of learning rates."""
    return list(cfg.tuning.grids.get(method, cfg.tuning.grids["default"]))


def lr_tag(lr: float) -> str:
    """A path-safe name for a learning rate, e.g. ``lr-0.003``."""
    return f"lr-{lr:.3g}"


@functools.cache
def _task(name: str, config_dir: str) -> TaskConfig:
    return compose([f"task={name}"]).task


def trial(cfg: Config, lr: float, task: str, seed: int, factor: float = 1.0) -> Config:
    """The config of one tuning run: the call's config on (``task``, ``seed``) at ``lr`` for ``factor`` x
    ``transfer.steps`` steps, trained as the published cells are, scored on validation data."""
    steps = round(factor * cfg.transfer.steps)
    tag = lr_tag(lr) if factor == 1 else f"{lr_tag(lr)}-steps-{steps}"
    space = "tuning" if is_published(cfg) else f"tuning-adhoc/{tuning_identity(as_dict(cfg))}"
    return dataclasses.replace(
        cfg, task=_task(task, str(config_dir())), seed=seed, namespace=f"{space}/{tag}",
        transfer=dataclasses.replace(cfg.transfer, lr=lr, steps=steps, snapshots=[1.0], checkpoint_every=0),
        eval=dataclasses.replace(cfg.eval, split="val", draws=1),
        sample=dataclasses.replace(cfg.sample, samples_per_class=cfg.tuning.samples_per_class,
                                   snapshot_samples_per_class=cfg.tuning.samples_per_class),
    )


def tuning_metric(cfg: Config) -> str:
    """The validation metric that chooses rates and budgets (``tuning.metric``, else the primary metric)."""
    return cfg.tuning.metric or primary_metric(cfg)


def score_of(metrics: dict[str, float], metric: str) -> float:
    """The tuning score of a run (lower is better): the metric itself, or 1 - it when higher is better."""
    return metrics[metric] if DIRECTION[metric] == "lower" else 1.0 - metrics[metric]


def read_trial(cfg: Config) -> dict[str, Any]:
    """A finished tuning run: its identity, validation metrics and score (inf when it failed)."""
    record = read_json(result_path(cfg, Cell(str(cfg.method["name"]), cfg.task.name, cfg.seed)), "tuning result")
    row = {"method": cfg.method["name"], "task": cfg.task.name, "seed": cfg.seed, "lr": cfg.transfer.lr,
           "steps": cfg.transfer.steps, "status": record["run_info"]["status"], "score": math.inf}
    if row["status"] == "success":
        metrics = record["metrics"]
        row.update(score=score_of(metrics, tuning_metric(cfg)), **{f"val_{k}": v for k, v in metrics.items()})
    return row


def pooled(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Score per learning rate (lower is better; inf if any run failed): over tasks, of the mean over seeds,
    the geometric mean (scale-free), or the arithmetic mean for a metric bounded in [0, 1]."""
    per_task = rows.groupby(["lr", "task"]).score.mean()
    mean = statistics.fmean if metric in BOUNDED else statistics.geometric_mean
    return per_task.groupby("lr").apply(lambda s: mean(s) if all(math.isfinite(v) for v in s) else math.inf)


def run(cfg: Config) -> str:
    """Tune one method: run its grid (extending it at an edge), then write its record."""
    from kind_bench.cli import run_all
    from kind_bench.stages.run import run as run_cell

    method = str(cfg.method["name"])
    cells = [(t, s) for t in cfg.tuning.tasks for s in cfg.tuning.seeds]
    grid, extended = grid_of(cfg, method), 0
    done: set[float] = set()
    while True:
        run_all(run_cell, [trial(cfg, lr, t, s) for lr in grid if lr not in done for t, s in cells], per_cell=True)
        done |= set(grid)
        rows = pd.DataFrame([read_trial(trial(cfg, lr, t, s)) for lr in grid for t, s in cells])
        scores = pooled(rows, tuning_metric(cfg))
        best = float(scores.idxmin())
        edge = "low" if best == grid[0] else "high" if best == grid[-1] else None
        if edge is None or extended >= cfg.tuning.extend or not math.isfinite(scores.min()):
            break
        step = grid[1] / grid[0]
        grid = [grid[0] / step, *grid] if edge == "low" else [*grid, grid[-1] * step]
        extended += 1
    if not math.isfinite(scores.min()):
        record_path(cfg).unlink(missing_ok=True)  # an older record must not serve a config that fails now
        print(f"tune {method}: every rate's run failed ({', '.join(f'{lr:.3g}' for lr in grid)}): no rate chosen; "
              f"see the failed runs' records", file=sys.stderr)
        return "failed"
    if method in cfg.tuning.budget_methods:  # half and twice the budget, at the chosen rate
        longer = [trial(cfg, best, t, s, factor) for factor in (0.5, 2.0) for t, s in cells]
        run_all(run_cell, longer, per_cell=True)
        rows = pd.concat([rows, pd.DataFrame([read_trial(c) for c in longer])], ignore_index=True)
    record = {"method": method, "grid": grid, "extended": extended, "chosen_lr": best, "at_edge": edge,
              "pooled_over": list(cfg.tuning.tasks), "seeds": list(cfg.tuning.seeds), "steps": cfg.transfer.steps,
              "metric": f"validation {tuning_metric(cfg)}", "scores": {f"{lr:.6g}": v for lr, v in scores.items()},
              "rows": rows.to_dict(orient="records"), "config": as_dict(cfg)}
    write_json(record_path(cfg), record)
    flag = f" (at the {edge} edge after {extended} extensions: flagged)" if edge else ""
    print(f"tune {method}: lr {best:.3g} chosen from {', '.join(f'{lr:.3g}' for lr in grid)}{flag} "
          f"-> {record_path(cfg)}")
    return "success"


def budget_rule(rows: pd.DataFrame, chosen: dict[str, float], tolerance: float, methods: list[str],
                metric: str) -> tuple[pd.DataFrame, int | None]:
    """Per method and budget b: the pooled validation score at its chosen rate at b and at 2b; the smallest
    b at which every one of ``methods`` has finished runs at b and 2b and scores at most ``tolerance`` worse at
    b than at 2b (None if no budget passes)."""
    table = []
    for method, group in rows.groupby("method"):
        at_rate = group[group.lr == chosen[method]]
        score = {int(steps): float(pooled(g, metric).iloc[0]) for steps, g in at_rate.groupby("steps")}
        for steps in sorted(score):
            if 2 * steps in score:
                ratio = score[steps] / score[2 * steps]
                finished = math.isfinite(score[steps]) and math.isfinite(score[2 * steps])
                table.append({"method": method, "lr": chosen[method], "steps": steps, "score": score[steps],
                              "score_at_twice": score[2 * steps], "ratio": ratio,
                              "converged": finished and bool(ratio <= 1 + tolerance)})
    table = pd.DataFrame(table, columns=["method", "lr", "steps", "score", "score_at_twice", "ratio", "converged"])
    passing = [int(steps) for steps, group in table.groupby("steps")
               if set(group.method[group.converged]) >= set(methods)]
    return table, (min(passing) if passing else None)


def report(cfg: Config) -> str:
    """``kind-bench tuning``: the tuning table, the budget rule's table and their plots."""
    from kind_bench.plots import budget_plot, tuning_plot

    records = [read_json(path, "tuning record") for path in sorted(tuning_path(cfg, "x").parent.glob("*.json"))]
    if not records:
        raise UserError(f"no tuning records in {tuning_path(cfg, 'x').parent}: run the tune stages (dvc repro)")
    stale = [rec.get("method", "?") for rec in records
             if recorded_identity(rec) != _published_identity(cfg.suite.name, rec.get("method", "?"))]
    if stale:
        raise UserError(f"tuning records of {', '.join(stale)} were tuned with another config than suite="
                        f"{cfg.suite.name}'s: rerun `kind-bench tune suite={cfg.suite.name} method=...` for each")
    lacking = sorted(set(cfg.tuning.budget_methods) - {rec["method"] for rec in records})
    if lacking:
        raise UserError(f"tuning.budget_methods {', '.join(lacking)} have no tuning record: run their tune stages")
    rows = pd.DataFrame([{**r, "chosen": r["lr"] == rec["chosen_lr"], "at_edge": rec["at_edge"] or ""}
                         for rec in records for r in rec["rows"]])
    final = rows[rows.steps == cfg.transfer.steps]
    columns = ["method", "task", "seed", "lr", "chosen", "at_edge", "status", "score",
               *sorted(c for c in final.columns if c.startswith("val_"))]
    final = final[columns].sort_values(["method", "task", "seed", "lr"])
    base = tuning_path(cfg, "x").parent.with_suffix("")
    with atomic_path(base.with_suffix(".csv")) as tmp:
        final.to_csv(tmp, index=False, float_format="%.6g")
    tuning_plot(final, base.with_name(base.name + ".png"))
    rates = {rec["method"]: rec["chosen_lr"] for rec in records}
    budget, chosen = budget_rule(rows[rows.method.isin(cfg.tuning.budget_methods)], rates, cfg.tuning.budget_tolerance,
                                 list(cfg.tuning.budget_methods), tuning_metric(cfg))
    with atomic_path(base.with_name(base.name + "_budget.csv")) as tmp:
        budget.to_csv(tmp, index=False, float_format="%.6g")
    write_json(base.with_name(base.name + "_budget.json"), {
        "rule": f"smallest budget b at which every budget method's pooled validation score, at its chosen rate, "
                f"is at most {cfg.tuning.budget_tolerance:.0%} worse than its score at 2b",
        "methods": list(cfg.tuning.budget_methods),
        "chosen_steps": chosen, "transfer_steps": cfg.transfer.steps, "consistent": chosen == cfg.transfer.steps})
    budget_plot(rows[rows.method.isin(cfg.tuning.budget_methods)], rates, cfg.transfer.steps,
                base.with_name(base.name + "_budget.png"))
    verdict = "matches" if chosen == cfg.transfer.steps else f"does NOT match (the rule picks {chosen})"
    print(f"tuning: {base.with_suffix('.csv')} ({len(records)} methods); transfer.steps={cfg.transfer.steps} "
          f"{verdict}")
    return "success"
