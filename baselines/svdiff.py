"""SVDiff (Han et al., ICCV 2023): fine-tune only spectral shifts of the pre-trained weights.

What the paper does: take the SVD W = U diag(sigma) V^T of every pre-trained weight once, freeze U and V,
and learn shifts delta with W' = U diag(ReLU(sigma + delta)) V^T (a few parameters per layer).

What we do: the same on the projections KIND decomposes (``method.targets``: q, k, v, out, fc1, fc2 of
every block; on the ViT its fused qkv, proj, fc1, fc2) of the vanilla ancestry; delta starts at 0, so the
weights start as the pre-trained ones. The label-specific parameters (class-embedding tables, the ViT's
head) are fresh for the target classes and train. Deviations: the paper shifts
every weight of the UNet (convolutions too); we restrict to the same projections as KIND and LoRA, and
the biases stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import block_linears, check_roles, label_parameters


class SpectralShiftLinear(nn.Module):
    """A frozen SVD of a dense layer plus trainable spectral shifts ``delta``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        U, sigma, Vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)  # noqa: N806
        dtype = linear.weight.dtype  # frozen parameters (not buffers), so that parameter counts include them
        self.U = nn.Parameter(U.to(dtype), requires_grad=False)
        self.sigma = nn.Parameter(sigma.to(dtype), requires_grad=False)
        self.Vh = nn.Parameter(Vh.to(dtype), requires_grad=False)
        self.delta = nn.Parameter(torch.zeros_like(self.sigma))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        """U diag(ReLU(sigma + delta)) V^T."""
        return (self.U * F.relu(self.sigma + self.delta)) @ self.Vh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


@dataclass
class SvdiffOptions:
    """Which projections get spectral shifts."""

    targets: list[str] = field(default_factory=lambda: ["q", "k", "v", "out", "fc1", "fc2"])


class Svdiff(Method):
    """Spectral shifts on the vanilla ancestry's projections + class embeddings train."""

    name = "svdiff"
    description = "SVDiff: train spectral shifts delta, sigma' = ReLU(sigma + delta), + label parameters"
    paper = "Han et al., ICCV 2023 (arXiv 2303.11305)"
    family = "peft"
    ancestry = Vanilla
    Options = SvdiffOptions
    tracks = ("generation", "classification")

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        check_roles(self.options.targets, "method.targets")
        model, transferred = dense_descendant(ancestry, target)
        for _, _, parent, attr in block_linears(model, self.options.targets):
            setattr(parent, attr, SpectralShiftLinear(getattr(parent, attr)))
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        shifts = [m.delta for m in model.modules() if isinstance(m, SpectralShiftLinear)]
        return shifts + label_parameters(model)
