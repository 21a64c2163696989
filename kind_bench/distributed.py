"""Several processes for one run (``accelerate launch`` or ``torchrun``): data parallelism, made exact.

Every rank holds the whole model and draws the *same* global batch from the run's one seeded generator
(batch indices, diffusion noise, timesteps, label dropout), then computes the loss on its own contiguous
slice; gradients are averaged over the ranks by an all-reduce before every optimiser step (parameters
without a gradient, e.g. KIND tailors that no sample of the step opened, count as zero on every rank, so
nothing is "unused"). The result is the one-process run's up to floating-point reduction order, whatever
the world size, so a run resumes under any world size that divides its batch. Sampling for the metrics
works the same way: the starting noise of every image is drawn first, each rank denoises its share, and
rank 0 gathers the images and scores them. Only rank 0 writes files (:func:`kind_bench.io.atomic_path`
refuses elsewhere) and holds the cell's lock. This departs from DiT's per-rank streams (seed x world_size
+ rank), on purpose: a result must not depend on how many processes made it (the world size is recorded,
and enters the training fingerprint because float reductions differ).
"""

from __future__ import annotations

import os
from functools import cache

import torch


@cache
def world() -> tuple[int, int]:
    """(rank, world size): from accelerate's process state under a launcher, else (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


def is_main() -> bool:
    """Whether this process writes files (rank 0)."""
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def local_slice(total: int) -> slice:
    """This rank's contiguous share of ``total`` items (``total`` must divide evenly)."""
    rank, size = world()
    share = total // size
    return slice(rank * share, (rank + 1) * share)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks (a missing gradient counts as zero)."""
    if world()[1] == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world()[1]
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks."""
    if world()[1] == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value)
    return value / world()[1]


def gather_rows(part: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's rows (``part`` holds rows ``index`` of a ``total``-row tensor), on every rank."""
    if world()[1] == 1:
        return part
    pieces: list = [None] * world()[1]
    torch.distributed.all_gather_object(pieces, (index.cpu(), part.cpu()))
    out = part.new_empty((total, *part.shape[1:])).cpu()
    for rows, values in pieces:
        out[rows] = values
    return out.to(part.device)
