"""``kind-bench <verb> [key=value ...]``: every pipeline stage is one call with Hydra overrides.

Verbs: data, evaluator, pretrain, transfer, evaluate, run (transfer then evaluate), floor, recombine,
leaderboard, list, check. The per-cell verbs (transfer, evaluate, run, floor) accept Hydra sweep syntax
for the cell keys (``task=novel,shift seed=0,1,2``) and run the cells in one process, spread over
``runtime.workers`` forked workers. Bad input ends the call with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kind_bench.errors import UserError

VERBS = ("data", "evaluator", "pretrain", "transfer", "evaluate", "run", "floor", "recombine", "leaderboard",
         "list", "check")
SWEEPABLE = ("task", "seed")


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Expand ``key=a,b`` sweeps of the cell keys into one override list per cell."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra's parser raises several types for bad syntax
        raise UserError(str(exc).strip().splitlines()[0]) from None
    axes: list[list[str]] = []
    for item, text in zip(parsed, overrides, strict=True):
        key = item.get_key_element()
        if item.is_sweep_override():
            if key not in SWEEPABLE:
                raise UserError(f"only {', '.join(SWEEPABLE)} may list several values; {key} got {text!r}")
            axes.append([f"{key}={value}" for value in item.sweep_string_iterator()])
        else:
            axes.append([text])
    return [list(cell) for cell in itertools.product(*axes)]


@dataclass(frozen=True)
class Stage:
    """A verb's module (with a ``run(cfg)`` function), whether it runs per task x seed cell, and
    whether those cells belong to a method (so the method's ancestry config is composed in)."""

    module: str
    per_cell: bool = False
    per_method: bool = False


STAGES: dict[str, Stage] = {
    "data": Stage("kind_bench.stages.data"),
    "evaluator": Stage("kind_bench.stages.evaluator"),
    "pretrain": Stage("kind_bench.stages.pretrain"),
    "transfer": Stage("kind_bench.stages.transfer", per_cell=True, per_method=True),
    "evaluate": Stage("kind_bench.stages.evaluate", per_cell=True, per_method=True),
    "run": Stage("kind_bench.stages.run", per_cell=True, per_method=True),
    "floor": Stage("kind_bench.stages.floor", per_cell=True),
    "recombine": Stage("kind_bench.stages.recombine"),
    "leaderboard": Stage("kind_bench.leaderboard"),
}


def run_stage(verb: str, overrides: list[str]) -> None:
    """Compose (and validate) every config of the call first, then run the stage on each."""
    from importlib import import_module

    from kind_bench.config import compose
    from kind_bench.methods import compose_cell

    stage = STAGES[verb]
    cells = expand_sweeps(overrides) if stage.per_cell else [overrides]
    configs = [compose_cell(cell) if stage.per_method else compose(cell) for cell in cells]
    run_all(import_module(stage.module).run, configs, stage.per_cell)


def run_all(run: Callable[[Any], None], configs: list, per_cell: bool) -> None:
    """Run each config; a sweep on CPU is spread over ``runtime.workers`` forked processes.

    Every process uses the same number of torch threads, so a cell's numbers do not depend on how many
    workers ran it. Workers are forked before torch does any work (fork after OpenMP or CUDA start-up
    is unsafe), and on CUDA everything runs in the main process.
    """
    import multiprocessing

    import torch

    from kind_bench.config import torch_threads

    runtime = configs[0].runtime
    threads = torch_threads(runtime, per_cell)
    workers = min(runtime.workers, len(configs))
    if workers <= 1 or torch.cuda.is_available():
        torch.set_num_threads(threads)
        for cfg in configs:
            run(cfg)
        return
    with multiprocessing.get_context("fork").Pool(workers, torch.set_num_threads, (threads,)) as pool:
        pool.map(run, configs, chunksize=1)


def list_methods() -> None:
    """Print every registered method: name, ancestry, built-in or plugin, description, paper."""
    from kind_bench.methods import discover

    registry, broken = discover()
    rows = [("name", "ancestry", "source", "description", "paper")]
    for name, entry in sorted(registry.items()):
        cls = entry.cls
        origin = "built-in" if entry.builtin else f"plugin ({entry.distribution})"
        rows.append((name, cls.ancestry.name if cls.ancestry else "-", origin, cls.description, cls.paper or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for name, error in sorted(broken.items()):
        print(f"{name}: failed to import: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kind-bench`` console script."""
    parser = argparse.ArgumentParser(prog="kind-bench", description=__doc__.splitlines()[0])
    parser.add_argument("verb", help=f"one of: {', '.join(VERBS)}")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    parser.add_argument("--update", action="store_true", help="check: write the reference instead of comparing")
    parser.add_argument("--no-run", action="store_true", help="check: compare the results already on disk")
    args = parser.parse_intermixed_args(argv)
    try:
        if args.verb == "list":
            list_methods()
        elif args.verb == "check":
            from kind_bench.check import run as check
            from kind_bench.config import compose

            return check(compose(args.overrides), args.overrides, update=args.update, rerun=not args.no_run)
        elif args.verb in STAGES:
            run_stage(args.verb, args.overrides)
        else:
            raise UserError(f"verb {args.verb!r} is not one of: {', '.join(VERBS)}")
    except UserError as exc:
        print(f"kind-bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
