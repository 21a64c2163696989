"""What several stages share: the device, the codec, the target spec and loading an ancestry."""

from __future__ import annotations

import torch
from torch import nn

from kind_bench.config import Config
from kind_bench.device import pick_device
from kind_bench.io import load_module
from kind_bench.methods import Target, make_ancestry
from kind_bench.models.vae import PixelCodec, VaeCodec, make_codec
from kind_bench.paths import ancestry_weights


def setup(cfg: Config) -> tuple[torch.device, PixelCodec | VaeCodec]:
    """The device (CUDA when present) and the pixel or latent codec."""
    device = pick_device()
    return device, make_codec(cfg.model.vae_path, cfg.data.channels, cfg.data.image_size, device)


def descendant_depth(cfg: Config) -> int:
    """The target model's depth: the ancestry's depth scaled by the task's ``depth_ratio``."""
    return max(1, round(cfg.model.depth * cfg.task.depth_ratio))


def make_target(cfg: Config, codec: PixelCodec | VaeCodec, num_classes: int, depth: int) -> Target:
    """The spec a model is built to."""
    return Target(num_classes=num_classes, depth=depth, model=cfg.model, in_channels=codec.channels,
                  sample_size=codec.size)


def load_ancestry(cfg: Config, name: str, codec: PixelCodec | VaeCodec, device: torch.device) -> nn.Module:
    """Rebuild a pre-trained ancestry from its config and load its weights."""
    ancestry = make_ancestry(cfg, name)
    target = make_target(cfg, codec, len(cfg.suite.ancestry_classes), cfg.model.depth)
    model = ancestry.build(target)
    load_module(ancestry_weights(cfg, name), model, what=f"ancestry checkpoint ({name})")
    return model.to(device).eval()


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (model initialisation draws from it)."""
    torch.manual_seed(seed)
