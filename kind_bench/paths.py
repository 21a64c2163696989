"""Where each stage reads and writes: one function per artifact, so names never drift apart.

Every name that becomes part of a path (suite, method, task, ancestry, namespace) has passed
:func:`kind_bench.config.check_name`, so no path leaves the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kind_bench.config import Config, check_name
from kind_bench.identity import PUBLISHED, ancestry_digest, is_canonical_ancestry, namespace


@dataclass(frozen=True)
class Cell:
    """One (method, task, seed) run of a suite."""

    method: str
    task: str
    seed: int

    @property
    def id(self) -> str:
        """The run id; also the result-file name (so the method name is its prefix)."""
        return f"{self.method}-{self.task}-{self.seed}"


def cell_of(cfg: Config) -> Cell:
    """The cell a composed config describes."""
    return Cell(check_name("method", str(cfg.method["name"])), cfg.task.name, cfg.seed)


def ancestry_seed(cfg: Config) -> int:
    """The pre-training seed of the ancestry a cell transfers from: its seed modulo ``suite.ancestry_seeds``."""
    return cfg.seed % cfg.suite.ancestry_seeds


def _split(ns: str) -> tuple[str, Path]:
    root, _, rest = ns.partition("/")
    return root, Path(rest)


def evaluator_weights(cfg: Config) -> Path:
    """The evaluator CNN trained by the ``evaluator`` stage."""
    return Path(cfg.paths.artifacts) / "evaluator" / f"{cfg.data.name}_cnn.safetensors"


def evaluator_report(cfg: Config) -> Path:
    """The evaluator's held-out accuracy (a DVC metric)."""
    return Path(cfg.paths.results) / "evaluator" / f"{cfg.data.name}_cnn.json"


def variant_ancestries(cfg: Config) -> Path:
    """The folder of the ancestries whose config differs from the published one (e.g. an ablation's)."""
    return Path(cfg.paths.artifacts) / cfg.suite.name / "ancestry-variants"


def ancestry_dir(cfg: Config, name: str) -> Path:
    """The folder of one ancestry's seeds: the published one, or a variant's, named by its config digest."""
    check_name("ancestry", name)
    if is_canonical_ancestry(cfg, name):
        return Path(cfg.paths.artifacts) / cfg.suite.name / "ancestry" / name
    from kind_bench.config import as_dict

    return variant_ancestries(cfg) / f"{name}-{ancestry_digest(as_dict(cfg))}"


def ancestry_weights(cfg: Config, name: str, seed: int | None = None) -> Path:
    """A pre-trained ancestry (``seed``: its pre-training seed; default: the one cell ``cfg`` uses)."""
    return ancestry_dir(cfg, name) / f"seed-{ancestry_seed(cfg) if seed is None else seed}.safetensors"


def ancestry_report(cfg: Config, name: str, seed: int) -> Path:
    """The pre-training record of an ancestry seed, with its own quality on the ancestry classes."""
    folder = ancestry_dir(cfg, name).name if not is_canonical_ancestry(cfg, name) else name
    return Path(cfg.paths.results) / "ancestry" / cfg.suite.name / folder / f"seed-{seed}.json"


def run_dir(cfg: Config, cell: Cell) -> Path:
    """Snapshots and training record of one cell (one DVC out per method in the published namespace)."""
    root, rest = _split(namespace(cfg, training=True))
    return Path(cfg.paths.artifacts) / cfg.suite.name / root / cell.method / rest / cell.id


def lock_path(cfg: Config, cell: Cell) -> Path:
    """The lock a process holds while it trains or evaluates a cell (beside its run folder)."""
    folder = run_dir(cfg, cell)
    return folder.with_name(f".{folder.name}.lock")


def snapshot_path(cfg: Config, cell: Cell, step: int) -> Path:
    """The descendant's weights after ``step`` transfer steps."""
    return run_dir(cfg, cell) / f"step-{step:06d}.safetensors"


def result_path(cfg: Config, cell: Cell) -> Path:
    """The full result record of one cell (committed to git)."""
    root, rest = _split(namespace(cfg))
    return Path(cfg.paths.results) / root / cfg.suite.name / cell.method / rest / f"{cell.id}.json"


def published_root(cfg: Config) -> Path:
    """The folder of every suite's published result records."""
    return Path(cfg.paths.results) / PUBLISHED


def published_results(cfg: Config) -> Path:
    """The folder of the published grid's result records (the only one the leaderboard reads)."""
    return published_root(cfg) / cfg.suite.name


def published_result(cfg: Config, cell: Cell) -> Path:
    """The published result record of ``cell`` in ``cfg``'s suite."""
    return published_results(cfg) / cell.method / f"{cell.id}.json"


def sample_grid_path(cfg: Config, cell: Cell) -> Path:
    """A picture of one cell's samples (drawn for the seed ``eval.grid_seed``), beside the leaderboard."""
    return leaderboard_path(cfg, "_samples") / cell.method / f"{cell.task}.png"


def tuning_path(cfg: Config, method: str, suffix: str = ".json") -> Path:
    """A method's tuning record (every rate tried, the validation scores, the choice)."""
    return Path(cfg.paths.results) / "tuning" / cfg.suite.name / f"{check_name('method', method)}{suffix}"


def recombination_path(cfg: Config, suffix: str = ".csv") -> Path:
    """KIND's recombination curve (parameters and quality against the number of classes deployed).

    The table (``.csv``/``.json``) is under ``results/recombination/``; its plot (``.png``) sits with the
    other committed pictures under ``results/leaderboard/``.
    """
    if suffix == ".png":
        return leaderboard_path(cfg, "_recombination.png")
    return Path(cfg.paths.results) / "recombination" / f"{cfg.suite.name}{suffix}"


def leaderboard_dir(cfg: Config) -> Path:
    """The folder of the leaderboard tables, plots and findings."""
    return Path(cfg.paths.results) / "leaderboard"


def leaderboard_path(cfg: Config, suffix: str = ".csv") -> Path:
    """The suite's leaderboard table (or, by suffix, one of its companions)."""
    return leaderboard_dir(cfg) / f"{cfg.suite.name}{suffix}"
