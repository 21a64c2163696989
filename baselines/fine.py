"""FINE (Xie et al., arXiv 2409.19289): factorised learngenes shared across layers.

What the paper does: every weight of a given type is W_l = U Sigma_l V^T, with U and V shared by all
blocks and a small per-block Sigma_l; the model is pre-trained from scratch in this form. A descendant of
any depth freezes U and V, gets freshly (randomly) initialised Sigma_l, trains them (about 0.3K steps on
little data), then trains normally.

What we do: the ``fine`` ancestry factorises the matrix types q, k, v, out, fc1, fc2 (the paper also
factorises adaLN; we keep the issue's six types, the same as KIND's) with r = min(in, out); U, V start
from the SVD of one block's DiT initialisation and every Sigma_l from its singular values (the blocks
start identical); biases and all other parameters stay per block. At transfer, U and V are copied and
frozen; every block gets a fresh Sigma_l (``method.sigma_init``: ``random``, |N(0, 1)| scaled to the
ancestry's Sigma magnitude, as in the paper's procedure; or ``identical``, the mean of the ancestry's
Sigma_l); the other per-block parameters come from evenly spaced ancestry blocks; the class-embedding
tables are fresh. Sigma and the class embeddings train (diffusers' DiT has no affine norms). FINE's
second phase, unconstrained training, is ``method.unconstrained=true``: then every parameter trains for
the whole transfer budget (our budget is shorter than the paper's 0.3K-step first phase alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.errors import choices_error
from kind_bench.inherit import block_renamer, copy_parameters
from kind_bench.methods import Ancestry, Descendant, Method, Target
from kind_bench.models import block_linears, build_dit, class_embedders

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
            U, sigma, Vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)  # noqa: N806
            bases[role] = SharedBasis(U.float(), Vh.T.float())
            first[role] = sigma.float()
        sigma = first[role] if sigmas is None else sigmas[role][index]
        setattr(parent, attr, FineLinear(bases[role], sigma, None if linear.bias is None else linear.bias.detach()))
    model.fine_bases = nn.ModuleDict(bases)
    return model


class FineAncestry(Ancestry):
    """A DiT whose q/k/v/out/fc1/fc2 weights share U and V across blocks, with per-block Sigma."""

    name = "fine"
    description = "factorised DiT: U, V shared per matrix type across blocks, Sigma per block"

    def build(self, target: Target) -> nn.Module:
        model = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
        return factorise(model)


@dataclass
class FineOptions:
    """How the descendant's Sigma starts, and whether everything trains (FINE's second phase)."""

    sigma_init: str = "random"  # random | identical
    unconstrained: bool = False


class Fine(Method):
    """Frozen shared U, V from the fine ancestry; fresh per-block Sigma and class embeddings train."""

    name = "fine"
    description = "FINE: shared U, V frozen; fresh per-block Sigma + class embeddings train"
    paper = "Xie et al., CVPR 2026 (arXiv 2409.19289)"
    ancestry = FineAncestry
    Options = FineOptions

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # any depth: Sigma is per block, U and V are shared

    def fresh_sigmas(self, ancestry: nn.Module, depth: int) -> dict[str, list[torch.Tensor]]:
        """Per-role, per-block singular values for the descendant."""
        if self.options.sigma_init not in ("random", "identical"):
            raise choices_error("method.sigma_init", self.options.sigma_init, ("identical", "random"))
        old: dict[str, list[torch.Tensor]] = {role: [] for role in ROLES}
        for _, role, parent, attr in block_linears(ancestry, ROLES):
            old[role].append(getattr(parent, attr).sigma.detach())
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
        model = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
        model = factorise(model, self.fresh_sigmas(ancestry, target.depth))
        transferred = 0
        with torch.no_grad():
            for role, basis in model.fine_bases.items():
                basis.U.copy_(ancestry.fine_bases[role].U)
                basis.V.copy_(ancestry.fine_bases[role].V)
                transferred += basis.U.numel() + basis.V.numel()
        transferred += copy_parameters(
            ancestry, model, rename=block_renamer(len(ancestry.transformer_blocks), target.depth),
            skip=lambda name: name.endswith(".sigma") or "class_embedder" in name or name.startswith("fine_bases"),
        )
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.options.unconstrained:
            return list(model.parameters())
        sigmas = [m.sigma for m in model.modules() if isinstance(m, FineLinear)]
        return sigmas + [emb.embedding_table.weight for emb in class_embedders(model)]
