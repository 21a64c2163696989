"""Where each stage reads and writes: one function per artifact, so names never drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kind_bench.config import Config


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
    return Cell(str(cfg.method["name"]), cfg.task.name, cfg.seed)


def evaluator_weights(cfg: Config) -> Path:
    """The evaluator CNN trained by the ``evaluator`` stage."""
    return Path(cfg.paths.artifacts) / "evaluator" / f"{cfg.data.name}_cnn.safetensors"


def evaluator_report(cfg: Config) -> Path:
    """The evaluator's held-out accuracy (a DVC metric)."""
    return Path(cfg.paths.results) / "evaluator" / f"{cfg.data.name}_cnn.json"


def ancestry_weights(cfg: Config, name: str) -> Path:
    """A pre-trained ancestry of the current suite."""
    return Path(cfg.paths.artifacts) / cfg.suite.name / "ancestry" / f"{name}.safetensors"


def ancestry_report(cfg: Config, name: str) -> Path:
    """The pre-training record of an ancestry (a DVC metric)."""
    return Path(cfg.paths.results) / "ancestry" / cfg.suite.name / f"{name}.json"


def run_dir(cfg: Config, cell: Cell) -> Path:
    """Snapshots and training record of one cell, inside its method's folder (one DVC out per method)."""
    return Path(cfg.paths.artifacts) / cfg.suite.name / "runs" / cell.method / cell.id


def snapshot_path(cfg: Config, cell: Cell, step: int) -> Path:
    """The descendant's weights after ``step`` transfer steps."""
    return run_dir(cfg, cell) / f"step-{step:06d}.safetensors"


def result_path(cfg: Config, cell: Cell) -> Path:
    """The full result record of one cell (committed to git)."""
    return Path(cfg.paths.results) / "runs" / cfg.suite.name / cell.method / f"{cell.id}.json"


def metrics_path(cfg: Config, cell: Cell) -> Path:
    """Only the numbers of one cell (a DVC metric: what `dvc metrics show/diff` tabulate)."""
    return Path(cfg.paths.results) / "metrics" / cfg.suite.name / cell.method / f"{cell.id}.json"


def sample_grid_path(cfg: Config, cell: Cell) -> Path:
    """A picture of one cell's samples (drawn for the seed ``eval.grid_seed``), beside the leaderboard."""
    return leaderboard_path(cfg, "_samples") / cell.method / f"{cell.task}.png"


def recombination_path(cfg: Config, suffix: str = ".csv") -> Path:
    """KIND's recombination curve (parameters and quality against the number of classes deployed).

    The table (``.csv``/``.json``) is under ``results/recombination/``; its plot (``.png``) sits with the
    other committed pictures under ``results/leaderboard/``.
    """
    if suffix == ".png":
        return leaderboard_path(cfg, "_recombination.png")
    return Path(cfg.paths.results) / "recombination" / f"{cfg.suite.name}{suffix}"


def leaderboard_path(cfg: Config, suffix: str = ".csv") -> Path:
    """The suite's leaderboard table."""
    return Path(cfg.paths.results) / "leaderboard" / f"{cfg.suite.name}{suffix}"
