"""Overrides that make every stage tiny, for tests that run the pipeline."""

from __future__ import annotations

#: Overrides that make every stage tiny (a micro DiT, a few steps, few samples). ``namespace=runs``
#: publishes the cells (so the leaderboard reads them) and ``tuning.lr_source=config`` uses transfer.lr.
MICRO = [
    "model.hidden_size=16", "model.num_heads=1", "model.depth=2",
    "ancestry.n_tailors=4", "ancestry.tailors_per_class=2",
    "pretrain.steps=20", "transfer.steps=8", "transfer.warmup_steps=2", "transfer.snapshots=[0.5,1.0]",
    "sample.steps=2", "sample.samples_per_class=12", "sample.snapshot_samples_per_class=6",
    "eval.kid_subset_size=10", "eval.kid_subsets=5", "eval.draws=2",
    "evaluator.epochs=8", "runtime.workers=1", "quiet=true", "tuning.lr_source=config", "namespace=runs",
]


def micro(*overrides: str, ancestry: bool = True) -> list[str]:
    """MICRO plus ``overrides``; without ``ancestry`` the KIND-ancestry keys are left out."""
    keep = MICRO if ancestry else [o for o in MICRO if not o.startswith("ancestry.")]
    return [*keep, *overrides]
