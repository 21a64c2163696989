"""Pixel space or a local diffusers VAE's latent space (DiT on ImageNet runs on SD-VAE latents)."""

from __future__ import annotations

from pathlib import Path

import torch

from kind_bench.errors import UserError


class PixelCodec:
    """The identity: the DiT models pixels directly (the embedded digits default)."""

    def __init__(self, channels: int, size: int) -> None:
        self.channels, self.size = channels, size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> model space."""
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model space -> images in [-1, 1]."""
        return latents.clamp(-1, 1)


class VaeCodec:
    """A diffusers ``AutoencoderKL`` loaded from a local folder (no hub access), latents scaled by its
    ``scaling_factor`` (0.18215 for the SD-VAE, as in the DiT reference code)."""

    def __init__(self, path: str, image_size: int, device: torch.device) -> None:
        from diffusers import AutoencoderKL

        if not Path(path).is_dir():
            raise UserError(f"model.vae_path={path}: no such directory (a diffusers AutoencoderKL folder)")
        try:
            self.vae = AutoencoderKL.from_pretrained(path, local_files_only=True, use_safetensors=True).to(device)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise UserError(f"model.vae_path={path}: not a loadable AutoencoderKL ({first})") from None
        self.vae.requires_grad_(False).eval()
        self.scale = float(self.vae.config.scaling_factor)
        self.channels = int(self.vae.config.latent_channels)
        self.size = image_size // 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latent means."""
        return self.vae.encode(images).latent_dist.mean * self.scale

    @torch.no_grad()
    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> the posterior's (mean, std), unscaled."""
        posterior = self.vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.vae.decode(latents / self.scale).sample.clamp(-1, 1)


def make_codec(vae_path: str | None, channels: int, image_size: int, device: torch.device) -> PixelCodec | VaeCodec:
    """Pixel codec by default; the VAE's latent codec when ``model.vae_path`` is set."""
    if vae_path is None:
        return PixelCodec(channels, image_size)
    return VaeCodec(vae_path, image_size, device)
