"""``kind-bench <verb> [key=value ...]``: every pipeline stage is one call with Hydra overrides.

Verbs: data, evaluator, pretrain, transfer, evaluate, run (transfer then evaluate), floor, recombine,
tune, ablate, leaderboard, digests, list, check. The per-cell verbs (pretrain, transfer, evaluate, run,
floor) accept Hydra sweep syntax for the cell keys (``task=novel,shift seed=0,1,2``) and run the cells in
one process, spread over ``runtime.workers`` forked workers. Exit status: 0; 1 when a cell failed (after
the others finished, with a summary line); 2 for bad input (one line on stderr, before any work where it is
knowable); 128 + the signal number when interrupted (with how to resume).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kind_bench.errors import UserError

VERBS = ("data", "evaluator", "pretrain", "transfer", "evaluate", "run", "floor", "recombine", "tune", "tuning",
         "ablate", "leaderboard", "digests", "list", "check")
SWEEPABLE = ("task", "seed")
EXIT_FAILED_CELLS = 1
EXIT_BAD_INPUT = 2


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop, and say how to resume (a BaseException, like KeyboardInterrupt, so
    that no "record the failure and go on" handler swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


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
    cells = [list(cell) for cell in itertools.product(*axes)]
    unique = [cell for i, cell in enumerate(cells) if cell not in cells[:i]]  # seed=0,0 would race with itself
    return unique


@dataclass(frozen=True)
class Stage:
    """A verb's module (with a ``run(cfg) -> status`` function), how its config is composed (``cell``: a
    method's (task, seed) cell with that method's ancestry and tuned learning rate; ``method``: the same
    without the tuned rate; ``ancestry``: pre-training an ancestry; ``plain``), whether ``task``/``seed``
    may sweep, and what must exist before it starts."""

    module: str
    composer: str = "plain"
    sweeps: bool = False
    needs: tuple[str, ...] = ()  # data | evaluator | ancestry
    entry: str = "run"  # the module's function: entry(cfg), or entry(cfg, overrides) with ``overrides``
    overrides: bool = False  # the stage composes further configs from the call's overrides


STAGES: dict[str, Stage] = {
    "data": Stage("kind_bench.stages.data"),
    "evaluator": Stage("kind_bench.stages.evaluator", needs=("data",)),
    "pretrain": Stage("kind_bench.stages.pretrain", composer="ancestry", sweeps=True, needs=("data", "evaluator")),
    "transfer": Stage("kind_bench.stages.transfer", composer="cell", sweeps=True, needs=("data", "ancestry")),
    "evaluate": Stage("kind_bench.stages.evaluate", composer="cell", sweeps=True,
                      needs=("data", "evaluator", "ancestry")),
    "run": Stage("kind_bench.stages.run", composer="cell", sweeps=True, needs=("data", "evaluator", "ancestry")),
    "floor": Stage("kind_bench.stages.floor", sweeps=True, needs=("data", "evaluator")),
    "recombine": Stage("kind_bench.stages.recombine", needs=("data", "evaluator")),
    "tune": Stage("kind_bench.tuning", composer="method", needs=("data", "evaluator", "ancestry")),
    "tuning": Stage("kind_bench.tuning", entry="report"),
    "ablate": Stage("kind_bench.ablation", needs=("data", "evaluator"), overrides=True),
    "leaderboard": Stage("kind_bench.leaderboard"),
    "digests": Stage("kind_bench.digests"),
}


def check_overrides(overrides: list[str]) -> None:
    """Every argument must be ``key=value`` (or ``~key``): an unquoted path with spaces is caught here."""
    for item in overrides:
        if "=" not in item and not item.startswith("~"):
            raise UserError(f"argument {item!r} is not key=value (quote a value with spaces: key='a b')")


def compose_for(stage: Stage, overrides: list[str]):  # -> Config
    """Compose (and validate) one call's config the way ``stage`` needs it."""
    from kind_bench.config import compose
    from kind_bench.methods import compose_ancestry, compose_cell

    if stage.composer in ("cell", "method"):
        return compose_cell(overrides, resolve_lr=stage.composer == "cell")
    if stage.composer == "ancestry":
        names = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "ancestry"]
        return compose_ancestry(overrides, names[-1] if names else str(compose(overrides).ancestry["name"]))
    return compose(overrides)


def preflight(stage: Stage, configs: list) -> None:
    """What is knowable before any work: writable outputs, the prepared data, the evaluator, ancestries."""
    from kind_bench.data import load_prepared
    from kind_bench.methods import make_method
    from kind_bench.paths import ancestry_weights
    from kind_bench.stages.common import check_ancestry, ensure_writable, require_evaluator

    first = configs[0]
    ensure_writable(first.paths.results)
    ensure_writable(first.paths.artifacts)
    if "data" in stage.needs:
        load_prepared(first)
        for cfg in {c.task.name: c for c in configs if c.task.root}.values():  # tasks with data of their own
            load_prepared(cfg, task=True)
    if "evaluator" in stage.needs:
        require_evaluator(first)
        if stage.composer == "cell":
            check_references(configs)
    if "ancestry" in stage.needs:
        checked: set[object] = set()
        for cfg in configs:
            ancestry = make_method(cfg).ancestry
            path = ancestry_weights(cfg, ancestry.name) if ancestry is not None else None
            if path is not None and path not in checked:  # present, intact and of this config, before any work
                check_ancestry(cfg, ancestry.name)
                checked.add(path)


