"""FINE (Xie et al., arXiv 2409.19289): factorised learngenes shared across layers.

What the paper does: every weight of a given type is W_l = U Sigma_l V^T, with U and V shared by all
blocks and a small per-block Sigma_l; the model is pre-trained from scratch in this form. A descendant of
any depth freezes U and V, gets freshly initialised Sigma_l (its ablation on DiT-B L12: random 77.7,
identical 47.8, linear 46.7, trainable 42.7 FID), trains them for about 0.3K steps on little data, then
trains the whole descendant normally.

What we do: the ``fine`` ancestry factorises the matrix types q, k, v, out, fc1, fc2 (on the ViT its fused
qkv, proj, fc1, fc2; the paper also factorises adaLN; we keep the types KIND decomposes) with
r = min(in, out); U, V start from the SVD of one block's initialisation and every Sigma_l from its singular
values (the blocks start identical); biases and all other parameters stay per block. At transfer, U and V
are copied; every block gets a fresh Sigma_l (``method.sigma_init``: ``random``, |N(0, 1)| scaled to the
ancestry's Sigma magnitude, the paper's procedure; or ``identical``, the mean of the ancestry's Sigma_l);
the other per-block parameters come from evenly spaced ancestry blocks; the label-specific parameters are
fresh. Then, within the same total step budget as every other method, the two phases of the paper's
recipe: for the first ``method.sigma_fraction`` of the steps only Sigma and the label parameters train
(U, V frozen; the final
layer by the suite's option), then every parameter trains (FINE's "train normally"). Our assumptions: the
split of the budget (0.25 by default; the paper gives 0.3K steps of an unstated total), and the Sigma phase
using the same learning rate as the rest. ``sigma_fraction=1`` is the Sigma phase alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.inherit import block_renamer, copy_parameters
from kind_bench.methods import Ancestry, Descendant, Method, Phase, Target
from kind_bench.models import (
    block_linears,
    blocks,
    build_backbone,
    is_label_parameter,
    label_parameters,
    weights_will_load,
)

ROLES = ("q", "k", "v", "out", "fc1", "fc2")


class SharedBasis(nn.Module):
    """U (out x r) and V (in x r) of one matrix type, shared by every block."""

    def __init__(self, U: torch.Tensor, V: torch.Tensor) -> None:  # noqa: N803
        super().__init__()
        self.U = nn.Parameter(U.clone())
        self.V = nn.Parameter(V.clone())


class FineLinear(nn.Module):
    """W_l = U diag(sigma_l) V^T with the type's shared basis and this block's own sigma and bias."""

    def __init__(self, basis: SharedBasis, sigma: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.__dict__["basis"] = basis  # shared; registered once on the model as fine_bases
        self.sigma = nn.Parameter(sigma.clone())
        self.bias = None if bias is None else nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, (self.basis.U * self.sigma) @ self.basis.V.T, self.bias)


def factorise(model: nn.Module, sigmas: dict[str, list[torch.Tensor]] | None = None) -> nn.Module:
    """Replace the ROLES linears of every block by FineLinears on shared bases from block 0's SVD.

    ``sigmas[role][block]`` overrides the per-block singular values (default: block 0's).
    """
    bases: dict[str, SharedBasis] = {}
    first: dict[str, torch.Tensor] = {}
    for index, role, parent, attr in block_linears(model, ROLES):
        linear = getattr(parent, attr)
        if role not in bases:
            if weights_will_load():  # saved weights follow: no SVD
                out, inp = linear.weight.shape
                r = min(out, inp)
                U, sigma, Vh = torch.zeros(out, r), torch.zeros(r), torch.zeros(r, inp)  # noqa: N806
            else:
                U, sigma, Vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)  # noqa: N806
            bases[role] = SharedBasis(U.float(), Vh.T.float())
            first[role] = sigma.float()
        sigma = first[role] if sigmas is None else sigmas[role][index]
        setattr(parent, attr, FineLinear(bases[role], sigma, None if linear.bias is None else linear.bias.detach()))
    model.fine_bases = nn.ModuleDict(bases)
    return model


class FineAncestry(Ancestry):
    """A backbone whose attention and MLP weights share U and V per matrix type across blocks, with
    per-block Sigma."""

    name = "fine"
    description = "factorised backbone: U, V shared per matrix type across blocks, Sigma per block"

    def build(self, target: Target) -> nn.Module:
        return factorise(build_backbone(target))


@dataclass
class FineOptions:
    """How the descendant's Sigma starts, and the share of the steps spent training Sigma alone."""

    sigma_init: str = "random"  # random | identical
    sigma_fraction: float = 0.25  # the Sigma phase; the rest of the steps train every parameter

    def __post_init__(self) -> None:
        if self.sigma_init not in ("random", "identical"):
            raise ValueError(f"sigma_init={self.sigma_init!r} is not one of: identical, random")
        if not 0 < self.sigma_fraction <= 1:
            raise ValueError(f"sigma_fraction={self.sigma_fraction} must be in (0, 1]")


class Fine(Method):
    """Shared U, V from the fine ancestry; fresh per-block Sigma trains, then the whole descendant."""

    name = "fine"
    description = "FINE: fresh per-block Sigma on the shared U, V trains first, then every parameter"
    paper = "Xie et al., CVPR 2026 (arXiv 2409.19289)"
    family = "learngene"
    ancestry = FineAncestry
    tracks = ("generation", "classification")
    Options = FineOptions

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # any depth: Sigma is per block, U and V are shared

    def fresh_sigmas(self, ancestry: nn.Module, depth: int) -> dict[str, list[torch.Tensor]]:
        """Per-role, per-block singular values for the descendant."""
        old: dict[str, list[torch.Tensor]] = {}
        for _, role, parent, attr in block_linears(ancestry, ROLES):
            old.setdefault(role, []).append(getattr(parent, attr).sigma.detach())
        out: dict[str, list[torch.Tensor]] = {}
        for role, values in old.items():
            mean = torch.stack(values).mean(0)
            if self.options.sigma_init == "identical":
                out[role] = [mean.clone() for _ in range(depth)]
            else:
                scale = mean.abs().mean()
                out[role] = [torch.randn_like(mean).abs() * scale for _ in range(depth)]
        return out

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        model = factorise(build_backbone(target), self.fresh_sigmas(ancestry, target.depth))
        transferred = 0
        with torch.no_grad():
            for role, basis in model.fine_bases.items():
                basis.U.copy_(ancestry.fine_bases[role].U)
                basis.V.copy_(ancestry.fine_bases[role].V)
                transferred += basis.U.numel() + basis.V.numel()
        transferred += copy_parameters(
            ancestry, model, rename=block_renamer(len(blocks(ancestry)), target.depth),
            skip=lambda name: name.endswith(".sigma") or is_label_parameter(name) or name.startswith("fine_bases"),
        )
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The Sigma phase's parameters: every block's Sigma and the class embeddings."""
        sigmas = [m.sigma for m in model.modules() if isinstance(m, FineLinear)]
        return sigmas + label_parameters(model)

    def phases(self, model: nn.Module) -> list[Phase]:
        """Sigma first, then everything (the paper's two steps), in one budget."""
        sigma = Phase(self.options.sigma_fraction, self.trainable_parameters(model))
        return [sigma] if self.options.sigma_fraction == 1 else [sigma, Phase(1.0, list(model.parameters()))]
