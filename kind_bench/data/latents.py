"""A latent DiT's training inputs: encoded once, in batches, on the device, cached on disk, reused.

For a model in a VAE's latent space (``model.vae_path``) the training images are encoded through a
DataLoader (``data.workers`` workers; files are read one at a time with ``data.storage=files``) into the
VAE posterior's mean and standard deviation, for the images and, with ``data.flip``, their horizontal
mirror images. The moments go to safetensors shards under ``<artifacts>/latents/<key>/`` with a manifest;
the key hashes the images (:meth:`identity` of the set) and the VAE (its config and weight files), so
every stage and cell that trains on the same images with the same VAE reuses them, and a change to either
makes new ones. Each training step then takes the mean (``data.latents=mean``) or a draw from the
posterior (``sample``, DiT's choice), of a random orientation, times the VAE's scaling factor.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from kind_bench.config import Config
from kind_bench.data.sources import file_loader
from kind_bench.errors import UserError
from kind_bench.io import file_state, load_tensors, save_tensors, write_json

SHARD = 4096  # images per shard
ENCODE_BATCH = 64  # images per VAE call


class PosteriorSet:
    """The cached posterior moments of a set of images (both orientations when flipped)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, scale: float, sample: bool) -> None:
        self.mean, self.std, self.scale, self.sample = mean, std, scale, sample  # (N, orientations, C, H, W)

    def __len__(self) -> int:
        return len(self.mean)

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scaled latents of ``index``: a random orientation each, the mean or a posterior draw."""
        side = torch.randint(0, self.mean.shape[1], (len(index),), generator=generator, device=index.device)
        mean, std = self.mean[index, side], self.std[index, side]
        if self.sample:
            mean = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean * self.scale


def vae_digest(path: str) -> str:
    """SHA-256 of a diffusers VAE folder's config and weight files (hashed once per state of those files: a
    stage asks for it several times, and an SD-VAE is ~330 MB)."""
    files = sorted(f for f in Path(path).rglob("*") if f.is_file() and f.suffix in (".json", ".safetensors"))
    return _hashed(str(path), tuple((f.relative_to(path).as_posix(), *file_state(f)) for f in files))


@functools.lru_cache(maxsize=8)
def _hashed(path: str, state: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in state:
        digest.update(name.encode() + b"\0" + (Path(path) / name).read_bytes())
    return digest.hexdigest()


def training_sources(cfg: Config, data_sha256: str) -> list[str]:
    """What a model trains from besides its config and code, for fingerprints and identities: the prepared
    data's checksum and, in a VAE's latent space, the VAE's contents (replacing the VAE's files at the same
    path must not pass as the same run)."""
    return [data_sha256] if cfg.model.vae_path is None else [data_sha256, f"vae {vae_digest(cfg.model.vae_path)}"]


def cache_dir(cfg: Config, images, flip: bool) -> Path:
    """Where the moments of ``images`` under this VAE live."""
    key = hashlib.sha256(f"{images.identity()}|{vae_digest(cfg.model.vae_path)}|flip={flip}".encode()).hexdigest()
    return Path(cfg.paths.artifacts) / "latents" / key[:24]


def _write_shard(folder: Path, index: int, means: list[torch.Tensor], stds: list[torch.Tensor]) -> None:
    save_tensors(folder / f"shard-{index:05d}.safetensors", {"mean": torch.cat(means), "std": torch.cat(stds)})


def _moments(cfg: Config, images, codec, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The posterior moments of ``images``, batch by batch, on the CPU: (mean, std), each (B, orientations, ...)."""
    for batch, _ in file_loader(images.dataset(), ENCODE_BATCH, cfg.data.workers):
        batch = batch.to(device)
        moments = [codec.moments(side) for side in ([batch, batch.flip(-1)] if cfg.data.flip else [batch])]
        yield torch.stack([m for m, _ in moments], 1).cpu(), torch.stack([s for _, s in moments], 1).cpu()


@torch.no_grad()
def encode_cached(cfg: Config, images, codec, device: torch.device) -> PosteriorSet:
    """The posterior moments of ``images`` (an ImageSet or FileSet), from the cache or encoded now (and
    cached by the first process only; another rank that finds no cache keeps its own encoding in memory)."""
    from kind_bench.distributed import is_main

    folder = cache_dir(cfg, images, cfg.data.flip)
    manifest = folder / "manifest.json"
    sample = cfg.data.latents == "sample"
    if not manifest.is_file() and not is_main():
        mean, std = (torch.cat(parts) for parts in zip(*_moments(cfg, images, codec, device), strict=True))
        return PosteriorSet(mean.to(device), std.to(device), codec.scale, sample=sample)
    if not manifest.is_file():
        means: list[torch.Tensor] = []
        stds: list[torch.Tensor] = []
        shards = 0
        for mean, std in _moments(cfg, images, codec, device):
            means.append(mean)
            stds.append(std)
            if sum(len(m) for m in means) >= SHARD:
                _write_shard(folder, shards, means, stds)
                means, stds, shards = [], [], shards + 1
        if means:
            _write_shard(folder, shards, means, stds)
            shards += 1
        write_json(manifest, {"shards": shards, "images": len(images), "flip": cfg.data.flip})
    info, sides = json.loads(manifest.read_text()), 2 if cfg.data.flip else 1
    if info["images"] != len(images) or info["flip"] != cfg.data.flip:
        raise UserError(f"latent cache {folder} holds {info['images']} x {2 if info['flip'] else 1} posteriors for "
                        f"{len(images)} images (data.flip={cfg.data.flip}): delete it and rerun")
    mean, std = _load_shards(folder, info["shards"], len(images), sides, device)
    return PosteriorSet(mean, std, codec.scale, sample=sample)


def _load_shards(folder: Path, shards: int, images: int, sides: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache's posterior moments, copied shard by shard into tensors allocated once on ``device`` (host
    memory holds the shard being read beyond them, not the whole cache twice); shards that do not add up to
    ``images`` x ``sides`` posteriors are refused."""
    mean = std = None
    filled = 0
    for index in range(shards):
        shard = load_tensors(folder / f"shard-{index:05d}.safetensors", "latent cache shard")
        size = len(shard["mean"])
        if mean is None:
            mean = torch.empty(images, *shard["mean"].shape[1:], dtype=shard["mean"].dtype, device=device)
            std = torch.empty_like(mean)
        if (filled + size > images or shard["mean"].shape[1:] != mean.shape[1:] or mean.shape[1] != sides
                or shard["std"].shape != shard["mean"].shape):
            raise UserError(f"latent cache {folder}: shard {index} does not fit its manifest: delete it and rerun")
        mean[filled : filled + size] = shard["mean"]
        std[filled : filled + size] = shard["std"]
        filled += size
        del shard  # before the next one is read
    if mean is None:
        raise UserError(f"latent cache {folder} has no shards: delete it and rerun")
    if filled != images:
        raise UserError(f"latent cache {folder} holds {filled} of its {images} posteriors: delete it and rerun")
    return mean, std


def training_inputs(cfg: Config, images, codec, device: torch.device):
    """What the training loop draws batches from: pixels on the device, or a latent model's cached posterior."""
    if cfg.model.vae_path is None:
        return codec.encode(images.images.to(device))
    return encode_cached(cfg, images, codec, device)
