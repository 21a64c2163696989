"""Metrics: torch-fidelity quality scores on a registered extractor, accuracy and costs.

``DIRECTION`` is the one place that says whether lower or higher is better; ranks, winners and Pareto
plots all read it.
"""

from __future__ import annotations

DIRECTION: dict[str, str] = {
    "fd_digits": "lower",
    "kid_digits": "lower",
    "is_digits": "higher",
    "precision_digits": "higher",
    "recall_digits": "higher",
    "class_accuracy": "higher",
    "fid": "lower",
    "kid": "lower",
    "is": "higher",
    "precision": "higher",
    "recall": "higher",
}


def better(metric: str) -> str:
    """'lower' or 'higher' (raises KeyError for an undeclared metric)."""
    return DIRECTION[metric]
