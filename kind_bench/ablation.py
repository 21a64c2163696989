"""Stage ``ablate``: the assumptions behind a method's default, measured (``results/ablations/<suite>.csv``).

Each variant of ``suite.ablation.variants`` is a method plus a few overrides (e.g. KIND with
``ancestry.null_tailors=own``), run on ``suite.ablation.tasks`` x ``seeds`` in the ``ablations/<variant>``
namespace with the method's tuned learning rate. A variant that changes the ancestry gets its own
ancestries, pre-trained here for every ancestry seed it needs. Rows carry the leaderboard's statistics
(mean, std, t-interval, sampling noise) and a paired comparison with the published cells of the same
method on the same seeds: the mean difference (variant - default) with its t-interval and the paired
t-test's p-value, Holm-corrected over the whole table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from kind_bench.config import Config, check_name
from kind_bench.errors import UserError
from kind_bench.io import atomic_path
from kind_bench.leaderboard import _read_record, _row, aggregate, format_table, load_runs, metric_columns, per_unit
from kind_bench.leaderboard import primary_metric as ranking_metric
from kind_bench.metrics import DIRECTION
from kind_bench.paths import (
    ancestry_seed,
    ancestry_weights,
    cell_of,
    published_results,
    result_path,
    variant_ancestries,
)
from kind_bench.stats import holm, paired_test, verdict

CELL_KEYS = ("method", "task", "seed", "namespace")


def plans(cfg: Config, overrides: list[str]) -> list[tuple[str, Config]]:
    """(variant, cell config) for every variant x task x seed, composed from the call's other overrides."""
    from kind_bench.methods import compose_cell

    grid = cfg.suite.ablation
    if grid is None or not grid.variants:
        raise UserError(f"suite={cfg.suite.name} has no ablation grid (suite.ablation); use suite=digits")
    base = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in CELL_KEYS]
    return [(name, compose_cell([*base, f"method={variant.method}", f"task={task}", f"seed={seed}",
                                 *variant.overrides, f"namespace=ablations/{check_name('variant', name)}"]))
            for name, variant in grid.variants.items() for task in grid.tasks for seed in grid.seeds]


def missing_ancestries(cells: list[Config]) -> list[Config]:
    """One pre-training config per ancestry seed that a cell needs and nobody has made yet."""
    from kind_bench.methods import make_method

    needed: dict[Path, Config] = {}
    for cfg in cells:
        ancestry = make_method(cfg).ancestry
        if ancestry is not None and not (path := ancestry_weights(cfg, ancestry.name)).is_file():
            needed.setdefault(path, dataclasses.replace(cfg, seed=ancestry_seed(cfg)))
    return list(needed.values())


def table(cfg: Config, cells: list[tuple[str, Config]]) -> pd.DataFrame:
    """The ablation table: statistics per (variant, task) and the paired comparison with the default."""
    rows = []
    for name, cell in cells:
        path = result_path(cell, cell_of(cell))
        row = _row(path, _read_record(path))
        rows.append({**row, "variant": name, "base_method": row["method"], "method": name})
    runs = pd.DataFrame(rows)
    stats = aggregate(runs).drop(columns=["rank", "avg_rank", "p_best", "winner", "p_vs_next"])
    stats = stats.rename(columns={"method": "variant"})
    primary = ranking_metric(metric_columns(runs))
    published = load_runs(published_results(cfg), cfg.suite.name)
    published = published[published.status == "success"]
    tests = []
    for (variant, task), group in runs[runs.status == "success"].groupby(["variant", "task"]):
        method = group.base_method.iloc[0]
        default = published[(published.method == method) & (published.task == task)]
        pair = pd.concat([group.assign(method="variant"), default.assign(method="default")], ignore_index=True)
        scores = per_unit(pair, task, ["variant", "default"], primary)
        if len(scores) == 2 and len(scores["variant"]) >= 2:
            tests.append((variant, task, method, paired_test(scores["variant"], scores["default"])))
    adjusted = holm([t.p for *_, t in tests]) if tests else []
    lower = DIRECTION[primary] == "lower"
    compare = pd.DataFrame([{"variant": v, "task": t, "default": m, "delta": x.mean_diff, "delta_ci_low": x.ci_low,
                             "delta_ci_high": x.ci_high, "p_holm": p, "outcome": verdict(x, p, lower)}
                            for (v, t, m, x), p in zip(tests, adjusted, strict=True)],
                           columns=["variant", "task", "default", "delta", "delta_ci_low", "delta_ci_high",
                                    "p_holm", "outcome"])
    about = {name: v.about for name, v in cfg.suite.ablation.variants.items()}
    merged = stats.merge(compare, on=["variant", "task"], how="left")
    merged.insert(1, "about", merged.variant.map(about))
    return merged


def markdown(frame: pd.DataFrame, suite: str, primary: str) -> str:
    """The ablation table as Markdown: one row per (variant, task)."""
    lines = [f"# Ablations: {suite}", "",
             f"{primary} on the test images, mean [95% t-interval] over units (seeds that transfer from one "
             "pre-trained ancestry are averaged into one unit); Δ = variant − the published default of the same "
             "method on the same seeds (paired t-test over units, Holm-corrected over this table; the interval is "
             "not). `outcome`: better / worse than the default at p < 0.05, or inconclusive.", "",
             f"| variant | what changes | task | units | {primary} | eval noise sd | Δ [95% CI, unadjusted] | "
             "p (Holm) | outcome |",
             "|:--|:--|:--|--:|:--|--:|:--|--:|:--|"]
    for _, r in frame.iterrows():
        value = f"{r[primary]:.3f} [{r[f'{primary}_ci_low']:.3f}, {r[f'{primary}_ci_high']:.3f}]" \
            if r.status == "success" else r.status
        delta = "" if pd.isna(r.delta) else f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]"
        p = "" if pd.isna(r.p_holm) else f"{r.p_holm:.3g}"
        noise = "" if pd.isna(r.eval_noise_sd) else f"{r.eval_noise_sd:.3f}"
        lines.append(f"| {r.variant} | {r.about} | {r.task} | {int(r.n_units)} | {value} | {noise} | {delta} | {p} | "
                     f"{'' if pd.isna(r.outcome) else r.outcome} |")
    return "\n".join(lines) + "\n"


def run(cfg: Config, overrides: list[str]) -> str:
    """Pre-train the variants' ancestries, run every variant cell, write the table."""
    from kind_bench.cli import run_all
    from kind_bench.stages import pretrain
    from kind_bench.stages.run import run as run_cell

    cells = plans(cfg, overrides)
    variant_ancestries(cfg).mkdir(parents=True, exist_ok=True)  # a DVC out, even when no variant needs one
    run_all(pretrain.run, missing_ancestries([c for _, c in cells]), per_cell=True)
    statuses = run_all(run_cell, [c for _, c in cells], per_cell=True)
    write_table(cfg, cells)
    return "failed" if "failed" in statuses else "success"


def write_table(cfg: Config, cells: list[tuple[str, Config]]) -> None:
    """Write ``results/ablations/<suite>.csv`` and ``.md`` from the cells' records."""
    frame = table(cfg, cells)
    primary = ranking_metric(list(frame.columns))
    base = Path(cfg.paths.results) / "ablations" / cfg.suite.name
    with atomic_path(base.with_suffix(".csv")) as tmp:
        format_table(frame).to_csv(tmp, index=False)
    with atomic_path(base.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(frame, cfg.suite.name, primary))
    print(f"ablate: {base.with_suffix('.csv')} ({len(cells)} cells, {frame.variant.nunique()} variants)")
