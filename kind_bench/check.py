"""``kind-bench check``: the regression check of CI against published reference numbers.

Runs the ``ci`` suite end to end in-process (data, evaluator, the ancestries its methods need,
transfer, evaluate, leaderboard), then compares every cell's metrics and trainable-parameter count with
the committed reference (``suite.check.reference``), each metric within its tolerance in
``suite.check.tolerances``. A difference beyond tolerance, a missing or failed cell, or a reference made
with another config fails the check with a readable table and exit status 1.

Update the reference after an intended change with ``kind-bench check suite=ci --update``. Its files
go to ``artifacts/check/<suite>/`` unless ``paths.*`` say otherwise (see :func:`scratch`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from kind_bench.config import Config, as_dict
from kind_bench.errors import UserError
from kind_bench.io import read_json, write_json
from kind_bench.paths import Cell, published_result

COST_CHECKED = ("trainable_params", "transferred_params")


def cells(cfg: Config) -> list[Cell]:
    """Every (method, task, seed) cell of the suite's check grid."""
    grid = cfg.suite.check
    return [Cell(m, t, s) for m in grid.methods for t in grid.tasks for s in grid.seeds]


def run_suite(cfg: Config, overrides: list[str]) -> None:
    """Produce the suite's results in-process, through the same stages the CLI runs."""
    from kind_bench.cli import run_stage
    from kind_bench.methods import method_class

    grid = cfg.suite.check
    run_stage("data", overrides)
    run_stage("evaluator", overrides)
    ancestries = sorted({method_class(m).ancestry.name for m in grid.methods if method_class(m).ancestry})
    for name in ancestries:
        run_stage("pretrain", [*overrides, f"ancestry={name}"])
    sweep = [f"task={','.join(grid.tasks)}", f"seed={','.join(str(s) for s in grid.seeds)}"]
    for method in grid.methods:
        run_stage("run", [*overrides, f"method={method}", *sweep])
    run_stage("leaderboard", overrides)


def current_numbers(cfg: Config) -> dict[str, dict[str, Any]]:
    """{cell id: {status, metrics..., costs...}} read from the result records."""
    numbers = {}
    for cell in cells(cfg):
        record = read_json(published_result(cfg, cell), "result")
        numbers[cell.id] = {"status": record["run_info"]["status"], **record["metrics"],
                            **{k: record["train_info"].get(k) for k in COST_CHECKED}}
    return numbers


def reference_fingerprint(cfg: Config) -> str:
    """What must match for a reference to apply: the suite's config (with its thread count) without
    paths, the reference's location and the tolerances."""
    config = as_dict(cfg)
    config.pop("paths")
    check = config["suite"].pop("check")
    config["suite"]["grid"] = {k: check[k] for k in ("methods", "tasks", "seeds")}
    config.pop("quiet")
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compare(current: dict[str, dict[str, Any]], reference: dict[str, Any], tolerances: dict[str, float],
            expected_fingerprint: str) -> tuple[bool, pd.DataFrame]:
    """(passed, one row per checked number with reference, current, difference, tolerance, verdict)."""
    rows = []
    if reference.get("fingerprint") != expected_fingerprint:
        rows.append({"cell": "*", "metric": "config", "reference": reference.get("fingerprint"),
                     "current": expected_fingerprint, "diff": "", "tolerance": "equal", "ok": False})
    for cell_id in sorted(set(reference["cells"]) | set(current)):
        ref, cur = reference["cells"].get(cell_id), current.get(cell_id)
        if ref is None or cur is None:
            rows.append({"cell": cell_id, "metric": "cell", "reference": "present" if ref else "missing",
                         "current": "present" if cur else "missing", "diff": "", "tolerance": "", "ok": False})
            continue
        for key in sorted(set(ref) | set(cur)):
            a, b = ref.get(key), cur.get(key)
            if key == "status" or key in COST_CHECKED:
                rows.append({"cell": cell_id, "metric": key, "reference": a, "current": b, "diff": "",
                             "tolerance": "equal", "ok": a == b})
            elif key in tolerances:
                diff = abs(b - a) if a is not None and b is not None else float("inf")
                rows.append({"cell": cell_id, "metric": key, "reference": a, "current": b, "diff": diff,
                             "tolerance": tolerances[key], "ok": diff <= tolerances[key]})
    table = pd.DataFrame(rows)
    return bool(table.ok.all()), table


def scratch(cfg: Config, overrides: list[str]) -> tuple[Config, list[str]]:
    """Without ``paths.*`` overrides the check runs under ``<artifacts>/check/<suite>/``: its data,
    evaluator, ancestries and results never mix with the published ones (the evaluator's files are
    shared by every suite on the same data)."""
    if any(o.startswith("paths.") for o in overrides):
        return cfg, overrides
    base = Path(cfg.paths.artifacts) / "check" / cfg.suite.name
    paths = dataclasses.replace(cfg.paths, artifacts=str(base / "artifacts"), results=str(base / "results"))
    return dataclasses.replace(cfg, paths=paths), [*overrides, f"paths.artifacts={paths.artifacts}",
                                                   f"paths.results={paths.results}"]


def run(cfg: Config, overrides: list[str], update: bool, rerun: bool = True) -> int:
    """Run the suite (unless ``rerun`` is False), then check or update the reference. Returns exit status."""
    if cfg.suite.check is None:
        raise UserError(f"suite={cfg.suite.name} has no check grid (suite.check); use suite=ci")
    cfg, overrides = scratch(cfg, overrides)
    if rerun:
        run_suite(cfg, overrides)
    current = current_numbers(cfg)
    path = Path(cfg.suite.check.reference)
    if update:
        write_json(path, {"fingerprint": reference_fingerprint(cfg), "cells": current})
        print(f"check: reference {path} updated ({len(current)} cells)")
        return 0
    reference = read_json(path, "check reference")
    passed, table = compare(current, reference, dict(cfg.suite.check.tolerances), reference_fingerprint(cfg))
    shown = table if not passed else table.head(0)
    if not passed:
        print(shown[~shown.ok].to_string(index=False))
        print(f"check: FAILED against {path} ({int((~table.ok).sum())} of {len(table)} numbers out of tolerance); "
              f"if the change is intended: kind-bench check suite={cfg.suite.name} --update")
        return 1
    print(f"check: passed ({len(table)} numbers within tolerance of {path})")
    return 0
