"""TLEG (Xia et al., AAAI 2024): linearly expandable learngenes.

What the paper does: an auxiliary model whose every layer is theta_l = theta_A + c_l theta_B, with theta_A
and theta_B shared by all layers, is trained by soft distillation from a large teacher; a descendant of
any depth L_d is initialised with theta_i = theta_A + (i / L_d) theta_B and fine-tuned without constraint.

What we do: the ``tleg`` ancestry is a backbone in which every ``nn.Linear`` and every affine
``nn.LayerNorm`` inside a block (its original setting: "every linear and norm parameter"; on the DiT the
attention and MLP projections, the adaLN modulation and diffusers' per-block timestep embedder, whose
norms have no affine parameters; on the ViT qkv, proj, fc1, fc2, norm1 and norm2) is theta_A + c_l theta_B
with c_l = l / L for blocks l = 0..L-1 (the code's (l-1)/L with 1-based l). theta_A starts from one
block's initialisation and theta_B at zero. It is **trained on data** with the track's loss (no
distillation: the only teacher here would be the vanilla ancestry, pre-trained with the same budget).
The descendant's block i takes theta_A + (i / L_d) theta_B for every such parameter, copies the
non-block parameters (patch embedding, output layer), gets fresh label-specific parameters, and trains
everything. The DiT's per-block label tables are not expanded (they are reset at transfer anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.inherit import copy_parameters
from kind_bench.methods import Ancestry, Descendant, Method, Target
from kind_bench.models import arch_of, blocks, build_backbone, is_label_parameter


class ParamPair(nn.Module):
    """The shared (theta_A, theta_B) of every parameter of one module position (a linear or a norm)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        own = dict(module.named_parameters(recurse=False))
        self.names = list(own)
        self.a = nn.ParameterDict({n: nn.Parameter(p.detach().clone()) for n, p in own.items()})
        self.b = nn.ParameterDict({n: nn.Parameter(torch.zeros_like(p)) for n, p in own.items()})

    def at(self, c: float) -> dict[str, torch.Tensor]:
        """Every parameter at coefficient c: theta_A + c theta_B."""
        return {n: self.a[n] + c * self.b[n] for n in self.names}


class Expanded(nn.Module):
    """A block's linear or norm, computed from its position's shared pair at this block's coefficient."""

    def __init__(self, pair: ParamPair, c: float, template: nn.Module) -> None:
        super().__init__()
        self.__dict__["pair"] = pair  # shared; registered once on the model as tleg_pairs
        self.c = c
        self.norm = (template.normalized_shape, template.eps) if isinstance(template, nn.LayerNorm) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.pair.at(self.c)
        if self.norm is not None:
            return F.layer_norm(x, self.norm[0], params.get("weight"), params.get("bias"), self.norm[1])
        return F.linear(x, params["weight"], params.get("bias"))


def expandable_paths(block: nn.Module) -> list[str]:
    """Qualified names of every linear and every affine norm inside a block."""
    return [name for name, module in block.named_modules()
            if isinstance(module, nn.Linear) or (isinstance(module, nn.LayerNorm) and module.elementwise_affine)]


def _key(path: str) -> str:
    return path.replace(".", "__")


def _set(block: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, attr, module)


class TlegAncestry(Ancestry):
    """A backbone whose block linears and norms are theta_A + (l / L) theta_B with shared theta_A, theta_B."""

    name = "tleg"
    description = "linearly expandable backbone: every block linear and norm is theta_A + (l/L) theta_B"

    def build(self, target: Target) -> nn.Module:
        model = build_backbone(target)
        layers = blocks(model)
        paths = expandable_paths(layers[0])
        model.tleg_pairs = nn.ModuleDict({_key(p): ParamPair(layers[0].get_submodule(p)) for p in paths})
        for index, block in enumerate(layers):
            for path in paths:
                pair, template = model.tleg_pairs[_key(path)], block.get_submodule(path)
                _set(block, path, Expanded(pair, index / len(layers), template))
        return model


class Tleg(Method):
    """Expand the TLEG learngene to the descendant's depth, then train everything."""

    name = "tleg"
    description = "TLEG: descendant block i = theta_A + (i/L_d) theta_B from the tleg ancestry, all train"
    paper = "Xia et al., AAAI 2024 (arXiv 2312.05614)"
    family = "learngene"
    ancestry = TlegAncestry
    trains_everything = True
    tracks = ("generation", "classification")

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # any depth: that is the point of TLEG

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        model = build_backbone(target)
        block_prefix = arch_of(model).blocks + "."
        transferred = copy_parameters(
            ancestry, model, skip=lambda name: name.startswith(block_prefix) or is_label_parameter(name)
        )
        with torch.no_grad():
            for index, block in enumerate(blocks(model)):
                for path in expandable_paths(block):
                    module = block.get_submodule(path)
                    for name, value in ancestry.tleg_pairs[_key(path)].at(index / target.depth).items():
                        getattr(module, name).copy_(value)
                        transferred += value.numel()
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())
