"""BitFit (Ben Zaken et al., ACL 2022) as an outside kind-bench plugin.

What the paper does: fine-tune only the bias terms of a pre-trained transformer.
What we do: the vanilla DiT ancestry with fresh class-embedding tables; every bias and the class
embeddings train (new classes need new embeddings), plus the final layer by the suite's option for every
parameter-efficient method (``transfer.final_layer``). Nothing here is part of kind-bench itself: the class
is found through the ``kind_bench.methods`` entry point declared in this package's pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import class_embedders


@dataclass
class BitFitOptions:
    """Whether the adaLN modulation's biases train too (an example of a plugin option)."""

    adaln: bool = True


class BitFit(Method):
    """Only biases (and class embeddings) train."""

    name = "bitfit"
    description = "BitFit: only the biases and the class embeddings train"
    paper = "Ben Zaken et al., ACL 2022 (arXiv 2106.10199)"
    ancestry = Vanilla
    Options = BitFitOptions

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        return Descendant(*dense_descendant(ancestry, target))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        biases = [p for name, p in model.named_parameters()
                  if name.endswith(".bias") and (self.options.adaln or "norm1.linear" not in name)]
        return biases + [emb.embedding_table.weight for emb in class_embedders(model)]
