"""Heur-LG (Wang et al., AAAI 2022), in the ViT form that later learngene papers use as a baseline.

What the paper does: a CNN "collective" model is trained continually; the last few layers, chosen by the
stability of their gradients, are the learngene; a descendant inherits them and is trained.

What we do (the ViT baseline form, on the DiT and the ViT): inherit the last quarter of the vanilla
ancestry's blocks (``method.fraction``: 1 of 4 on ``dit_tiny``, 2 of 6 on ``vit_digits``; the ViT form's 3 of
12) into the last positions of the descendant, initialise every other parameter randomly (label parameters too),
and train everything. Deviations: no continual "collective" training and no gradient-stability
selection; the heuristic (last layers) is fixed.
"""

from __future__ import annotations

from kind_bench.learngene import InheritBlocks


class HeurLg(InheritBlocks):
    """Inherit the last k ancestry blocks; random rest; all train."""

    name = "heur_lg"
    description = "Heur-LG: inherit the last k blocks of the vanilla ancestry, random rest, all train"
    paper = "Wang et al., AAAI 2022 (ViT baseline form)"

    def pairs(self, ancestry_depth: int, target_depth: int, k: int) -> dict[int, int]:
        return {target_depth - k + j: ancestry_depth - k + j for j in range(k)}
