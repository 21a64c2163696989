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
    """Copy every target parameter whose (renamed) source name exists; a shape that differs is refused.

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
        if src is None:
            continue
        if src.shape != param.shape:  # silently keeping the fresh tensor would inherit less than claimed
            raise ValueError(f"cannot inherit {name} of shape {tuple(param.shape)} from {src_name} of shape "
                             f"{tuple(src.shape)}: skip it explicitly if it is not meant to be inherited")
        param.copy_(src)
        copied += param.numel()
    return copied


def dense_descendant(ancestry: nn.Module, target) -> tuple[nn.Module, int]:
    """A fresh backbone for ``target`` holding every ancestry parameter except the label-specific ones.

    The DiT's per-block label tables and the ViT's head are left freshly initialised: the target labels
    mean different things. Returns the model and the number of parameter elements copied.
    """
    from kind_bench.models import build_backbone, is_label_parameter

    model = build_backbone(target)
    return model, copy_parameters(ancestry, model, skip=is_label_parameter)


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
        if parts[0] in ("transformer_blocks", "blocks"):
            parts[1] = str(mapping[int(parts[1])])
        return ".".join(parts)

    return rename


def copy_blocks(source: nn.Module, target: nn.Module, pairs: dict[int, int]) -> int:
    """Copy whole blocks ``{target index: source index}``, except their label-specific parameters."""
    from kind_bench.models import blocks, is_label_parameter

    copied = 0
    for dst, src in pairs.items():
        copied += copy_parameters(blocks(source)[src], blocks(target)[dst], skip=is_label_parameter)
    return copied
