"""Training from scratch: a randomly initialised DiT, everything trains on the target task.

The lower bound every transfer method must beat. Nothing is inherited, so it can be any depth.
"""

from __future__ import annotations

from torch import nn

from kind_bench.methods import Descendant, Method, Target
from kind_bench.models import build_backbone


class Scratch(Method):
    """No ancestry; the DiT paper's initialisation; all parameters train."""

    name = "scratch"
    description = "random initialisation, every parameter trains on the target task"
    paper = "(reference lower bound)"
    family = "baseline"
    ancestry = None
    trains_everything = True
    tracks = ("generation", "classification")

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        return Descendant(build_backbone(target), transferred=0)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())
