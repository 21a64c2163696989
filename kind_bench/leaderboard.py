"""Stage ``leaderboard``: aggregate a suite's published result records into CSV, Markdown, plots, findings.

Only files named ``<method>/<method>-<task>-<seed>.json`` under ``results/runs/<suite>/`` are read, and
each must say it is that cell. The expected grid (``params.yaml``: methods x tasks x seeds) must be
complete: missing cells are listed and their rows marked ``incomplete`` (and the call exits 1). A cell
whose primary or any directed metric is missing or not finite counts as ``failed``, with the reason.
Seeds whose configs differ (other than the seed) are never pooled: the call refuses with one line.

One row per (task, method): for every metric the mean, the standard deviation and a 95% interval of the
mean over units (Student's t below 10 units, BCa from 10 on; ``ci_method`` says which), never the seeds'
range. A unit is the seeds that transfer from one pre-trained ancestry, averaged (5 seeds on 3
ancestries are 3 units: seeds sharing an ancestry share its pre-training noise); the seeds of a method
without an ancestry are grouped the same way (:func:`unit_of`). The mean ``eval_noise_sd`` (the
metric's own sampling noise) is beside them. Methods are ranked per task on the primary metric in its
declared direction (:data:`kind_bench.metrics.DIRECTION`). ``avg_rank`` is over the tasks every ranked
method ran (a task that changes the architecture, like ``small``, is ranked on its own
and shown apart). A task's best method gets ★ only where a paired t-test over the shared units against
the runner-up, Holm-corrected over the tasks, says p < 0.05; ``p_best`` is its probability of rank 1
under a bootstrap over the shared units, reported from 10 units on (below, a bootstrap is
overconfident). The ``real_data`` rows (the noise floor) are shown, never ranked.

The CSV has a fixed column order, a deterministic sort (task, reference row, rank, method) and fixed
precision, so its diffs stay reviewable. CSV, Markdown, findings, plots and the per-task DVC metrics are
written into a temporary folder and moved into place together.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kind_bench.config import Config, with_defaults
from kind_bench.errors import UserError
from kind_bench.identity import PUBLISHED, digest, seedless_digest
from kind_bench.io import file_sha256, read_json, write_json
from kind_bench.lock import exclusive
from kind_bench.metrics import DIRECTION, PRIMARY
from kind_bench.paths import leaderboard_dir, published_results
from kind_bench.results import REFERENCE_ROW
from kind_bench.stats import BCA_MIN_N, holm, mean_interval, p_best, paired_test

BUDGET_METRICS = ("fd_digits", "fid", "class_accuracy", "top1")
COST_COLUMNS = ("trainable_params", "transferred_params", "total_params", "task_bytes", "flops_per_step",
                "flops_per_sample", "steps", "depth", "train_time_s", "eval_time_s", "peak_memory_mb")
#: the config sections that decide how a cell is scored: every method of a task must share them
SCORING = ("data", "task", "sample", "eval")
INTEGER_COLUMNS = ("n_seeds", "n_units", "trainable_params", "transferred_params", "total_params", "task_bytes",
                   "flops_per_step", "flops_per_sample", "steps", "depth")
DECIMALS = 4
REQUIRED = {"run_info": ("method", "task", "seed", "status"), "train_info": (), "metrics": ()}


@dataclass(frozen=True)
class Grid:
    """The cells a leaderboard must hold: methods x tasks x seeds."""

    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]


def _listing(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple | dict) else str(value).split(",")
    return tuple(str(v).strip() for v in items if str(v).strip())


def expected_grid(cfg: Config, params: Path = Path("params.yaml")) -> Grid | None:
    """The DVC grid in ``params.yaml`` (methods, tasks, seeds) of this suite: the top level, or a section
    (such as ``classification``) whose ``suite`` is this one."""
    import yaml

    if not params.is_file():
        return None
    data = yaml.safe_load(params.read_text()) or {}
    sections = [data, *(v for v in data.values() if isinstance(v, dict))]
    found = next((d for d in sections if d.get("suite") == cfg.suite.name), None)
    if found is None or not {"methods", "tasks", "seeds"} <= set(found):
        return None
    return Grid(_listing(found["methods"]), _listing(found["tasks"]), tuple(int(s) for s in _listing(found["seeds"])))


def budget_key(metric: str, fraction: str) -> str:
    """Column name of a metric at a fraction of the transfer steps, e.g. ``fd_digits@25%``."""
    return f"{metric}@{round(float(fraction) * 100)}%"


def _cell_of_file(path: Path) -> tuple[str, str, int] | None:
    """(method, task, seed) when ``path`` is ``<method>/<method>-<task>-<seed>.json``, else None."""
    method = path.parent.name
    match = re.fullmatch(rf"{re.escape(method)}-(?P<task>.+)-(?P<seed>\d+)\.json", path.name)
    return (method, match["task"], int(match["seed"])) if match else None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"result {path} is corrupted ({getattr(exc, 'msg', exc)}); rerun its cell") from None
    for block, keys in REQUIRED.items():
        if not isinstance(data, dict) or not isinstance(data.get(block), dict):
            raise UserError(f"result {path} has no {block} block (an older or foreign file?): rerun its cell")
        missing = [k for k in keys if k not in data[block]]
        if missing:
            raise UserError(f"result {path} lacks {block}.{missing[0]}: rerun its cell")
    return data


def _row(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    info, train = data["run_info"], data["train_info"]
    config = info.get("config") or {}
    row: dict[str, Any] = {
        "task": info["task"], "method": info["method"], "seed": info["seed"], "status": info["status"],
        "error": info.get("error") or "", "config_digest": info.get("config_digest", ""), "file": str(path),
        "scoring_digest": scoring_digest(config),
        "unit": unit_of(info, config),
        "lr": (config.get("transfer") or {}).get("lr") if info["method"] != REFERENCE_ROW else None,
        "apart": (config.get("task") or {}).get("depth_ratio", 1.0) < 1,
        "domain": (config.get("task") or {}).get("domain", "identity"),
    }
    row.update({k: train.get(k) for k in COST_COLUMNS})
    metrics = data["metrics"]
    row.update(metrics)
    for fraction, values in data.get("metrics_by_budget", {}).items():
        if float(fraction) < 1:
            row.update({budget_key(m, fraction): v if _finite(v) else math.nan  # not finite: missing, noted
                        for m, v in values.items() if m in BUDGET_METRICS})
    if row["status"] == "success":
        primary = next((m for m in PRIMARY.values() if m in metrics), None)
        bad = [m for m, v in metrics.items() if DIRECTION.get(m) and not _finite(v)]
        if primary is None or bad:
            row.update(status="failed", error=f"metric {bad[0] if bad else 'fd_digits/fid'} missing or not finite")
    return row


def scoring_digest(config: dict[str, Any]) -> str:
    """What decides how a cell was scored (:data:`SCORING`), with fields added since the record was written
    at their defaults (:func:`~kind_bench.config.with_defaults`)."""
    full = with_defaults(config) if config else {}
    return digest({k: full.get(k) for k in SCORING})


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_provenance(path: Path, info: dict[str, Any], suite: str | None) -> None:
    """Refuse a record whose config does not say it is this cell of this suite, published, as written.

    The config digest is recomputed from the recorded config (an edited config no longer matches it), and
    the config's own task, seed and suite must be the cell's; a record of an ad-hoc namespace copied into
    the published folder is refused too. The ``real_data`` floor rows trained nothing and have no namespace.
    """
    config = info.get("config")
    if not isinstance(config, dict) or not config:
        raise UserError(f"result {path} records no config: rerun its cell")
    floor = info["method"] == REFERENCE_ROW  # scored real images: nothing trained, no namespace
    if (not floor or "config_digest" in info) and info.get("config_digest") != seedless_digest(config):
        raise UserError(f"result {path}: its config does not match its config_digest (edited after it was "
                        "written?): rerun its cell")
    said = {"task": (config.get("task") or {}).get("name"), "seed": config.get("seed"),
            "suite": (config.get("suite") or {}).get("name")}
    expected = {"task": info["task"], "seed": info["seed"], "suite": suite if suite is not None else said["suite"]}
    for key, value in said.items():
        if value != expected[key]:
            raise UserError(f"result {path} was run with {key}={value!r}, not the {expected[key]!r} of the cell "
                            "and leaderboard it is filed under: rerun its cell")
    if not floor and info.get("namespace") != PUBLISHED:
        raise UserError(f"result {path} belongs to namespace {info.get('namespace')!r}, not the published "
                        f"{PUBLISHED!r}: it was copied in; rerun its cell (dvc repro)")


def load_runs(results_dir: Path, suite: str | None = None) -> pd.DataFrame:
    """One row per well-named result record: identity, status, config digest, metrics and cost (every
    record's provenance checked, see :func:`_check_provenance`; ``suite``: the leaderboard's)."""
    rows = []
    for path in sorted(results_dir.glob("*/*.json")):
        cell = _cell_of_file(path)
        if cell is None:
            continue
        data = _read_record(path)
        info = data["run_info"]
        if (info["method"], info["task"], info["seed"]) != cell:
            raise UserError(f"result {path} records cell {info['method']}-{info['task']}-{info['seed']}, "
                            "not the one its name says: rerun its cell")
        _check_provenance(path, info, suite)
        rows.append(_row(path, data))
    if not rows:
        raise UserError(f"no result records in {results_dir}: run the pipeline first (dvc repro)")
    return pd.DataFrame(rows)


def check_pooling(runs: pd.DataFrame) -> None:
    """Refuse to pool seeds of one row that were run with different configs, or to rank methods of one task
    that were scored differently (other data, task, sampling or evaluation settings)."""
    methods = runs[runs.method != REFERENCE_ROW]
    for (task, method), group in methods.groupby(["task", "method"]):
        digests = group.config_digest.unique()
        if len(digests) > 1:
            seeds = {d: sorted(group.seed[group.config_digest == d]) for d in digests}
            listing = "; ".join(f"seeds {s} with config {d or '(unrecorded)'}" for d, s in seeds.items())
            raise UserError(f"{method} on {task}: seeds were run with different configs ({listing}); "
                            "rerun them with one config (dvc repro) before building the leaderboard")
    for task, group in methods.groupby("task"):
        ways = group.groupby("scoring_digest").method.unique()
        if len(ways) > 1:
            listing = "; ".join(sorted(", ".join(sorted(m)) for m in ways))
            raise UserError(f"on {task}, these methods were scored with different {'/'.join(SCORING)} settings "
                            f"({listing}): rerun them with one config before ranking them together")


def check_in_grid(runs: pd.DataFrame, grid: Grid | None) -> None:
    """Refuse records of cells the grid does not have (another seed, a method it does not list)."""
    if grid is None:
        return
    cells = set(zip(runs.method, runs.task, runs.seed, strict=True))
    extra = sorted((m, t, s) for m, t, s in cells if m != REFERENCE_ROW and not (
        m in grid.methods and t in grid.tasks and s in grid.seeds))
    if extra:
        shown = ", ".join(f"{m}-{t}-{s}" for m, t, s in extra[:5])
        raise UserError(f"{len(extra)} result records are outside the grid of params.yaml ({shown}"
                        f"{', ...' if len(extra) > 5 else ''}): remove them or add them to the grid")


def missing_cells(runs: pd.DataFrame, grid: Grid | None) -> list[tuple[str, str, int]]:
    """Cells of the expected grid without a record (floor rows are not part of the grid)."""
    if grid is None:
        return []
    present = set(zip(runs.method, runs.task, runs.seed, strict=True))
    return [(m, t, s) for m in grid.methods for t in grid.tasks for s in grid.seeds if (m, t, s) not in present]


def _status(group: pd.DataFrame, missing: list[int]) -> str:
    if missing:
        return "incomplete"
    if (group.status == "success").all():
        return "success"
    if (group.status == "n/a").all():
        return "n/a"
    return "failed"


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The declared metrics present in the runs, in DIRECTION's order."""
    return [m for m in DIRECTION if m in runs.columns]


