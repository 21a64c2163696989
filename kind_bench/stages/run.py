"""Stage ``run@<method>``: train, then evaluate, every (task, seed) cell of one method in one process.

Transfer and evaluation share one process per method so that the pipeline pays the start-up of
importing diffusers once per method instead of twice (see README, *Speed*). Each cell is exactly
``kind-bench transfer`` followed by ``kind-bench evaluate``, under one lock. A cell whose run folder
already holds a finished run of the same training config, data, ancestry and code is not retrained (its
training record's fingerprint says so), so a change to the ``sample`` or ``eval`` settings reruns only
the evaluation.
"""

from __future__ import annotations

from kind_bench.config import Config
from kind_bench.lock import exclusive
from kind_bench.paths import cell_of, lock_path
from kind_bench.stages.evaluate import evaluate_cell
from kind_bench.stages.transfer import train_cell


def run(cfg: Config) -> str:
    """Transfer one (method, task, seed) cell, unless it is up to date, then evaluate it."""
    cell = cell_of(cfg)
    with exclusive(lock_path(cfg, cell), f"cell {cell.id}"):
        train_cell(cfg)
        return evaluate_cell(cfg)
