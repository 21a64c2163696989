"""Auto-LG (Wang et al., 2023), as later learngene papers implement the baseline.

What the paper does: choose the layers to inherit by their similarity to a pseudo-descendant, through a
meta-network; in practice the shallow layers are selected.

What we do (the ViT baseline form, applied to DiT): inherit the first ``method.blocks`` blocks of the
vanilla ancestry into the first positions of the descendant (2 of 4 on ``dit_tiny``, the ViT form's 6 of
12), initialise everything else randomly (class-embedding tables too), and train everything.
Deviation: no meta-network; the selection is fixed to the first k blocks.
"""

from __future__ import annotations

from kind_bench.learngene import InheritBlocks


class AutoLg(InheritBlocks):
    """Inherit the first k ancestry blocks; random rest; all train."""

    name = "auto_lg"
    description = "Auto-LG: inherit the first k DiT blocks of the vanilla ancestry, random rest, all train"
    paper = "Wang et al., 2023 (ViT baseline form)"

    def pairs(self, ancestry_depth: int, target_depth: int, k: int) -> dict[int, int]:
        return {j: j for j in range(k)}
