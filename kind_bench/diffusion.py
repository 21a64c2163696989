"""The diffusion process shared by every method: DDPM training loss and a diffusers sampler.

Training: diffusers' ``DDPMScheduler`` adds noise at a uniform random timestep, the model predicts the
noise (epsilon), and the loss is the MSE. With probability ``diffusion.label_dropout`` a sample's label
is replaced by the null label, for classifier-free guidance.

Sampling: diffusers' DDIM or DPM-Solver++ built from the same noise schedule. With guidance scale s > 1
every model call sees the batch [conditional; unconditional] and combines
eps = eps_u + s (eps_c - eps_u), as in the DiT reference code.
"""

from __future__ import annotations

import torch
from torch import nn

from kind_bench.config import DiffusionConfig, SampleConfig


def noise_scheduler(cfg: DiffusionConfig):  # -> diffusers.DDPMScheduler
    """The training noise schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type="epsilon", clip_sample=False)


def sampling_scheduler(train_scheduler, cfg: SampleConfig):  # -> diffusers scheduler
    """A fresh DDPM, DDIM or DPM-Solver++ scheduler over the same noise schedule (they carry state)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if cfg.scheduler == "ddpm":  # ancestral, stochastic: DiT's 250-step sampler
        scheduler = DDPMScheduler.from_config(train_scheduler.config)
    elif cfg.scheduler == "ddim":
        scheduler = DDIMScheduler.from_config(train_scheduler.config)
    else:  # "leading" spacing: with the cosine schedule alpha_bar(999) ~ 0, and starting there diverges
        scheduler = DPMSolverMultistepScheduler.from_config(
            train_scheduler.config, timestep_spacing="leading", steps_offset=1
        )
    scheduler.set_timesteps(cfg.steps)
    return scheduler


def diffusion_loss(
    model: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor,
    scheduler,
    null: int,
    label_dropout: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Epsilon-prediction MSE at random timesteps, with label dropout to the ``null`` label. Every random
    draw is for the whole (global) batch; a rank of a multi-process run then keeps its slice."""
    from kind_bench.distributed import local_slice

    n = x0.shape[0]
    device = x0.device
    noise = torch.randn(x0.shape, generator=generator, device=device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator, device=device)
    drop = torch.rand(n, generator=generator, device=device) < label_dropout
    labels = torch.where(drop, torch.full_like(labels, null), labels)
    mine = local_slice(n)
    x0, noise, t, labels = x0[mine], noise[mine], t[mine], labels[mine]
    noisy = scheduler.add_noise(x0, noise, t)
    pred = model(noisy, timestep=t, class_labels=labels).sample
    return torch.nn.functional.mse_loss(pred, noise)


class DiffusionObjective:
    """The generation track's training objective (:func:`diffusion_loss` under one noise schedule)."""

    def __init__(self, cfg: DiffusionConfig, null: int) -> None:
        self.scheduler = noise_scheduler(cfg)
        self.null = null
        self.label_dropout = cfg.label_dropout

    def __call__(self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        return diffusion_loss(model, x0, labels, self.scheduler, self.null, self.label_dropout, generator)


def image_generators(seed: int, indices: torch.Tensor, device: torch.device) -> list[torch.Generator]:
    """One generator per image for a stochastic sampler's step noise, seeded by (``seed``, the image's index
    in its draw): an image's noise then does not depend on its batch, its process or the images sampled
    with it, so methods that batch differently still share it (paired comparisons) and ranks do not
    repeat each other's. Their seeds lie above 2^32, apart from the starting noise's ``seed``."""
    return [torch.Generator(device=device).manual_seed(((seed + 1) << 32) + int(i)) for i in indices]


@torch.no_grad()
def sample(
    model: nn.Module,
    labels: torch.Tensor,
    noise: torch.Tensor,
    train_scheduler,
    cfg: SampleConfig,
    null: int,
    generator: torch.Generator | list[torch.Generator],
    progress: bool = False,
) -> torch.Tensor:
    """Denoise ``noise`` (one starting point per label) into images in the model's data space; a stochastic
    sampler (DDPM) draws its step noise from ``generator`` (or one generator per image:
    :func:`image_generators`)."""
    from tqdm.auto import tqdm

    scheduler = sampling_scheduler(train_scheduler, cfg)
    guidance_scale = cfg.guidance_scale
    device = labels.device
    x = noise.to(device)
    step_kwargs = {"generator": generator} if cfg.scheduler == "ddpm" else {}
    guided = guidance_scale > 1
    call_labels = torch.cat([labels, torch.full_like(labels, null)]) if guided else labels
    for t in tqdm(scheduler.timesteps, desc=f"sample {len(labels)}", disable=not progress, leave=False, unit="step"):
        inp = torch.cat([x, x]) if guided else x
        timestep = torch.full((len(call_labels),), int(t), device=device, dtype=torch.long)
        eps = model(inp, timestep=timestep, class_labels=call_labels).sample
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x
