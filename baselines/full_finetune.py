"""Full fine-tuning: the vanilla dense ancestry with new class embeddings; everything trains.

Every parameter except the per-block class-embedding tables is copied from the vanilla ancestry; the
tables are freshly initialised for the target classes (the target labels mean different things).
"""

from __future__ import annotations

from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla


class FullFinetune(Method):
    """Copy the dense ancestry, fresh class embeddings, train all parameters."""

    name = "full_finetune"
    description = "vanilla ancestry, fresh label parameters, every parameter trains"
    paper = "(standard fine-tuning baseline)"
    family = "baseline"
    ancestry = Vanilla
    trains_everything = True
    tracks = ("generation", "classification")

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        return Descendant(*dense_descendant(ancestry, target))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())
