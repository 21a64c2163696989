"""DiffFit (Xie et al., ICCV 2023): bias, norm, class-embedding and scale-factor fine-tuning.

What the paper does: freeze a pre-trained DiT except its biases, norms and class embedding, and insert a
learnable scale factor gamma (initialised to 1) on each block's residual branches (attention and MLP);
it also raises the learning rate and places gamma in chosen blocks only.

What we do: the vanilla ancestry with fresh label-specific parameters (class-embedding tables, the ViT's
head); every block's attention and MLP branch is multiplied by its own gamma (init 1, so the model starts
as the ancestry); the biases of every linear layer, every affine norm (the ViT's LayerNorms; diffusers'
DiT has none, adaLN supplies its modulation), gamma and the label parameters train. Deviations: gamma is
in every block; the learning rate is tuned on validation data like every method's (the paper raises it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import arch_of, blocks, label_parameters


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
    description = "DiffFit: biases, norms, residual scale factors gamma (init 1) and label parameters train"
    paper = "Xie et al., ICCV 2023 (arXiv 2304.06648)"
    family = "peft"
    ancestry = Vanilla
    tracks = ("generation", "classification")

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        model, transferred = dense_descendant(ancestry, target)
        for block in blocks(model):
            for branch in arch_of(model).branches:
                setattr(block, branch, ScaledBranch(getattr(block, branch)))
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        picked = [p for name, p in model.named_parameters() if name.endswith((".bias", ".gamma"))]
        norms = [p for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
        return picked + norms + label_parameters(model)
