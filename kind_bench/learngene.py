"""The shared shape of the block-inheritance learngene baselines (Heur-LG, Auto-LG)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kind_bench.inherit import copy_blocks
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import blocks, build_backbone


@dataclass
class InheritBlocksOptions:
    """The share of the ancestry's blocks that is the learngene (at least one block)."""

    fraction: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction} must be in (0, 1]")


class InheritBlocks(Method):
    """Inherit ``method.fraction`` of the vanilla ancestry's blocks (rounded, at least one, at most the
    descendant's depth), initialise the rest randomly and train everything. Subclasses choose which blocks
    (and where they go in a descendant of any depth)."""

    ancestry = Vanilla
    family = "learngene"
    Options = InheritBlocksOptions
    trains_everything = True
    tracks = ("generation", "classification")

    def pairs(self, ancestry_depth: int, target_depth: int, k: int) -> dict[int, int]:
        """``{descendant block: ancestry block}`` for the k inherited blocks."""
        raise NotImplementedError

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # any depth: at most the descendant's depth is inherited

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        depth = len(blocks(ancestry))
        k = min(max(1, round(self.options.fraction * depth)), target.depth)
        model = build_backbone(target)
        return Descendant(model, copy_blocks(ancestry, model, self.pairs(depth, target.depth, k)))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())