def aggregate(runs: pd.DataFrame, missing: list[tuple[str, str, int]] = ()) -> pd.DataFrame:
    """Per (task, method): status, seeds, mean/std/interval of every metric, budget means, mean costs, ranks."""
    metrics = metric_columns(runs)
    budgets = sorted(c for c in runs.columns if "@" in c)
    absent = pd.DataFrame([{"task": t, "method": m, "seed": s, "status": "missing", "error": ""}
                           for m, t, s in missing])
    every = pd.concat([runs, absent], ignore_index=True) if len(absent) else runs
    rows = []
    for (task, method), group in every.groupby(["task", "method"], sort=True):
        ok = group[group.status == "success"]
        gone = sorted(int(s) for s in group.seed[group.status == "missing"])
        row: dict[str, Any] = {"task": task, "method": method, "status": _status(group, gone), "n_seeds": len(ok),
                               "n_units": seed_units(ok, ok.seed.unique()).nunique(),
                               "apart": bool(group.apart.fillna(False).any()) if "apart" in group else False}
        notes = []
        for m in metrics:
            values = complete_unit_values(ok, m, notes)
            row[m] = values.mean() if len(values) else np.nan
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"], ci = mean_interval(values)
            if m in PRIMARY.values():
                row["ci_method"] = ci
        for column in budgets:  # weighted as the final metric is: per unit, then over units
            values = complete_unit_values(ok, column, notes)
            row[column] = values.mean() if len(values) else np.nan
        for column in ("lr", "eval_noise_sd", *COST_COLUMNS):
            present = ok[column].dropna() if column in ok else pd.Series(dtype=float)
            row[column] = float(present.mean()) if len(present) else np.nan
        notes += sorted(set(group.error[~group.status.isin(["success", "missing"])].dropna()) - {""})
        if gone:
            notes.insert(0, f"missing seeds {', '.join(map(str, gone))}")
        row["note"] = "; ".join(notes)
        rows.append(row)
    table = rank(pd.DataFrame(rows), runs, primary_metric(metrics))
    columns = ["task", "method", "status", "apart", "n_seeds", "n_units", "rank", "avg_rank", "p_best", "winner",
               "p_vs_next", "lr"]
    for m in metrics:
        columns += [m, f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"]
    columns += ["ci_method", "eval_noise_sd", *budgets, *COST_COLUMNS, "note"]
    table["_reference"] = table.method != REFERENCE_ROW
    table = table.sort_values(["task", "_reference", "rank", "method"], na_position="last", kind="mergesort")
    return table.reindex(columns=columns).reset_index(drop=True)


def primary_metric(metrics: list[str]) -> str | None:
    """The metric that ranks methods (the Frechet distance of the suite's extractor)."""
    return next((m for m in PRIMARY.values() if m in metrics), None)


def unit_of(info: dict[str, Any], config: dict[str, Any]) -> int | None:
    """The ancestry seed of the unit a record's seed belongs to: the one it transferred from, else (a method
    without an ancestry, the floor) the suite's ``seed % suite.ancestry_seeds``, so that every method of a
    suite is summarised and paired over the same units; None when the record says neither."""
    if info.get("ancestry_seed") is not None:
        return int(info["ancestry_seed"])
    groups = (config.get("suite") or {}).get("ancestry_seeds")
    return int(info["seed"]) % int(groups) if groups else None


def seed_units(rows: pd.DataFrame, seeds: pd.Index | list[int]) -> pd.Series:
    """The unit of each seed, indexed by seed: seeds that transfer from one pre-trained ancestry are one unit
    (``ancestry <a>``: they share its pre-training noise, so they are not independent; see :func:`unit_of`);
    a seed whose rows say no unit is a unit of its own. Rows that disagree on a seed's unit are refused."""
    units = {}
    for seed in seeds:
        found = set(rows.unit[(rows.seed == seed) & rows.unit.notna()]) if "unit" in rows else set()
        if len(found) > 1:
            raise UserError(f"seed {seed} transfers from ancestry seeds {sorted(found)} in different records: "
                            "rerun them with one suite.ancestry_seeds")
        units[seed] = f"ancestry {int(found.pop())}" if found else f"seed {int(seed)}"
    return pd.Series(units, dtype=object)


def unit_values(rows: pd.DataFrame, metric: str) -> np.ndarray:
    """One method's ``metric`` per unit (the mean of the unit's seeds), in unit order."""
    present = rows[rows[metric].notna()]
    if present.empty:
        return np.array([], dtype=float)
    values = present.set_index("seed")[metric].astype(float)
    return values.groupby(seed_units(present, values.index)).mean().to_numpy()


def complete_unit_values(rows: pd.DataFrame, column: str, notes: list[str]) -> np.ndarray:
    """:func:`unit_values` of a row's successful seeds when every one has ``column``; else none, with a note
    in ``notes`` (a mean over a subset of the seeds the row counts would pass for the row's)."""
    lacking = sorted(int(s) for s in rows.seed[rows[column].isna()]) if column in rows else []
    if 0 < len(lacking) < len(rows):
        notes.append(f"{column} missing for seed {', '.join(map(str, lacking))}")
    return unit_values(rows, column) if column in rows and not lacking else np.array([], dtype=float)


def per_unit(runs: pd.DataFrame, task: str, methods: list[str], metric: str) -> dict[str, list[float]]:
    """``{method: [value per shared unit]}`` on one task: over the seeds every listed method succeeded on, each
    unit's seeds averaged (see :func:`seed_units`); the lists are paired by unit."""
    ok = runs[(runs.task == task) & (runs.status == "success") & runs.method.isin(methods)]
    pivot = ok.pivot_table(index="seed", columns="method", values=metric, aggfunc="first").dropna()
    means = pivot.groupby(seed_units(ok, pivot.index)).mean()
    return {m: means[m].tolist() for m in methods if m in means}


def common_tasks(table: pd.DataFrame) -> list[str]:
    """Tasks, other than those that change the architecture, on which every ranked method succeeded."""
    ranked = table[(table.method != REFERENCE_ROW) & (table.status == "success") & ~table.apart]
    methods = set(ranked.method)
    tasks = [t for t, g in ranked.groupby("task") if set(g.method) == methods]
    return sorted(tasks)


def rank(table: pd.DataFrame, runs: pd.DataFrame, primary: str | None) -> pd.DataFrame:
    """Add per-task ``rank``, ``p_best``, the paired ``winner`` mark and ``avg_rank`` over the common tasks."""
    table = table.copy()
    table["rank"], table["avg_rank"], table["p_best"], table["p_vs_next"], table["winner"] = (
        np.nan, np.nan, np.nan, np.nan, "")
    if primary is None:
        return table
    lower = DIRECTION[primary] == "lower"
    rankable = (table.method != REFERENCE_ROW) & (table.status == "success") & table[primary].notna()
    tests: list[tuple[int, float]] = []
    for task in table.task.unique():
        mask = rankable & (table.task == task)
        # tied methods share the mean of the ranks they span (4.5, 4.5), so a tie biases no average rank
        table.loc[mask, "rank"] = ((1 if lower else -1) * table.loc[mask, primary]).rank(method="average")
        ordered = table[mask].sort_values("rank")
        scores = per_unit(runs, task, list(ordered.method), primary)
        if scores and len(next(iter(scores.values()))) >= BCA_MIN_N:  # a bootstrap over fewer units: overconfident
            for method, share in p_best(scores, lower).items():
                table.loc[mask & (table.method == method), "p_best"] = share
        if len(ordered) >= 2 and {ordered.method.iloc[0], ordered.method.iloc[1]} <= set(scores):
            test = paired_test(scores[ordered.method.iloc[0]], scores[ordered.method.iloc[1]])
            if math.isfinite(test.p) and (test.mean_diff < 0) == lower:  # paired, the top one is the better
                tests.append((ordered.index[0], test.p))
    for (index, _), adjusted in zip(tests, holm([p for _, p in tests]), strict=True):
        table.loc[index, "p_vs_next"] = adjusted
        if adjusted < 0.05:
            table.loc[index, "winner"] = "yes"
    common = common_tasks(table)
    in_common = rankable & table.task.isin(common)
    means = table[in_common].groupby("method")["rank"].mean()
    table["avg_rank"] = table.method.map(means).where(rankable)
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Fixed precision: integers for counts, DECIMALS places for everything else, blanks for NaN."""
    out = table.copy()
    for column in out.columns:
        if column in INTEGER_COLUMNS:
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{int(round(v))}")
        elif column in ("lr", "rank"):  # a rank is whole unless tied (mid-rank: 4.5)
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        elif pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.{DECIMALS}f}")
    return out


def _cell(r: pd.Series, primary: str) -> str:
    if r.status != "success":
        return r.status
    low, high = r[f"{primary}_ci_low"], r[f"{primary}_ci_high"]
    ci = "" if pd.isna(low) else f" [{low:.2f}, {high:.2f}]"
    return f"{r[primary]:.2f}{ci}{' ★' if r.winner == 'yes' else ''}"


def overview(table: pd.DataFrame, primary: str, tasks: list[str], average: bool = True) -> list[str]:
    """A method x task matrix of the primary metric (mean [95% CI]), ordered by average rank (``average``)
    or by rank on the first task."""
    methods = table[(table.method != REFERENCE_ROW) & table.task.isin(tasks)]
    order = methods.groupby("method").agg(avg_rank=("avg_rank", "first"), rank=("rank", "min"),
                                          trainable=("trainable_params", "max"), lr=("lr", "first"))
    order = order.sort_values(["avg_rank" if average else "rank"], na_position="last")
    last = "average rank" if average else "rank"
    lines = [f"| method | {' | '.join(tasks)} | {last} | trainable | lr |",
             "|:--|" + ":--|" * len(tasks) + "--:|--:|--:|"]
    cells = methods.set_index(["method", "task"])
    for method, summary in order.iterrows():
        row = [_cell(cells.loc[(method, task)], primary) if (method, task) in cells.index else "" for task in tasks]
        position = summary.avg_rank if average else summary["rank"]
        shown = "" if pd.isna(position) else (f"{position:.2f}" if average else f"{position:g}")
        count = "" if pd.isna(summary.trainable) else f"{int(summary.trainable):,}"
        lr = "" if pd.isna(summary.lr) else f"{summary.lr:.3g}"
        lines.append(f"| {method} | {' | '.join(row)} | {shown} | {count} | {lr} |")
    floor = table[table.method == REFERENCE_ROW].set_index("task")
    if len(floor):
        lines.append(f"| *{REFERENCE_ROW}* | "
                     + " | ".join(f"{floor.loc[t, primary]:.2f}" if t in floor.index else "" for t in tasks)
                     + " |  |  |  |")
    return lines


def _num(v: float, digits: int = 3) -> str:
    return "" if pd.isna(v) else f"{v:.{digits}f}"


ARROWS = {"lower": " ↓", "higher": " ↑", None: ""}
#: what a metric's own noise (``eval_noise_sd``) is, per primary metric
NOISE = {"top1": "the binomial standard error of top-1 on the test images",
         None: "sd over independent sampling draws of one trained model"}


def task_table(rows: pd.DataFrame, primary: str) -> list[str]:
    """One task's rows with every directed metric, the sampling noise, p_best and costs."""
    shown = [m for m in DIRECTION if m in rows.columns and m != primary]
    lines = [f"| rank | method | {primary}{ARROWS[DIRECTION[primary]]} mean ± sd [95% CI] | units | eval noise sd | "
             "p_best | " + " | ".join(f"{m}{ARROWS[DIRECTION[m]]}" for m in shown)
             + " | trainable | lr | train s | note |",
             "|--:|:--|:--|--:|--:|--:|" + "--:|" * len(shown) + "--:|--:|--:|:--|"]
    for _, r in rows.iterrows():
        std = "" if pd.isna(r[f"{primary}_std"]) else f" ± {_num(r[f'{primary}_std'])}"
        low, high = r[f"{primary}_ci_low"], r[f"{primary}_ci_high"]
        ci = "" if pd.isna(low) else f" [{_num(low)}, {_num(high)}]"
        head = f"{_num(r[primary])}{std}{ci}" if r.status == "success" else r.status
        count = "" if pd.isna(r.trainable_params) else f"{int(r.trainable_params):,}"
        lr = "" if pd.isna(r.lr) else f"{r.lr:.3g}"
        star = " ★" if r.winner == "yes" else ""
        units = "" if pd.isna(r.n_units) else int(r.n_units)
        lines.append(f"| {'' if pd.isna(r['rank']) else int(r['rank'])} | {r.method}{star} | {head} | {units} | "
                     f"{_num(r.eval_noise_sd)} | {_num(r.p_best, 2)} | " + " | ".join(_num(r[m]) for m in shown)
                     + f" | {count} | {lr} | {_num(r.train_time_s, 1)} | {r.note} |")
    return lines


def markdown(table: pd.DataFrame, suite: str) -> str:
    """The overview over the common tasks, the tasks ranked apart, and one table per task."""
    primary = primary_metric([m for m in DIRECTION if m in table.columns])
    if primary is None:
        return "\n".join([f"# Leaderboard: {suite}", "", "No run succeeded.", "", "| task | method | status | note |",
                          "|:--|:--|:--|:--|", *(f"| {r.task} | {r.method} | {r.status} | {r.note} |"
                                                 for r in table.itertuples())]) + "\n"
    common = common_tasks(table)
    apart = sorted(set(table.task) - set(common))
    lines = [f"# Leaderboard: {suite}", "",
             "Seeds that transfer from one pre-trained ancestry are one unit (averaged first: they share its "
             f"pre-training); {primary} as mean ± sd [95% CI of the mean] over units (`ci_method`: t below 10 "
             "units, BCa from 10). ★: best on the task, with a paired t-test over the shared units against the "
             "runner-up at Holm-corrected p < 0.05 (`p_vs_next`). `p_best` (probability of rank 1 under a "
             "bootstrap over the units) is left blank below 10 units. "
             f"`eval noise sd`: the metric's own noise ({NOISE.get(primary, NOISE[None])}). "
             + ("`real_data`: held-out real images (the noise floor), not ranked. "
                if REFERENCE_ROW in set(table.method) else "")
             + f"Average rank over the tasks every ranked method ran ({', '.join(common) or 'none'}).", "",
             f"## At a glance: {primary}{ARROWS[DIRECTION[primary]]} per task", "",
             *overview(table, primary, common), ""]
    for task in apart:
        lines += [f"## Ranked apart: {task} (not every method can run it)", "",
                  *overview(table, primary, [task], average=False), ""]
    for task, rows in table.groupby("task", sort=False):
        lines += [f"## {task}", "", *task_table(rows, primary), ""]
    return "\n".join(lines) + "\n"


def task_metrics(table: pd.DataFrame, primary: str) -> dict[str, dict[str, float]]:
    """``{task: {method: mean primary}}``: the compact DVC metrics (one small file per task)."""
    out: dict[str, dict[str, float]] = {}
    for _, r in table[table.status == "success"].iterrows():
        out.setdefault(r.task, {})[r.method] = round(float(r[primary]), DECIMALS)
    return out


def size_table(table: pd.DataFrame, primary: str) -> pd.DataFrame:
    """The descendant-size view: for every method that ran a shallower descendant, its primary metric and
    inherited parameters at each depth (the full-depth row is the ``novel`` task)."""
    apart = set(table.task[table.apart])
    methods = set(table.method[table.apart & (table.status == "success")]) - {REFERENCE_ROW}
    rows = table[table.method.isin(methods) & (table.task.isin(apart) | (table.task == "novel"))
                 & (table.status == "success")]
    columns = ["method", "task", "depth", primary, f"{primary}_ci_low", f"{primary}_ci_high", "transferred_params",
               "trainable_params"]
    return rows[columns].sort_values(["method", "depth"]).reset_index(drop=True)


def size_markdown(sizes: pd.DataFrame, suite: str, primary: str) -> str:
    """The descendant-size table: depth x method, primary metric [95% CI] and parameters inherited."""
    lines = [f"# Descendant sizes: {suite}", "",
             f"{primary} mean [95% CI] by descendant depth; in brackets after it, the parameters inherited from "
             "the ancestry (scratch inherits none).", "",
             "| method | " + " | ".join(f"depth {int(d)}" for d in sorted(sizes.depth.unique())) + " |",
             "|:--|" + ":--|" * sizes.depth.nunique()]
    for method, rows in sizes.groupby("method"):
        by_depth = rows.set_index("depth")
        cells = []
        for depth in sorted(sizes.depth.unique()):
            if depth not in by_depth.index:
                cells.append("")
                continue
            r = by_depth.loc[depth]
            cells.append(f"{r[primary]:.3f} [{r[f'{primary}_ci_low']:.3f}, {r[f'{primary}_ci_high']:.3f}] "
                         f"({int(r.transferred_params):,})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def clean_leftovers(folder: Path, suite: str, names: list[str]) -> None:
    """Remove what an interrupted build of ``suite`` left behind: its staging folders and temporary files
    of its ``names`` (call it holding the suite's lock: another suite's build may be running beside it)."""
    for path in folder.glob(".*") if folder.is_dir() else ():
        if path.is_dir() and path.name.startswith(f".tmp-{suite}-"):
            shutil.rmtree(path)
        elif path.is_file() and path.name.endswith(".tmp") and any(path.name.startswith(f".{n}.") for n in names):
            path.unlink()


def manifest_path(out: Path, suite: str) -> Path:
    """The record of one leaderboard build's files (``<suite>_manifest.json`` beside them)."""
    return out / f"{suite}_manifest.json"


def publish(staging: Path, targets: dict[str, Path], manifest: Path) -> None:
    """Move every staged file onto its target (each move atomic), then record them with their SHA-256 in
    ``manifest``, which is removed first: until every file is in place the set is no one build, and
    :func:`check_published` refuses it."""
    manifest.unlink(missing_ok=True)
    for name, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / name).replace(target)
    files = {Path(os.path.relpath(target, manifest.parent)).as_posix(): file_sha256(target)  # relative paths
             for target in targets.values()}
    write_json(manifest, {"files": files})
    shutil.rmtree(staging, ignore_errors=True)


def check_published(out: Path, suite: str) -> None:
    """Refuse a suite's leaderboard files that are not all from one finished build (an interrupted build
    leaves no manifest; an edited or stray file does not match it)."""
    manifest = manifest_path(out, suite)
    rerun = f"rerun `kind-bench leaderboard suite={suite}`"
    if not manifest.is_file():
        raise UserError(f"{manifest} not found: the {suite} leaderboard files are not one finished build; {rerun}")
    for name, recorded in read_json(manifest, "leaderboard manifest")["files"].items():
        path = out / name
        if not path.is_file() or file_sha256(path) != recorded:
            raise UserError(f"{path} is not the file the {suite} leaderboard build recorded in {manifest}; {rerun}")


def run(cfg: Config) -> str:
    """Write the suite's leaderboard files together (one build per suite at a time); exit 1 (after writing)
    when the grid is incomplete."""
    runs = load_runs(published_results(cfg), cfg.suite.name)
    check_pooling(runs)
    grid = expected_grid(cfg)
    if grid is None:
        print(f"leaderboard: no grid for suite {cfg.suite.name} in ./params.yaml: whether every cell is there "
              "is not checked (run from the project root)", file=sys.stderr)
    check_in_grid(runs, grid)
    missing = missing_cells(runs, grid)
    table = aggregate(runs, missing)
    primary = primary_metric(metric_columns(runs))
    out = leaderboard_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    suite = cfg.suite.name
    with exclusive(Path(cfg.paths.artifacts) / "locks" / f"leaderboard-{suite}.lock", f"the {suite} leaderboard"):
        _build(cfg, runs, table, primary, out)
    print(f"leaderboard: {out / f'{suite}.csv'} (+ .md, _findings.md, plots) from {len(runs)} records")
    if missing:
        shown = ", ".join(f"{m}-{t}-{s}" for m, t, s in missing[:10])
        print(f"leaderboard: incomplete grid: {len(missing)} cells missing ({shown}"
              f"{', ...' if len(missing) > 10 else ''}); their rows are marked incomplete")
        return "failed"
    return "success"


def _build(cfg: Config, runs: pd.DataFrame, table: pd.DataFrame, primary: str | None, out: Path) -> None:
    """Stage every file of the suite's leaderboard, then move them into place."""
    from kind_bench.findings import findings_markdown
    from kind_bench.plots import convergence_plot, pareto_plot, size_plot

    suite = cfg.suite.name
    targets = {f"{suite}.csv": out / f"{suite}.csv", f"{suite}.md": out / f"{suite}.md",
               f"{suite}_findings.md": out / f"{suite}_findings.md",
               f"{suite}_pareto.png": out / f"{suite}_pareto.png",
               f"{suite}_convergence.png": out / f"{suite}_convergence.png"}
    clean_leftovers(out, suite, [*targets, *(f"{suite}_sizes{ext}" for ext in (".csv", ".md", ".png")),
                                 manifest_path(out, suite).name])
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{suite}-", dir=out))
    try:
        format_table(table).to_csv(staging / f"{suite}.csv", index=False)
        (staging / f"{suite}.md").write_text(markdown(table, suite))
        (staging / f"{suite}_findings.md").write_text(findings_markdown(cfg, runs, table))
        pareto_plot(table, staging / f"{suite}_pareto.png")
        convergence_plot(table, staging / f"{suite}_convergence.png")
        if primary and table.apart.any():
            sizes = size_table(table, primary)
            format_table(sizes).to_csv(staging / f"{suite}_sizes.csv", index=False)
            (staging / f"{suite}_sizes.md").write_text(size_markdown(sizes, suite, primary))
            size_plot(sizes, primary, staging / f"{suite}_sizes.png")
            targets.update({f"{suite}_sizes{ext}": out / f"{suite}_sizes{ext}" for ext in (".csv", ".md", ".png")})
        metrics_dir = Path(cfg.paths.results) / "metrics" / suite
        for task, values in (task_metrics(table, primary) if primary else {}).items():
            (staging / f"metrics-{task}.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
            targets[f"metrics-{task}.json"] = metrics_dir / f"{task}.json"
        publish(staging, targets, manifest_path(out, suite))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
