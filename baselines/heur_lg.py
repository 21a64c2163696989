"""Heur-LG (Wang et al., AAAI 2022), in the ViT form that later learngene papers use as a baseline.

What the paper does: a CNN "collective" model is trained continually; the last few layers, chosen by the
stability of their gradients, are the learngene; a descendant inherits them and is trained.

What we do (the ViT baseline form, applied to DiT): inherit the last ``method.blocks`` blocks of the
vanilla ancestry into the last positions of the descendant (1 of 4 on ``dit_tiny``, the ViT form's 3 of
12 scaled), initialise every other parameter randomly (DiT initialisation; class-embedding tables too),
and train everything. Deviations: no continual "collective" training and no gradient-stability
selection; the heuristic (last layers) is fixed.
"""

from __future__ import annotations

from kind_bench.learngene import InheritBlocks


class HeurLg(InheritBlocks):
    """Inherit the last k ancestry blocks; random rest; all train."""

    name = "heur_lg"
    description = "Heur-LG: inherit the last k DiT blocks of the vanilla ancestry, random rest, all train"
    paper = "Wang et al., AAAI 2022 (ViT baseline form)"

    def pairs(self, ancestry_depth: int, target_depth: int, k: int) -> dict[int, int]:
        return {target_depth - k + j: ancestry_depth - k + j for j in range(k)}
