"""Cost measurements: FLOPs through ``torch.utils.flop_counter``, and the bytes a task adds."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``fn`` runs (torch's flop counter)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def task_bytes(params: list[nn.Parameter]) -> int:
    """Bytes of the parameters that train: the part of a descendant that is specific to its task.

    Everything else is either the ancestry's or re-derivable from a seed (KIND's gate, PiSSA's residual).
    """
    return sum(p.numel() * p.element_size() for p in params)


def sampling_flops(sample_fn: Callable[[torch.Tensor], object], num_classes: int, device: torch.device) -> float:
    """FLOPs per generated sample of a full sampling trajectory (one sample per class, averaged)."""
    labels = torch.arange(num_classes, device=device)
    return count_flops(lambda: sample_fn(labels)) / num_classes
