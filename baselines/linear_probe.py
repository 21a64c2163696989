"""Linear probe (classification track): a fresh linear classifier on the ancestry's frozen features.

The classic measure of a representation (e.g. Kornblith et al., CVPR 2019): the vanilla ViT ancestry,
every weight frozen, a fresh head trained on the target classes. Unlike ``head_only`` the final LayerNorm
stays frozen too, whatever ``transfer.final_layer`` says: the probe's definition fixes what trains.
"""

from __future__ import annotations

from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import label_parameters


class LinearProbe(Method):
    """Only the fresh classifier head trains."""

    name = "linear_probe"
    description = "linear probe: vanilla ViT ancestry frozen, a fresh head trains"
    paper = "(standard representation probe)"
    ancestry = Vanilla
    family = "baseline"
    tracks = ("classification",)
    final_layer_option = False

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        return Descendant(*dense_descendant(ancestry, target))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return label_parameters(model)
