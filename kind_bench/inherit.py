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