def check_references(configs: list) -> None:
    """Every generation cell's reference can be scored: a KID subset, PRC's neighbours (a small task's test
    split may be too small)."""
    from kind_bench.metrics.fidelity import check_scorable, scored_reference_size
    from kind_bench.stages.evaluate import evaluation_part

    for cfg in {(c.task.name, c.eval.split): c for c in configs if c.track == "generation"}.values():
        n = scored_reference_size(len(evaluation_part(cfg)), cfg.eval)
        check_scorable(cfg.eval.kid_subset_size, cfg.eval.prc_neighborhood, n,
                       f"{cfg.eval.split} images of task {cfg.task.name}")


def run_stage(verb: str, overrides: list[str]) -> list[tuple[str, str]]:
    """Compose (and validate) every config of the call, check what must exist, then run the stage on
    each; returns (cell, status) for every config."""
    from importlib import import_module

    check_overrides(overrides)
    stage = STAGES[verb]
    cells = expand_sweeps(overrides) if stage.sweeps else [overrides]
    configs = [compose_for(stage, cell) for cell in cells]
    preflight(stage, configs)
    entry = getattr(import_module(stage.module), stage.entry)
    if stage.overrides:
        return [(verb, entry(configs[0], overrides))]
    statuses = run_all(entry, configs, stage.sweeps)
    names = [" ".join(o for o in cell if o.split("=", 1)[0] in SWEEPABLE) or verb for cell in cells]
    if stage.composer == "cell":
        from kind_bench.paths import cell_of

        names = [cell_of(cfg).id for cfg in configs]
    return [(name, status or "success") for name, status in zip(names, statuses, strict=True)]


def _worker_signals(threads: int) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it terminates the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(threads)


def run_all(run: Callable[[Any], str | None], configs: list, per_cell: bool) -> list[str | None]:
    """Run each config; a sweep on CPU is spread over ``runtime.workers`` forked processes.

    Every process uses the same number of torch threads, so a cell's numbers do not depend on how many
    workers ran it. Workers are forked before torch does any work (fork after OpenMP or CUDA start-up
    is unsafe), and on CUDA everything runs in the main process.
    """
    import multiprocessing

    import torch

    from kind_bench.config import torch_threads
    from kind_bench.distributed import world

    if not configs:
        return []
    runtime = configs[0].runtime
    threads = torch_threads(runtime, per_cell)
    workers = min(runtime.workers, len(configs))
    if workers <= 1 or torch.cuda.is_available() or world()[1] > 1:
        torch.set_num_threads(threads)
        return [run(cfg) for cfg in configs]
    with multiprocessing.get_context("fork").Pool(workers, _worker_signals, (threads,)) as pool:
        return pool.map(run, configs, chunksize=1)


def list_methods() -> None:
    """Print every registered method: name, tracks, ancestry, built-in or plugin, description, paper."""
    from kind_bench.methods import discover

    registry, broken = discover()
    rows = [("name", "tracks", "ancestry", "source", "description", "paper")]
    for name, entry in sorted(registry.items()):
        cls = entry.cls
        origin = "built-in" if entry.builtin else f"plugin ({entry.distribution})"
        tracks = "+".join("gen" if t == "generation" else "cls" for t in cls.tracks)
        rows.append((name, tracks, cls.ancestry.name if cls.ancestry else "-", origin, cls.description,
                     cls.paper or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
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
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.verb == "list":
            list_methods()
        elif args.verb == "check":
            from kind_bench.check import run as check
            from kind_bench.config import compose

            check_overrides(args.overrides)
            return check(compose(args.overrides), args.overrides, update=args.update, rerun=not args.no_run)
        elif args.verb in STAGES:
            return summarize(args.verb, run_stage(args.verb, args.overrides))
        else:
            raise UserError(f"verb {args.verb!r} is not one of: {', '.join(VERBS)}")
    except UserError as exc:
        print(f"kind-bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"kind-bench: interrupted ({signal.Signals(signum).name}): rerun the same command to resume "
              "(finished cells are kept; an unfinished one resumes from its last checkpoint)", file=sys.stderr)
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def summarize(verb: str, statuses: list[tuple[str, str]]) -> int:
    """Exit status of a call: non-zero, with one summary line, when any of its cells failed."""
    failed = [cell for cell, status in statuses if status == "failed"]
    if not failed:
        return 0
    print(f"kind-bench: {verb}: {len(failed)} of {len(statuses)} cells failed ({'; '.join(failed)}); "
          "their records say why", file=sys.stderr)
    return EXIT_FAILED_CELLS


if __name__ == "__main__":
    sys.exit(main())
