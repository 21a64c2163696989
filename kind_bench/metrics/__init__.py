"""Metrics: torch-fidelity quality scores on a registered extractor, accuracy and costs.

``DIRECTION`` is the one place that says whether lower or higher is better; ranks, winners, findings and
Pareto plots all read it. ``None`` means the metric has no better direction and is never ranked: the
Inception-style score rewards confident, varied class predictions, and generated digits that look like
the ancestry's classes score *above* real data (5.2-5.6 against 5.04 on ``novel``, see the statistics
issue), so a higher IS is not better here. ``is_gap`` (|IS - IS of the reference images|) is the
directed version. Precision rewards fidelity alone (a collapsed sampler that repeats one good image
scores well on it); FD, KID and recall also penalise a lack of diversity (``tests/test_metrics.py``).
Classification: top-1 accuracy (primary), negative log-likelihood and expected calibration error.
"""

from __future__ import annotations

DIRECTION: dict[str, str | None] = {
    "fd_digits": "lower",
    "kid_digits": "lower",
    "is_digits": None,
    "is_gap_digits": "lower",
    "precision_digits": "higher",
    "recall_digits": "higher",
    "class_accuracy": "higher",
    "fid": "lower",
    "kid": "lower",
    "is": None,
    "is_gap": "lower",
    "precision": "higher",
    "recall": "higher",
    "fd_dinov2": "lower",
    "top1": "higher",
    "nll": "lower",
    "ece": "lower",
}

#: metrics bounded in [0, 1]: tuning pools them over tasks by the arithmetic mean (a geometric mean would
#: let one perfect task decide alone)
BOUNDED = frozenset({"precision_digits", "recall_digits", "class_accuracy", "precision", "recall", "top1", "ece"})
#: unbiased estimates that can be negative: no geometric mean over tasks, so never a tuning metric
SIGNED = frozenset({"kid_digits", "kid"})


#: the metric that ranks methods: per feature extractor for generation, top-1 for classification
PRIMARY: dict[str, str] = {"digits_cnn": "fd_digits", "inception-v3-compat": "fid", "classification": "top1"}


def primary_metric(cfg) -> str:  # cfg: kind_bench.config.Config
    """The ranking metric of a config's evaluation (the Frechet distance on its extractor, or top-1)."""
    return PRIMARY["classification" if cfg.track == "classification" else cfg.eval.feature_extractor]


def better(metric: str) -> str | None:
    """'lower', 'higher' or None (no direction); KeyError for an undeclared metric."""
    return DIRECTION[metric]
