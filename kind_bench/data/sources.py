"""Image sources and the deterministic, stratified train/test split.

Two sources share one representation, :class:`ImageSet` (float images in [-1, 1], NCHW):

* ``digits``: scikit-learn's bundled 1,797 real 8x8 handwritten digits (no download).
* ``imagefolder``: any torchvision ``ImageFolder`` root, resized to ``data.image_size``.

The ``data`` stage writes the prepared set, with its split, to one safetensors file that every later
stage reads; the split is recorded (seed, fraction, a hash of the test indices) in every result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kind_bench.config import Config, DataConfig
from kind_bench.errors import UserError
from kind_bench.io import load_tensors, save_tensors


@dataclass
class ImageSet:
    """Images in [-1, 1] with shape (N, C, H, W) and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index: torch.Tensor) -> ImageSet:
        """The images selected by a boolean mask or an index tensor."""
        return ImageSet(self.images[mask_or_index], self.labels[mask_or_index])

    def classes(self) -> list[int]:
        """The distinct labels, sorted."""
        return sorted(int(c) for c in torch.unique(self.labels))


def _digits() -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0 * 2.0 - 1.0
    return ImageSet(images.contiguous(), torch.from_numpy(digits.target).long())


def _imagefolder(cfg: DataConfig) -> ImageSet:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    if cfg.root is None or not Path(cfg.root).is_dir():
        raise UserError(f"data.root={cfg.root}: no such directory (an ImageFolder root with one folder per class)")
    steps = [transforms.Grayscale(1)] if cfg.channels == 1 else [transforms.Lambda(lambda im: im.convert("RGB"))]
    steps += [
        transforms.Resize(cfg.image_size),
        transforms.CenterCrop(cfg.image_size),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * cfg.channels, [0.5] * cfg.channels),
    ]
    try:
        folder = ImageFolder(cfg.root, transform=transforms.Compose(steps))
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"data.root={cfg.root}: {exc}") from None
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    return ImageSet(images, torch.tensor(folder.targets, dtype=torch.long))


def load_source(cfg: DataConfig) -> ImageSet:
    """Load every image of the configured source (no split yet)."""
    if cfg.name == "digits":
        return _digits()
    return _imagefolder(cfg)


def split_mask(labels: torch.Tensor, test_fraction: float, seed: int) -> torch.Tensor:
    """A deterministic, stratified boolean test mask (True = test)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    _, test = train_test_split(index, test_size=test_fraction, stratify=labels.numpy(), random_state=seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[torch.from_numpy(np.sort(test))] = True
    return mask


def prepared_path(cfg: Config) -> Path:
    """Where the ``data`` stage writes the prepared set."""
    return Path(cfg.paths.artifacts) / "data" / f"{cfg.data.name}.safetensors"


def prepare(cfg: Config) -> dict[str, object]:
    """Load the source, split it, and write the prepared set. Returns the split record."""
    source = load_source(cfg.data)
    is_test = split_mask(source.labels, cfg.data.test_fraction, cfg.data.split_seed)
    record = split_record(is_test, cfg.data)
    save_tensors(
        prepared_path(cfg),
        {"images": source.images.float(), "labels": source.labels, "is_test": is_test.to(torch.uint8)},
        metadata={"split_sha1": str(record["test_index_sha1"])},
    )
    return record


def split_record(is_test: torch.Tensor, cfg: DataConfig) -> dict[str, object]:
    """What identifies a split: seed, fraction, sizes and a hash of the test indices."""
    test_index = torch.nonzero(is_test).flatten().numpy().astype(np.int64)
    return {
        "source": cfg.name,
        "split_seed": cfg.split_seed,
        "test_fraction": cfg.test_fraction,
        "n_train": int((~is_test).sum()),
        "n_test": int(is_test.sum()),
        "test_index_sha1": hashlib.sha1(test_index.tobytes()).hexdigest(),
    }


def load_prepared(cfg: Config) -> tuple[ImageSet, ImageSet, dict[str, object]]:
    """The (train, test) sets written by the ``data`` stage, and the split record."""
    tensors = load_tensors(prepared_path(cfg), "prepared data")
    is_test = tensors["is_test"].bool()
    full = ImageSet(tensors["images"], tensors["labels"].long())
    return full.subset(~is_test), full.subset(is_test), split_record(is_test, cfg.data)
