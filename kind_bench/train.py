"""The one training loop, shared by ancestry pre-training and every method's transfer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from kind_bench.config import DiffusionConfig, TrainConfig
from kind_bench.diffusion import diffusion_loss, noise_scheduler
from kind_bench.models import null_label


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
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


def snapshot_steps(cfg: TrainConfig) -> list[int]:
    """The steps at which weights are kept, from the configured fractions."""
    return sorted({max(1, round(f * cfg.steps)) for f in cfg.snapshots})


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


def activation_memory_mb(loss_fn: Callable[[], torch.Tensor]) -> float:
    """Bytes saved for backward by one training step, in MiB (the activation memory)."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    return saved / 2**20


def train(
    model: nn.Module,
    params: list[nn.Parameter],
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    diffusion: DiffusionConfig,
    seed: int,
    on_snapshot: Callable[[int, nn.Module], None] | None = None,
    desc: str = "train",
    quiet: bool = False,
) -> TrainResult:
    """Train ``params`` of ``model`` on (images, labels) with the diffusion loss.

    ``images`` are already in model space and on the model's device. Batches are drawn with
    replacement from a generator seeded with ``seed``, so a run is a pure function of its config.
    Peak memory is CUDA's allocator peak on a GPU; on CPU it is weights + gradients + optimizer state
    plus the activations saved by one step (measured, not estimated).
    """
    from tqdm.auto import tqdm

    device = images.device
    set_trainable(model, params)
    model.train()
    scheduler = noise_scheduler(diffusion)
    null = null_label(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    )
    snapshots = set(snapshot_steps(cfg))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def batch_loss() -> torch.Tensor:
        index = torch.randint(0, len(labels), (cfg.batch_size,), generator=generator, device=device)
        return diffusion_loss(model, images[index], labels[index], scheduler, null, diffusion.label_dropout, generator)

    curve: list[tuple[int, float]] = []
    recent: list[float] = []
    activations = 0.0
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, disable=quiet, leave=False, unit="step")
    for step in bar:
        loss = batch_loss()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(f"loss became {value} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        lr_schedule.step()
        recent = (recent + [value])[-20:]
        if step % max(1, cfg.steps // 50) == 0 or step == cfg.steps:
            curve.append((step, sum(recent) / len(recent)))
            bar.set_postfix(loss=f"{curve[-1][1]:.4f}")
        if step in snapshots and on_snapshot is not None:
            model.eval()
            on_snapshot(step, model)
            model.train()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        activations = activation_memory_mb(batch_loss)
        peak = state_memory_mb(params, optimizer, model) + activations
    model.eval()
    return TrainResult(
        steps=cfg.steps,
        final_loss=curve[-1][1],
        train_time_s=elapsed,
        peak_memory_mb=peak,
        trainable_params=sum(p.numel() for p in params),
        loss_curve=curve,
    )
