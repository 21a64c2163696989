"""DiffFit (Xie et al., ICCV 2023): bias, norm, class-embedding and scale-factor fine-tuning.

What the paper does: freeze a pre-trained DiT except its biases, norms and class embedding, and insert a
learnable scale factor gamma (initialised to 1) on each block's residual branches (attention and MLP);
it also raises the learning rate and places gamma in chosen blocks only.

What we do: the vanilla ancestry with fresh class-embedding tables; every block's attention and MLP
branch is multiplied by its own gamma (init 1, so the model starts as the ancestry); the biases of every
linear layer, gamma and the class embeddings train. Deviations: diffusers' DiT has no affine norm
parameters (adaLN supplies the modulation), so "norms" adds nothing; gamma is in every block; the shared
learning rate is used (no per-method tuning, by the suite's protocol).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import class_embedders


class ScaledBranch(nn.Module):
    """``gamma * branch(...)``: a residual branch with a learnable scalar scale."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.gamma * self.branch(*args, **kwargs)


class Difffit(Method):
    """Biases + residual scale factors + class embeddings train on the vanilla ancestry."""

    name = "difffit"
    description = "DiffFit: biases, residual scale factors gamma (init 1) and class embeddings train"
    paper = "Xie et al., ICCV 2023 (arXiv 2304.06648)"
    family = "peft"
    ancestry = Vanilla

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        model, transferred = dense_descendant(ancestry, target)
        for block in model.transformer_blocks:
            block.attn1 = ScaledBranch(block.attn1)
            block.ff = ScaledBranch(block.ff)
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        picked = [p for name, p in model.named_parameters() if name.endswith((".bias", ".gamma"))]
        return picked + [emb.embedding_table.weight for emb in class_embedders(model)]
