"""Stage ``leaderboard``: aggregate a suite's result JSONs into a CSV and a Markdown table.

One row per (task, method); metrics are averaged over seeds. The CSV has a fixed column order, a
deterministic sort (task, then the primary metric in its declared direction, then method) and fixed
precision, so that its diffs stay reviewable. Runs that are not ``success`` are kept as rows with their
status and error, so a failed or n/a cell is visible rather than silently missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from kind_bench.config import Config
from kind_bench.errors import UserError
from kind_bench.io import atomic_path
from kind_bench.metrics import DIRECTION
from kind_bench.paths import leaderboard_path

COST_COLUMNS = ("trainable_params", "transferred_params", "total_params", "steps", "train_time_s", "peak_memory_mb")
KEY_COLUMNS = ("task", "method", "status", "n_seeds")
PRIMARY = ("fd_digits", "fid")
DECIMALS = 4


def load_runs(results_dir: Path) -> pd.DataFrame:
    """One row per result JSON: identity, status, metrics and cost."""
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
        rows.append(row)
    if not rows:
        raise UserError(f"no result JSONs in {results_dir}: run the evaluate stages first (dvc repro)")
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (task, method); status is the worst status among the seeds."""
    metrics = [m for m in DIRECTION if m in runs.columns]
    rows = []
    for (task, method), group in runs.groupby(["task", "method"], sort=True):
        ok = group[group.status == "success"]
        status = "success" if len(ok) == len(group) else ("n/a" if (group.status == "n/a").all() else "failed")
        row: dict[str, Any] = {"task": task, "method": method, "status": status, "n_seeds": len(ok)}
        for m in metrics:
            row[m] = ok[m].mean() if len(ok) else float("nan")
        for c in COST_COLUMNS:
            row[c] = ok[c].mean() if len(ok) and ok[c].notna().any() else float("nan")
        row["note"] = "; ".join(sorted(set(group.error[group.status != "success"]))) if status != "success" else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    columns = [*KEY_COLUMNS, *metrics, *COST_COLUMNS, "note"]
    primary = next((m for m in PRIMARY if m in metrics), None)
    if primary is not None:
        table["_sort"] = table[primary] * (1 if DIRECTION[primary] == "lower" else -1)
        table = table.sort_values(["task", "_sort", "method"], na_position="last", kind="mergesort")
    else:
        table = table.sort_values(["task", "method"], kind="mergesort")
    return table[columns].reset_index(drop=True)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Fixed precision: integers for counts, DECIMALS places for everything else."""
    out = table.copy()
    for column in out.columns:
        if column in ("trainable_params", "transferred_params", "total_params", "steps", "n_seeds"):
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{int(round(v))}")
        elif pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.{DECIMALS}f}")
    return out


def run(cfg: Config) -> None:
    """Write ``results/leaderboard/<suite>.csv`` and ``.md`` atomically."""
    runs = load_runs(Path(cfg.paths.results) / "runs" / cfg.suite.name)
    table = format_table(aggregate(runs))
    csv_path, md_path = leaderboard_path(cfg, ".csv"), leaderboard_path(cfg, ".md")
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# Leaderboard: {cfg.suite.name}\n\n" + table.to_markdown(index=False) + "\n")
    print(f"leaderboard: {csv_path} ({len(table)} rows from {len(runs)} runs)")
