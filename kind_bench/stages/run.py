"""Stage ``run@<method>``: train, then evaluate, every (task, seed) cell of one method in one process.

Transfer and evaluation share one process per method so that the pipeline pays the ~10 s of importing
diffusers once per method instead of twice (see README, *Speed*). Each cell is exactly
``kind-bench transfer`` followed by ``kind-bench evaluate``. A cell whose run folder already holds a
finished run of the same training config, ancestry and code is not retrained (its training record's
fingerprint says so), so a change to the ``sample`` or ``eval`` settings reruns only the evaluation.
"""

from __future__ import annotations

from kind_bench.config import Config
from kind_bench.stages import evaluate, transfer


def run(cfg: Config) -> None:
    """Transfer one (method, task, seed) cell, unless it is up to date, then evaluate it."""
    transfer.run(cfg)
    evaluate.run(cfg)
