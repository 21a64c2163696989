"""Backbones behind one small seam: diffusers' DiT (generation) and timm's VisionTransformer (classification).

Methods never touch an architecture's module names directly; they ask this module for a fresh backbone
(:func:`build_backbone`), its block list, the block linears of given roles (``q k v out fc1 fc2``; on the
ViT, ``q``, ``k`` and ``v`` are its one fused ``qkv`` projection), its label-specific parameters (the DiT's
class-embedding tables, the ViT's classifier head) and its final layer. One method then runs on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from torch import nn

from kind_bench.errors import choices_error
from kind_bench.models.dit import build_dit, class_embedders, initialize_dit_weights, null_label
from kind_bench.models.vit import build_vit

ROLES = ("q", "k", "v", "out", "fc1", "fc2")


@dataclass(frozen=True)
class Arch:
    """Where one architecture keeps the parts methods need."""

    name: str
    blocks: str  # the block list's attribute
    roles: dict[str, str]  # linear role -> path inside a block
    branches: tuple[str, str]  # a block's residual branches (attention, MLP)
    final: tuple[str, ...]  # top-level modules of the final layer


DIT = Arch("dit", "transformer_blocks",
           {"q": "attn1.to_q", "k": "attn1.to_k", "v": "attn1.to_v", "out": "attn1.to_out.0", "fc1": "ff.net.0.proj",
            "fc2": "ff.net.2"}, ("attn1", "ff"), ("proj_out_1", "proj_out_2"))
VIT = Arch("vit", "blocks",
           {"q": "attn.qkv", "k": "attn.qkv", "v": "attn.qkv", "out": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"},
           ("attn", "mlp"), ("norm", "fc_norm", "head"))
ARCHS = {a.name: a for a in (DIT, VIT)}
#: the DiT's roles, for code and configs that name DiT paths
LINEAR_ROLES = DIT.roles


_WEIGHTS_FOLLOW: ContextVar[bool] = ContextVar("weights_follow", default=False)


@contextmanager
def weights_follow() -> Iterator[None]:
    """Builds inside the block are about to receive saved weights: factorised layers skip the SVD that
    would initialise them (217 s for a DiT-L/2 KIND ancestry on a CPU, then overwritten)."""
    token = _WEIGHTS_FOLLOW.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FOLLOW.reset(token)


def weights_will_load() -> bool:
    """Whether the current build's weights are about to be loaded (see :func:`weights_follow`)."""
    return _WEIGHTS_FOLLOW.get()


def build_backbone(target) -> nn.Module:  # target: kind_bench.methods.Target
    """A freshly initialised backbone for ``target`` (its model config's ``arch``)."""
    if target.model.arch == "vit":
        return build_vit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
    return build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)


def arch_of(model: nn.Module) -> Arch:
    """The architecture of a backbone (also through a peft wrapper, which forwards attributes)."""
    return DIT if hasattr(model, "transformer_blocks") else VIT


def blocks(model: nn.Module) -> nn.ModuleList:
    """The backbone's transformer blocks."""
    return getattr(model, arch_of(model).blocks)


def check_roles(roles: list[str] | tuple[str, ...], key: str) -> None:
    """Every role must be one of :data:`ROLES`."""
    for role in roles:
        if role not in ROLES:
            raise choices_error(key, role, ROLES)


def role_paths(arch: Arch, roles: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(role, path) of each distinct linear the roles name (the ViT's q, k, v are one ``qkv``)."""
    seen: dict[str, str] = {}
    for role in roles:
        seen.setdefault(arch.roles[role], role)
    return [(role, path) for path, role in seen.items()]


def block_linears(model: nn.Module, roles: list[str] | tuple[str, ...]) -> Iterator[tuple[int, str, nn.Module, str]]:
    """Yield ``(block index, role, parent module, attribute)`` for each selected block linear."""
    paths = role_paths(arch_of(model), roles)
    for index, block in enumerate(blocks(model)):
        for role, path in paths:
            *parents, attr = path.split(".")
            parent = block
            for part in parents:
                parent = parent[int(part)] if part.isdigit() else getattr(parent, part)
            yield index, role, parent, attr


def is_label_parameter(name: str) -> bool:
    """Whether a parameter name is label-specific (a DiT class-embedding table, the ViT head)."""
    parts = name.split(".")
    return "class_embedder" in parts or "head" in parts


def label_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that mean something only for the training labels: fresh for every target task."""
    if arch_of(model) is DIT:
        return [emb.embedding_table.weight for emb in class_embedders(model)]
    return list(model.head.parameters())


def final_layer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The final layer: the DiT's output adaLN modulation and projection; the ViT's final norm and head."""
    return [p for name in arch_of(model).final for p in getattr(model, name).parameters()]


__all__ = [
    "ARCHS", "DIT", "LINEAR_ROLES", "ROLES", "VIT", "Arch", "arch_of", "block_linears", "blocks", "build_backbone",
    "build_dit", "build_vit", "check_roles", "class_embedders", "final_layer_parameters", "initialize_dit_weights",
    "is_label_parameter", "label_parameters", "null_label", "role_paths", "weights_follow", "weights_will_load",
]
