"""Cost measurements: FLOPs through ``torch.utils.flop_counter``, and the bytes a task adds."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _inplace_addmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``x.addmm_(a, b)``: torch's counter has a formula for ``addmm`` only (KIND's layer adds in place)."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``fn`` runs (torch's flop counter, plus
    in-place ``addmm_``, which it does not count)."""
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _inplace_addmm_flops}) as counter:
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
