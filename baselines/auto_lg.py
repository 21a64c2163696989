"""Auto-LG (Wang et al., 2023), as later learngene papers implement the baseline.

What the paper does: choose the layers to inherit by their similarity to a pseudo-descendant, through a
meta-network; in practice the shallow layers are selected.

What we do (the ViT baseline form, on the DiT and the ViT): inherit the first half of the vanilla
ancestry's blocks (``method.fraction``: 2 of 4 on ``dit_tiny``, 3 of 6 on ``vit_digits``; the ViT form's 6 of
12) into the first positions of the descendant, initialise everything else randomly (label parameters too),
and train everything.
Deviation: no meta-network; the selection is fixed to the first k blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from kind_bench.learngene import InheritBlocks, InheritBlocksOptions


@dataclass
class AutoLgOptions(InheritBlocksOptions):
    """The first half of the blocks is the learngene."""

    fraction: float = 0.5


class AutoLg(InheritBlocks):
    """Inherit the first k ancestry blocks; random rest; all train."""

    name = "auto_lg"
    description = "Auto-LG: inherit the first k blocks of the vanilla ancestry, random rest, all train"
    paper = "Wang et al., 2023 (ViT baseline form)"
    Options = AutoLgOptions

    def pairs(self, ancestry_depth: int, target_depth: int, k: int) -> dict[int, int]:
        return {j: j for j in range(k)}
