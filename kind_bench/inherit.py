"""Copying weights from an ancestry into a descendant, counting what was inherited."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def copy_parameters(
    source: nn.Module,
    target: nn.Module,
    skip: Callable[[str], bool] = lambda name: False,
    rename: Callable[[str], str | None] = lambda name: name,
) -> int:
    """Copy every target parameter whose (renamed) source name exists with the same shape.

    ``skip(name)`` excludes target parameters; ``rename(name)`` maps a target name to the source name
    to copy from (None: nothing to copy). Returns the number of parameter elements copied.
    """
    source_params = dict(source.named_parameters(remove_duplicate=False))
    copied = 0
    for name, param in target.named_parameters():
        if skip(name):
            continue
        src_name = rename(name)
        src = source_params.get(src_name) if src_name is not None else None
        if src is not None and src.shape == param.shape:
            param.copy_(src)
            copied += param.numel()
    return copied


def dense_descendant(ancestry: nn.Module, target) -> tuple[nn.Module, int]:
    """A fresh DiT for ``target`` holding every ancestry parameter except the class embeddings.

    The per-block label tables are left freshly initialised: the target labels mean different things.
    Returns the model and the number of parameter elements copied.
    """
    from kind_bench.models import build_dit

    model = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
    return model, copy_parameters(ancestry, model, skip=lambda name: "class_embedder" in name)


def block_map(source_depth: int, target_depth: int) -> list[int]:
    """Evenly spaced source blocks for each target block (identity when the depths match)."""
    if target_depth == 1:
        return [0]
    return [round(i * (source_depth - 1) / (target_depth - 1)) for i in range(target_depth)]


def block_renamer(source_depth: int, target_depth: int) -> Callable[[str], str]:
    """Map a target parameter name to the source name under :func:`block_map` (other names unchanged)."""
    mapping = block_map(source_depth, target_depth)

    def rename(name: str) -> str:
        parts = name.split(".")
        if parts[0] == "transformer_blocks":
            parts[1] = str(mapping[int(parts[1])])
        return ".".join(parts)

    return rename


def copy_blocks(source: nn.Module, target: nn.Module, pairs: dict[int, int]) -> int:
    """Copy whole DiT blocks ``{target index: source index}``, except their class-embedding tables."""
    copied = 0
    for dst, src in pairs.items():
        copied += copy_parameters(
            source.transformer_blocks[src], target.transformer_blocks[dst], skip=lambda name: "class_embedder" in name
        )
    return copied
