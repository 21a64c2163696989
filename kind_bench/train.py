"""The one training loop, shared by ancestry pre-training and every method's transfer, in both tracks."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from kind_bench.checkpoint import LoopState, load_checkpoint, save_checkpoint
from kind_bench.config import RuntimeConfig, TrainConfig
from kind_bench.data.latents import PosteriorSet
from kind_bench.device import autocast
from kind_bench.distributed import average_gradients, barrier, world
from kind_bench.distributed import mean as distributed_mean
from kind_bench.errors import UserError
from kind_bench.methods import Phase, unique
from kind_bench.metrics.cost import count_flops, task_bytes


class Objective(Protocol):
    """A track's training loss: the diffusion loss (generation) or cross-entropy (classification)."""

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor: ...


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a training phase reports (recorded in the run's ``train_info``)."""

    steps: int
    final_loss: float
    train_time_s: float
    peak_memory_mb: float
    trainable_params: int
    task_bytes: int
    flops_per_step: int
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


def snapshot_schedule(cfg: TrainConfig) -> list[dict[str, float | int]]:
    """``[{"fraction": f, "step": s}]`` for each configured fraction of the steps, in order."""
    return [{"fraction": f, "step": max(1, round(f * cfg.steps))} for f in sorted(set(cfg.snapshots))]


def set_trainable(model: nn.Module, params: list[nn.Parameter]) -> None:
    """Make exactly ``params`` require gradients."""
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)


def state_memory_mb(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, model: nn.Module) -> float:
    """Bytes of weights, gradients and optimizer state, in MiB."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in params)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t))
    return (weights + grads + state) / 2**20


def step_profile(loss_fn: Callable[[], torch.Tensor], params: list[nn.Parameter]) -> tuple[float, int]:
    """One extra forward + backward: (MiB saved for backward, i.e. activation memory; FLOPs)."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    def step() -> None:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn()
        loss.backward()

    flops = count_flops(step)
    for p in params:
        p.grad = None
    return saved / 2**20, flops


