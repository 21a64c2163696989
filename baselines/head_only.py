"""Head only: the control that every parameter-efficient method must beat.

The vanilla ancestry with fresh label-specific parameters (the DiT's class-embedding tables, the ViT's
head); only those train, plus the final layer under the suite's default ``transfer.final_layer=true`` (the
same rule as every parameter-efficient method): on the DiT its output adaLN modulation and projection, on
the ViT its final LayerNorm (so ``head_only`` differs from the classification track's ``linear_probe``,
which trains the head alone). Every block weight stays the ancestry's, so whatever a method gains over
this row comes from adapting the body, not from relabelling the head. Not from a paper: a control.
"""

from __future__ import annotations

from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import label_parameters


class HeadOnly(Method):
    """Only the label-specific parameters (and, by the suite's option, the final layer) train."""

    name = "head_only"
    description = "control: vanilla ancestry, only the label parameters (+ final layer) train"
    paper = "(control)"
    ancestry = Vanilla
    family = "baseline"
    tracks = ("generation", "classification")

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        return Descendant(*dense_descendant(ancestry, target))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return label_parameters(model)
