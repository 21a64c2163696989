"""TLEG (Xia et al., AAAI 2024): linearly expandable learngenes.

What the paper does: an auxiliary model whose every layer is theta_l = theta_A + c_l theta_B, with theta_A
and theta_B shared by all layers, is trained by soft distillation from a large teacher; a descendant of
any depth L_d is initialised with theta_i = theta_A + (i / L_d) theta_B and fine-tuned without constraint.

What we do: the ``tleg`` ancestry is a DiT in which every ``nn.Linear`` inside a block (attention q/k/v/out,
MLP fc1/fc2, the adaLN modulation and diffusers' per-block timestep embedder) is theta_A + c_l theta_B with
c_l = l / L for blocks l = 0..L-1 (the code's (l-1)/L with 1-based l). theta_A starts from the DiT paper's
initialisation of one block and theta_B at zero. It is **trained on data** with the suite's diffusion loss
(no distillation: the only teacher here would be the vanilla ancestry, pre-trained with the same budget).
The descendant's block i takes theta_A + (i / L_d) theta_B for every such linear, copies the
non-block parameters (patch embedding, output layer), gets fresh class-embedding tables, and trains
everything. Norms: diffusers' DiT has no affine norm parameters, so there are none to expand; the
per-block label tables are not expanded (they are reset at transfer anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.inherit import copy_parameters
from kind_bench.methods import Ancestry, Descendant, Method, Target
from kind_bench.models import build_dit


class LinearPair(nn.Module):
    """The shared (theta_A, theta_B) of one linear layer position."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_a = nn.Parameter(linear.weight.detach().clone())
        self.weight_b = nn.Parameter(torch.zeros_like(linear.weight))
        has_bias = linear.bias is not None
        self.bias_a = nn.Parameter(linear.bias.detach().clone()) if has_bias else None
        self.bias_b = nn.Parameter(torch.zeros_like(linear.bias)) if has_bias else None

    def at(self, c: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) = theta_A + c theta_B."""
        bias = None if self.bias_a is None else self.bias_a + c * self.bias_b
        return self.weight_a + c * self.weight_b, bias


class ExpandedLinear(nn.Module):
    """A block's linear layer, computed from the shared pair at this block's coefficient."""

    def __init__(self, pair: LinearPair, c: float) -> None:
        super().__init__()
        self.__dict__["pair"] = pair  # shared; registered once on the model as tleg_pairs
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.pair.at(self.c)
        return F.linear(x, weight, bias)


def block_linear_paths(block: nn.Module) -> list[str]:
    """Qualified names of every nn.Linear inside a DiT block."""
    return [name for name, module in block.named_modules() if isinstance(module, nn.Linear)]


def _set(block: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, attr, module)


class TlegAncestry(Ancestry):
    """A DiT whose block linears are theta_A + (l / L) theta_B with shared theta_A, theta_B."""

    name = "tleg"
    description = "linearly expandable DiT: every block linear is theta_A + (l/L) theta_B, trained on data"

    def build(self, target: Target) -> nn.Module:
        model = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
        blocks = model.transformer_blocks
        paths = block_linear_paths(blocks[0])
        model.tleg_pairs = nn.ModuleDict({p.replace(".", "__"): LinearPair(blocks[0].get_submodule(p)) for p in paths})
        for index, block in enumerate(blocks):
            for path in paths:
                _set(block, path, ExpandedLinear(model.tleg_pairs[path.replace(".", "__")], index / len(blocks)))
        return model


class Tleg(Method):
    """Expand the TLEG learngene to the descendant's depth, then train everything."""

    name = "tleg"
    description = "TLEG: descendant block i = theta_A + (i/L_d) theta_B from the tleg ancestry, all train"
    paper = "Xia et al., AAAI 2024 (arXiv 2312.05614)"
    family = "learngene"
    ancestry = TlegAncestry
    trains_everything = True

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # any depth: that is the point of TLEG

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        model = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
        transferred = copy_parameters(
            ancestry, model, skip=lambda name: name.startswith("transformer_blocks") or "class_embedder" in name
        )
        with torch.no_grad():
            for index, block in enumerate(model.transformer_blocks):
                for path in block_linear_paths(block):
                    weight, bias = ancestry.tleg_pairs[path.replace(".", "__")].at(index / target.depth)
                    linear = block.get_submodule(path)
                    linear.weight.copy_(weight)
                    transferred += weight.numel()
                    if bias is not None:
                        linear.bias.copy_(bias)
                        transferred += bias.numel()
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())