class Ema:
    """An exponential moving average of the trained parameters (what DiT samples from). With it, snapshots
    and the final model hold the averaged weights."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * params."""
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block, the trained ones after."""
        live = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, live, strict=True):
                    p.copy_(value)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the averaged weights into the model."""
        for p, value in zip(self.params, self.shadow, strict=True):
            p.copy_(value)

    def state(self) -> dict[str, torch.Tensor]:
        """The shadow weights by position (saved with a resumable checkpoint)."""
        return {f"ema.{i}": t for i, t in enumerate(self.shadow)}


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Recompute block activations in the backward pass (diffusers' and timm's own switches). Refused for a
    label-gated KIND ViT: its routed passes open the gate around each forward (``gate.labels``), so a block
    recomputed in the backward pass would not see the labels of the pass it belongs to."""
    from kind_bench.models import DIT, arch_of

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    gate = getattr(base, "kind_gate", None)
    if gate is not None and not gate.open_all and arch_of(base) is not DIT:
        raise UserError("runtime.grad_checkpointing=true cannot train a label-gated KIND ViT (a recomputed block "
                        "would not see its own pass's labels): set runtime.grad_checkpointing=false")
    if hasattr(base, "enable_gradient_checkpointing"):
        base.enable_gradient_checkpointing()
    else:
        base.set_grad_checkpointing(True)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning-rate multiplier after ``step`` optimiser steps: linear warm-up, then constant or a
    cosine decay that reaches zero at the last step."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def phase_at(phases: list[Phase], step: int, steps: int) -> int:
    """Index of the phase that step ``step`` (1-based) of ``steps`` belongs to."""
    return next(i for i, phase in enumerate(phases) if step <= round(phase.until * steps))


def show_progress(quiet: bool) -> bool:
    """Progress bars only on a terminal: a log file gets one line per finished cell instead."""
    return not quiet and sys.stderr.isatty()


def train(
    model: nn.Module,
    phases: list[Phase],
    images: torch.Tensor | PosteriorSet,
    labels: torch.Tensor,
    cfg: TrainConfig,
    objective: Objective,
    seed: int,
    on_snapshot: Callable[[int, nn.Module], None] | None = None,
    desc: str = "train",
    quiet: bool = False,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    runtime: RuntimeConfig | None = None,
) -> TrainResult:
    """Train ``model`` on (images, labels) with ``objective``; each phase's parameters train in its turn.

    ``images`` are already in model space and on the model's device (a tensor, or a latent model's cached
    posterior, :class:`kind_bench.data.latents.PosteriorSet`, which draws them). Batches are drawn with
    replacement from a generator seeded with ``seed``, so a run is a pure function of its config.
    With ``checkpoint`` set and ``cfg.checkpoint_every`` > 0 the whole state is written there every that
    many steps, a run finding a checkpoint of the same ``fingerprint`` resumes from it, and the file is
    removed once training ends. The loss is read back from the device only at logging points (every
    ``steps // 50``), where a NaN or infinite running loss stops the run. ``cfg.precision=bf16`` trains
    under autocast, ``cfg.ema`` keeps (and finally holds) an average of the weights, ``runtime`` may ask
    for ``torch.compile`` and gradient checkpointing.
    Peak memory is CUDA's allocator peak on a GPU; on CPU it is weights + gradients + optimizer state
    plus the activations saved by one step (measured, not estimated). FLOPs per step come from torch's
    flop counter on one extra forward + backward after training.
    """
    from tqdm.auto import tqdm

    device = labels.device
    params = unique([p for phase in phases for p in phase.params])
    rank, world_size = world()
    if cfg.batch_size % world_size:
        raise UserError(f"batch_size={cfg.batch_size} does not divide over {world_size} processes: launch a world "
                        "size that divides it")
    model.train()
    if runtime is not None and runtime.grad_checkpointing:
        enable_grad_checkpointing(model)
    forward = torch.compile(model) if runtime is not None and runtime.compile else model
    ema = Ema(params, cfg.ema) if cfg.ema else None
    precision = partial(autocast, device, cfg.precision)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg))
    snapshots = {entry["step"] for entry in snapshot_schedule(cfg)}
    log_every = max(1, cfg.steps // 50)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def batch_loss() -> torch.Tensor:
        index = torch.randint(0, len(labels), (cfg.batch_size,), generator=generator, device=device)
        inputs = images.draw(index, generator) if hasattr(images, "draw") else images[index]
        with precision():
            return objective(forward, inputs, labels[index], generator)

    loop = LoopState()
    if checkpoint is not None:
        extra = ema.state() if ema else None
        loop = load_checkpoint(checkpoint, model, optimizer, lr_schedule, generator, fingerprint, extra) or loop
        if loop.step and not quiet:
            print(f"{desc}: resuming from step {loop.step} ({checkpoint})")
    curve, recent = [tuple(point) for point in loop.curve], list(loop.recent)
    pending: list[torch.Tensor] = []
    start = time.perf_counter() - loop.elapsed_s
    active = -1
    bar = tqdm(range(loop.step + 1, cfg.steps + 1), desc=desc, disable=not show_progress(quiet), leave=False,
               unit="step", initial=loop.step, total=cfg.steps)
    for step in bar:
        if (phase := phase_at(phases, step, cfg.steps)) != active:
            active = phase
            set_trainable(model, phases[phase].params)
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(phases[active].params)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(phases[active].params, cfg.grad_clip)
        optimizer.step()
        lr_schedule.step()
        if ema is not None:
            ema.update()
        pending.append(loss.detach())
        if step % log_every == 0 or step == cfg.steps:
            values = distributed_mean(torch.stack(pending)).tolist()
            pending.clear()
            if not all(math.isfinite(v) for v in values):
                raise DivergenceError(f"loss became {next(v for v in values if not math.isfinite(v))} "
                                      f"by step {step}")
            recent = (recent + values)[-20:]
            curve.append((step, sum(recent) / len(recent)))
            bar.set_postfix(loss=f"{curve[-1][1]:.4f}")
        if step in snapshots and on_snapshot is not None:
            if rank == 0:
                model.eval()
                with ema.applied() if ema else nullcontext():
                    on_snapshot(step, model)
                model.train()
            barrier()
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            if rank == 0:
                state = LoopState(step, time.perf_counter() - start, [list(p) for p in curve], list(recent))
                save_checkpoint(checkpoint, model, optimizer, lr_schedule, generator, state, fingerprint,
                                ema.state() if ema else None)
            barrier()
    elapsed = time.perf_counter() - start
    barrier()
    if checkpoint is not None and rank == 0:
        checkpoint.unlink(missing_ok=True)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    activations, flops = step_profile(batch_loss, phases[-1].params)
    if device.type != "cuda":
        peak = state_memory_mb(params, optimizer, model) + activations
    if ema is not None:
        ema.copy_to_model()
    model.eval()
    model.requires_grad_(False)  # evaluation only from here (and KIND's frozen-learngene product is cached)
    return TrainResult(
        steps=cfg.steps,
        final_loss=curve[-1][1],
        train_time_s=elapsed,
        peak_memory_mb=peak,
        trainable_params=sum(p.numel() for p in params),
        task_bytes=task_bytes(params),
        flops_per_step=flops,
        loss_curve=curve,
    )
