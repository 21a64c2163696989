"""Head only: the control that every parameter-efficient method must beat.

The vanilla ancestry with fresh class-embedding tables; only the class embeddings train, plus the final
layer under the suite's default ``transfer.final_layer=true`` (the same rule as every parameter-efficient
method). Every block weight stays the ancestry's, so whatever a method gains over this row comes from
adapting the body, not from relabelling the head. Not from a paper: a standard linear-probe-style control.
"""

from __future__ import annotations

from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import class_embedders


class HeadOnly(Method):
    """Only the class embeddings (and, by the suite's option, the final layer) train."""

    name = "head_only"
    description = "control: vanilla ancestry, only class embeddings (+ final layer) train"
    paper = "(control)"
    family = "baseline"
    ancestry = Vanilla

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        return Descendant(*dense_descendant(ancestry, target))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [emb.embedding_table.weight for emb in class_embedders(model)]
