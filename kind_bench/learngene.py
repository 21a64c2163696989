"""The shared shape of the block-inheritance learngene baselines (Heur-LG, Auto-LG)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kind_bench.errors import UserError
from kind_bench.inherit import copy_blocks
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import build_dit


@dataclass
class InheritBlocksOptions:
    """How many blocks of the ancestry are the learngene."""

    blocks: int = 1


class InheritBlocks(Method):
    """Inherit ``method.blocks`` whole blocks of the vanilla ancestry, initialise the rest randomly and
    train everything. Subclasses choose which blocks (and where they go in a descendant of any depth)."""

    ancestry = Vanilla
    family = "learngene"
    Options = InheritBlocksOptions
    trains_everything = True

    def pairs(self, ancestry_depth: int, target_depth: int, k: int) -> dict[int, int]:
        """``{descendant block: ancestry block}`` for the k inherited blocks."""
        raise NotImplementedError

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # any depth >= blocks (checked in build)

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        k = self.options.blocks
        depth = len(ancestry.transformer_blocks)
        if not 0 < k <= min(depth, target.depth):
            raise UserError(f"method.blocks={k} must be in [1, {min(depth, target.depth)}] "
                            f"(ancestry depth {depth}, descendant depth {target.depth})")
        model = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
        return Descendant(model, copy_blocks(ancestry, model, self.pairs(depth, target.depth, k)))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())
