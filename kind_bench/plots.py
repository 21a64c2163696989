"""The leaderboard's pictures (matplotlib, written atomically as PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kind_bench.io import atomic_path  # noqa: E402
from kind_bench.metrics import DIRECTION, PRIMARY  # noqa: E402
from kind_bench.results import REFERENCE_ROW  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _panels(n: int):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _primary(table: pd.DataFrame) -> str | None:
    return next((m for m in PRIMARY.values() if m in table.columns), None)


def _nothing(path: Path) -> None:
    """A placeholder figure when no run succeeded (every output of the leaderboard still exists)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, "no successful runs", ha="center", va="center")
    _save(fig, path)


def pareto_plot(table: pd.DataFrame, path: Path) -> None:
    """Quality against trainable parameters, one panel per task, with the Pareto front drawn."""
    metric = _primary(table)
    if metric is None:
        return _nothing(path)
    lower = DIRECTION[metric] == "lower"
    tasks = list(table.task.unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        rows = table[(table.task == task) & (table.status == "success")]
        methods = rows[rows.method != REFERENCE_ROW]
        err = [methods[metric] - methods[f"{metric}_ci_low"], methods[f"{metric}_ci_high"] - methods[metric]]
        ax.errorbar(methods.trainable_params, methods[metric], yerr=[e.fillna(0) for e in err], fmt="o", capsize=3)
        for _, r in methods.iterrows():
            ax.annotate(r.method, (r.trainable_params, r[metric]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        front, best = [], math.inf
        for _, r in methods.sort_values("trainable_params").iterrows():
            value = r[metric] if lower else -r[metric]
            if value < best:
                best = value
                front.append((r.trainable_params, r[metric]))
        if front:
            ax.plot(*zip(*front, strict=True), "--", color="grey", linewidth=1, label="Pareto front")
        floor = rows[rows.method == REFERENCE_ROW]
        if len(floor):
            ax.axhline(floor[metric].iloc[0], color="green", linewidth=1, label="real data (noise floor)")
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"{metric} ({DIRECTION[metric]} is better)")
        ax.legend(fontsize=7)
    _save(fig, path)


def convergence_plot(table: pd.DataFrame, path: Path) -> None:
    """Quality at 1/4, 1/2 and all of the transfer steps, one panel per task, one line per method."""
    metric = _primary(table)
    if metric is None:
        return _nothing(path)
    budgets = sorted((c for c in table.columns if c.startswith(f"{metric}@")), key=lambda c: int(c[:-1].split("@")[1]))
    points = [(int(c[:-1].split("@")[1]), c) for c in budgets] + [(100, metric)]
    tasks = list(table.task.unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        rows = table[(table.task == task) & (table.status == "success") & (table.method != REFERENCE_ROW)]
        for _, r in rows.iterrows():
            ax.plot([p for p, _ in points], [r[c] for _, c in points], marker="o", label=r.method)
        ax.set_title(task)
        steps = rows.steps.dropna()
        ax.set_xlabel(f"% of transfer steps ({int(steps.iloc[0])} = 100%)" if len(steps) else "% of transfer steps")
        ax.set_ylabel(f"{metric} ({DIRECTION[metric]} is better)")
        if DIRECTION[metric] == "lower":
            ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


def recombination_plot(curve: pd.DataFrame, path: Path) -> None:
    """KIND deployed for k classes: parameters (left) and quality against the full model (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(curve.classes, curve.params, marker="o", label="KIND, recombined for k classes")
    left.plot(curve.classes, curve.full_params, "--", label="KIND, all components")
    left.plot(curve.classes, curve.dense_params, ":", label="dense DiT (vanilla)")
    left.set_xlabel("classes deployed (k)")
    left.set_ylabel("parameters")
    left.legend(fontsize=8)
    metric = "fd_digits" if "fd_digits" in curve else "fid"
    right.plot(curve.classes, curve[metric], marker="o", label="recombined")
    right.plot(curve.classes, curve[f"full_{metric}"], "x--", label="full model, same classes")
    right.set_xlabel("classes deployed (k)")
    right.set_ylabel(f"{metric} ({DIRECTION[metric]} is better)")
    right.legend(fontsize=8)
    _save(fig, path)


def stability_plot(table: pd.DataFrame, used: int, path: Path) -> None:
    """FD(real, real) against the sample count, per feature dimension, with the suite's count marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for dim, rows in table.groupby("dim"):
        ax.errorbar(rows.n, rows.fd_mean, yerr=rows.fd_std, marker="o", capsize=3, label=f"{dim}-d features")
    ax.axvline(used, color="grey", linestyle=":", label=f"samples per task ({used})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples")
    ax.set_ylabel("Frechet distance, real vs real (0 is ideal)")
    ax.legend(fontsize=8)
    _save(fig, path)


def tuning_plot(rows: pd.DataFrame, path: Path) -> None:
    """Validation score against learning rate, one panel per method, one line per task; the choice circled."""
    methods = sorted(rows.method.unique())
    fig, axes = _panels(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        mine = rows[rows.method == method]
        for task, group in mine.groupby("task"):
            curve = group.groupby("lr").score.mean()
            ax.plot(curve.index, curve.values, marker="o", label=task)
        chosen = mine[mine.chosen].lr.unique()
        for lr in chosen:
            ax.axvline(lr, color="grey", linestyle=":", linewidth=1)
        edge = " (at edge)" if (mine.at_edge != "").any() else ""
        ax.set_title(f"{method}: lr {chosen[0]:.3g}{edge}" if len(chosen) else method, fontsize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation score (lower is better)")
        ax.legend(fontsize=7)
    _save(fig, path)


def budget_plot(rows: pd.DataFrame, rates: dict[str, float], steps: int, path: Path) -> None:
    """Validation score against transfer steps for the budget methods, at each one's chosen rate, per task."""
    methods = sorted(rows.method.unique())
    fig, axes = _panels(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        mine = rows[(rows.method == method) & (rows.lr == rates.get(method))]
        for task, group in mine.groupby("task"):
            curve = group.groupby("steps").score.mean()
            ax.plot(curve.index, curve.values, marker="o", label=task)
        ax.axvline(steps, color="grey", linestyle=":", label=f"transfer.steps = {steps}")
        ax.set_title(f"{method} (lr {rates.get(method, float('nan')):.3g})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("transfer steps (separate runs)")
        ax.set_ylabel("validation score (lower is better)")
        ax.legend(fontsize=7)
    _save(fig, path)


def size_plot(sizes: pd.DataFrame, metric: str, path: Path) -> None:
    """The primary metric against the parameters inherited, one line per method through its depths."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, rows in sizes.groupby("method"):
        rows = rows.sort_values("depth")
        err = [rows[metric] - rows[f"{metric}_ci_low"], rows[f"{metric}_ci_high"] - rows[metric]]
        inherited = rows.transferred_params.clip(lower=1)  # scratch inherits nothing: drawn at 1
        ax.errorbar(inherited, rows[metric], yerr=[e.fillna(0) for e in err], marker="o", capsize=3, label=method)
        for (_, r), x in zip(rows.iterrows(), inherited, strict=True):
            ax.annotate(f"d{int(r.depth)}", (x, r[metric]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters inherited from the ancestry (scratch: none, drawn at 1)")
    ax.set_ylabel(f"{metric} ({DIRECTION[metric]} is better)")
    ax.legend(fontsize=7)
    _save(fig, path)
