"""Stage ``leaderboard``: aggregate a suite's result JSONs into CSV, Markdown and plots.

One row per (task, method). Every metric gets its mean, standard deviation and a 95% bootstrap
confidence interval over seeds (no interval from a single seed). Methods are ranked per task on the
primary metric, in its declared direction (:data:`kind_bench.metrics.DIRECTION`); the average rank is over
the tasks a method ran. A task's best method is marked the winner only where its interval separates from
the runner-up's. The ``real_data`` reference row (the noise floor) is shown but never ranked.

The CSV has a fixed column order, a deterministic sort (task, reference row, rank, method) and fixed
precision, so its diffs stay reviewable. Runs that are not ``success`` stay visible as rows with their
status and reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kind_bench.config import Config
from kind_bench.errors import UserError
from kind_bench.io import atomic_path
from kind_bench.metrics import DIRECTION
from kind_bench.paths import leaderboard_path

#: the method name of the noise-floor rows (held-out real images, written by the floor stage)
REFERENCE_ROW = "real_data"
PRIMARY = ("fd_digits", "fid")
BUDGET_METRICS = ("fd_digits", "fid", "class_accuracy")
COST_COLUMNS = ("trainable_params", "transferred_params", "total_params", "task_bytes", "flops_per_step",
                "flops_per_sample", "steps", "train_time_s", "eval_time_s", "peak_memory_mb")
INTEGER_COLUMNS = ("n_seeds", "rank", "trainable_params", "transferred_params", "total_params", "task_bytes",
                   "flops_per_step", "flops_per_sample", "steps")
DECIMALS = 4
BOOTSTRAP_RESAMPLES = 2000


def budget_key(metric: str, fraction: str) -> str:
    """Column name of a metric at a fraction of the transfer steps, e.g. ``fd_digits@25%``."""
    return f"{metric}@{round(float(fraction) * 100)}%"


def load_runs(results_dir: Path) -> pd.DataFrame:
    """One row per result JSON: identity, status, metrics (final and per step budget) and cost."""
    rows: list[dict[str, Any]] = []
    for path in sorted(results_dir.glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"result {path} is corrupted ({exc.msg}); rerun its evaluate stage") from None
        info, train = data["run_info"], data["train_info"]
        row = {"task": info["task"], "method": info["method"], "seed": info["seed"], "status": info["status"],
               "error": info.get("error") or ""}
        row.update({k: train.get(k) for k in COST_COLUMNS})
        row.update(data["metrics"])
        for fraction, values in data.get("metrics_by_budget", {}).items():
            if float(fraction) < 1:
                row.update({budget_key(m, fraction): v for m, v in values.items() if m in BUDGET_METRICS})
        rows.append(row)
    if not rows:
        raise UserError(f"no result JSONs in {results_dir}: run the evaluate stages first (dvc repro)")
    return pd.DataFrame(rows)


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean (NaN with fewer than two values)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(BOOTSTRAP_RESAMPLES, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _status(group: pd.DataFrame) -> str:
    if (group.status == "success").all():
        return "success"
    if (group.status == "n/a").all():
        return "n/a"
    return "failed"


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method): status, seeds, mean/std/CI of every metric, budget means, mean costs."""
    metrics = [m for m in DIRECTION if m in runs.columns]
    budgets = sorted(c for c in runs.columns if "@" in c)
    rows = []
    for (task, method), group in runs.groupby(["task", "method"], sort=True):
        ok = group[group.status == "success"]
        row: dict[str, Any] = {"task": task, "method": method, "status": _status(group), "n_seeds": len(ok)}
        for m in metrics:
            values = ok[m].to_numpy(dtype=float)
            row[m] = values.mean() if len(values) else np.nan
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = bootstrap_ci(values)
        for column in (*budgets, *COST_COLUMNS):
            present = ok[column].dropna() if column in ok else pd.Series(dtype=float)
            row[column] = float(present.mean()) if len(present) else np.nan
        failures = sorted(set(group.error[group.status != "success"]))
        row["note"] = "; ".join(failures)
        rows.append(row)
    table = pd.DataFrame(rows)
    table = rank(table, primary_metric(metrics))
    columns = ["task", "method", "status", "n_seeds", "rank", "avg_rank", "winner"]
    for m in metrics:
        columns += [m, f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"]
    columns += [*budgets, *COST_COLUMNS, "note"]
    table["_reference"] = table.method != REFERENCE_ROW
    table = table.sort_values(["task", "_reference", "rank", "method"], na_position="last", kind="mergesort")
    return table[columns].reset_index(drop=True)


def primary_metric(metrics: list[str]) -> str | None:
    """The metric that ranks methods (the Frechet distance of the suite's extractor)."""
    return next((m for m in PRIMARY if m in metrics), None)


def rank(table: pd.DataFrame, primary: str | None) -> pd.DataFrame:
    """Add per-task ``rank``, cross-task ``avg_rank`` and the CI-separated ``winner`` mark."""
    table = table.copy()
    table["rank"], table["avg_rank"], table["winner"] = np.nan, np.nan, ""
    if primary is None:
        return table
    sign = 1 if DIRECTION[primary] == "lower" else -1
    rankable = (table.method != REFERENCE_ROW) & (table.status == "success") & table[primary].notna()
    for task in table.task.unique():
        mask = rankable & (table.task == task)
        table.loc[mask, "rank"] = (sign * table.loc[mask, primary]).rank(method="min")
        ordered = table[mask].sort_values("rank")
        if len(ordered) >= 2:
            best, runner = ordered.iloc[0], ordered.iloc[1]
            lo, hi = f"{primary}_ci_low", f"{primary}_ci_high"
            separated = best[hi] < runner[lo] if sign == 1 else best[lo] > runner[hi]
            if bool(separated):
                table.loc[ordered.index[0], "winner"] = "yes"
    means = table[rankable].groupby("method")["rank"].mean()
    table.loc[rankable, "avg_rank"] = table.loc[rankable, "method"].map(means)
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Fixed precision: integers for counts, DECIMALS places for everything else, blanks for NaN."""
    out = table.copy()
    for column in out.columns:
        if column in INTEGER_COLUMNS:
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{int(round(v))}")
        elif pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.{DECIMALS}f}")
    return out


def overview(table: pd.DataFrame, primary: str) -> list[str]:
    """A method x task matrix of the primary metric (mean [95% CI]), ordered by average rank."""
    tasks = list(dict.fromkeys(table.task))
    methods = table[table.method != REFERENCE_ROW]
    order = methods.groupby("method").agg(avg_rank=("avg_rank", "first"), trainable=("trainable_params", "max"))
    order = order.sort_values(["avg_rank"], na_position="last")
    lines = [f"| method | {' | '.join(tasks)} | average rank | trainable (max) |",
             "|:--|" + ":--|" * len(tasks) + "--:|--:|"]
    cells = methods.set_index(["method", "task"])
    for method, summary in order.iterrows():
        row = []
        for task in tasks:
            if (method, task) not in cells.index:
                row.append("")
                continue
            r = cells.loc[(method, task)]
            if r.status != "success":
                row.append(r.status)
                continue
            low, high = r[f"{primary}_ci_low"], r[f"{primary}_ci_high"]
            ci = "" if pd.isna(low) else f" [{low:.2f}, {high:.2f}]"
            row.append(f"{r[primary]:.2f}{ci}{' ★' if r.winner == 'yes' else ''}")
        rank = "" if pd.isna(summary.avg_rank) else f"{summary.avg_rank:.2f}"
        count = "" if pd.isna(summary.trainable) else f"{int(summary.trainable):,}"
        lines.append(f"| {method} | {' | '.join(row)} | {rank} | {count} |")
    floor = table[table.method == REFERENCE_ROW].set_index("task")
    if len(floor):
        lines.append(f"| *{REFERENCE_ROW}* | "
                     + " | ".join(f"{floor.loc[t, primary]:.2f}" if t in floor.index else "" for t in tasks)
                     + " |  |  |")
    return lines


def markdown(table: pd.DataFrame, suite: str) -> str:
    """Per-task tables of the headline numbers (mean ± std [95% CI]); ★ marks a CI-separated winner."""
    primary = primary_metric([m for m in DIRECTION if m in table.columns])
    shown = [m for m in DIRECTION if m in table.columns and m != primary]
    lines = [f"# Leaderboard: {suite}", "",
             f"Mean over seeds; {primary} as mean ± std [95% bootstrap CI]. ★: best, with a CI that separates "
             "from the runner-up. `real_data`: held-out real images (the noise floor), not ranked.", "",
             f"## At a glance: {primary} ↓ per task, mean [95% CI]", "", *overview(table, primary), ""]
    for task, rows in table.groupby("task", sort=False):
        lines += [f"## {task}", "",
                  f"| rank | method | {primary} ↓ | " + " | ".join(shown) + " | trainable | transferred | "
                  "train s | note |",
                  "|--:|:--|:--|" + "--:|" * len(shown) + "--:|--:|--:|:--|"]
        for _, r in rows.iterrows():
            def num(v: float, digits: int = 3) -> str:
                return "" if pd.isna(v) else f"{v:.{digits}f}"
            low, high = r[f"{primary}_ci_low"], r[f"{primary}_ci_high"]
            ci = "" if pd.isna(low) else f" [{num(low)}, {num(high)}]"
            std = "" if pd.isna(r[f"{primary}_std"]) else f" ± {num(r[f'{primary}_std'])}"
            head = f"{num(r[primary])}{std}{ci}" if r.status == "success" else r.status
            count = "" if pd.isna(r.trainable_params) else f"{int(r.trainable_params):,}"
            moved = "" if pd.isna(r.transferred_params) else f"{int(r.transferred_params):,}"
            star = " ★" if r.winner == "yes" else ""
            lines.append(f"| {'' if pd.isna(r['rank']) else int(r['rank'])} | {r.method}{star} | {head} | "
                         + " | ".join(num(r[m]) for m in shown)
                         + f" | {count} | {moved} | {num(r.train_time_s, 1)} | {r.note} |")
        lines.append("")
    ranks = table.dropna(subset=["avg_rank"]).groupby("method").agg(avg_rank=("avg_rank", "first"),
                                                                      tasks=("rank", "count"))
    lines += ["## Average rank across tasks", "", "| method | average rank | tasks ranked |", "|:--|--:|--:|"]
    for method, r in ranks.sort_values(["avg_rank"]).iterrows():
        lines.append(f"| {method} | {r.avg_rank:.2f} | {int(r.tasks)} |")
    return "\n".join(lines) + "\n"


def run(cfg: Config) -> None:
    """Write ``results/leaderboard/<suite>.csv``, ``.md`` and the plots, each atomically."""
    from kind_bench.plots import convergence_plot, pareto_plot

    runs = load_runs(Path(cfg.paths.results) / "runs" / cfg.suite.name)
    table = aggregate(runs)
    with atomic_path(leaderboard_path(cfg, ".csv")) as tmp:
        format_table(table).to_csv(tmp, index=False)
    with atomic_path(leaderboard_path(cfg, ".md")) as tmp:
        tmp.write_text(markdown(table, cfg.suite.name))
    pareto_plot(table, leaderboard_path(cfg, "_pareto.png"))
    convergence_plot(table, leaderboard_path(cfg, "_convergence.png"))
    print(f"leaderboard: {leaderboard_path(cfg)} ({len(table)} rows from {len(runs)} runs)")
