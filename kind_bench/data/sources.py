"""Image sources and the deterministic, stratified train / validation / test split.

Two sources share one representation, :class:`ImageSet` (float images in [-1, 1], NCHW):

* ``digits``: scikit-learn's bundled 1,797 real 8x8 handwritten digits (no download).
* ``imagefolder``: any torchvision ``ImageFolder`` root, resized to ``data.image_size`` (8- and 16-bit
  images are both scaled to the full range).

The ``data`` stage writes the prepared set, with its three-way split, to one safetensors file that every
later stage reads. Its header carries the split record: the data config, a SHA-256 of the source (file
names and bytes), sizes and hashes of the validation and test indices. Every stage checks that record
against its own config (so a changed ``data.root`` or ``data.split_seed`` is refused, not silently
mixed), every result records it, and the prepared file's checksum enters every training fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kind_bench.config import Config, DataConfig
from kind_bench.errors import UserError
from kind_bench.io import load_metadata, load_tensors, save_tensors

#: the data config keys that decide the prepared set (a mismatch with the current config is refused)
RECORDED_KEYS = ("name", "root", "image_size", "channels", "test_fraction", "val_fraction", "split_seed")
PARTS = ("train", "val", "test")


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


@dataclass
class Prepared:
    """The three disjoint parts of a prepared source and the record that identifies them."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    record: dict[str, object]

    def part(self, name: str) -> ImageSet:
        """``train``, ``val`` or ``test``."""
        return getattr(self, name)


def _digits() -> tuple[ImageSet, str]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    digest = hashlib.sha256(digits.images.astype(np.float64).tobytes() + digits.target.astype(np.int64).tobytes())
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0 * 2.0 - 1.0
    return ImageSet(images.contiguous(), torch.from_numpy(digits.target).long()), digest.hexdigest()


def read_image(path: str | Path, channels: int):  # -> PIL.Image in mode L or RGB
    """Open one image as 8-bit L or RGB; 16-bit and 32-bit integer images are scaled, not clipped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):  # I;16*, I: integer grey levels wider than 8 bits
                pixels = np.asarray(image, dtype=np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
                image = Image.fromarray(np.round(np.clip(pixels / top, 0, 1) * 255).astype(np.uint8), mode="L")
            return image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"image {path} cannot be read ({str(exc).splitlines()[0]}): replace or remove it") from None


def _imagefolder(cfg: DataConfig) -> tuple[ImageSet, str]:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    if cfg.root is None or not Path(cfg.root).is_dir():
        raise UserError(f"data.root={cfg.root}: no such directory (an ImageFolder root with one folder per class)")
    try:
        folder = ImageFolder(cfg.root, loader=lambda path: read_image(path, cfg.channels))
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"data.root={cfg.root}: {str(exc).splitlines()[0]}") from None
    transform = transforms.Compose([
        transforms.Resize(cfg.image_size),
        transforms.CenterCrop(cfg.image_size),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * cfg.channels, [0.5] * cfg.channels),
    ])
    digest = hashlib.sha256()
    images = []
    for path, _ in folder.samples:
        digest.update(Path(path).relative_to(cfg.root).as_posix().encode() + b"\0")
        digest.update(Path(path).read_bytes())
        images.append(transform(folder.loader(path)))
    return ImageSet(torch.stack(images), torch.tensor(folder.targets, dtype=torch.long)), digest.hexdigest()


def load_source(cfg: DataConfig) -> ImageSet:
    """Load every image of the configured source (no split yet)."""
    return _load(cfg)[0]


def _load(cfg: DataConfig) -> tuple[ImageSet, str]:
    return _digits() if cfg.name == "digits" else _imagefolder(cfg)


def split_parts(labels: torch.Tensor, test_fraction: float, val_fraction: float, seed: int) -> torch.Tensor:
    """A deterministic, stratified assignment of every image to 0 = train, 1 = val, 2 = test."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels.numpy(), random_state=seed)
    _, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=labels.numpy()[rest],
                              random_state=seed)
    part = torch.zeros(len(labels), dtype=torch.uint8)
    part[torch.from_numpy(np.sort(val))] = 1
    part[torch.from_numpy(np.sort(test))] = 2
    return part


def prepared_path(cfg: Config) -> Path:
    """Where the ``data`` stage writes the prepared set."""
    return Path(cfg.paths.artifacts) / "data" / f"{cfg.data.name}.safetensors"


def _index_sha1(part: torch.Tensor, value: int) -> str:
    return hashlib.sha1(torch.nonzero(part == value).flatten().numpy().astype(np.int64).tobytes()).hexdigest()


def prepare(cfg: Config) -> dict[str, object]:
    """Load the source, split it, and write the prepared set. Returns the split record."""
    source, source_sha256 = _load(cfg.data)
    part = split_parts(source.labels, cfg.data.test_fraction, cfg.data.val_fraction, cfg.data.split_seed)
    record: dict[str, object] = {key: getattr(cfg.data, key) for key in RECORDED_KEYS}
    record.update(
        source_sha256=source_sha256,
        **{f"n_{name}": int((part == i).sum()) for i, name in enumerate(PARTS)},
        val_index_sha1=_index_sha1(part, 1),
        test_index_sha1=_index_sha1(part, 2),
    )
    save_tensors(prepared_path(cfg), {"images": source.images.float(), "labels": source.labels, "part": part},
                 metadata={"record": json.dumps(record, sort_keys=True)})
    return {**record, "data_sha256": load_metadata(prepared_path(cfg))["sha256"]}


def load_prepared(cfg: Config) -> Prepared:
    """The train, validation and test sets written by the ``data`` stage, and their record.

    The record (with ``data_sha256``, the prepared file's checksum) must describe ``cfg.data``: a prepared
    file made from another root, size or split is refused with the command that remakes it.
    """
    path = prepared_path(cfg)
    tensors = load_tensors(path, "prepared data", hint="`dvc repro data` (or `kind-bench data`)")
    meta = load_metadata(path, "prepared data")
    if "record" not in meta or "part" not in tensors:
        raise UserError(f"prepared data {path} is from an older kind-bench: rerun `kind-bench data` (dvc repro data)")
    record = json.loads(meta["record"])
    for key in RECORDED_KEYS:
        if record.get(key) != getattr(cfg.data, key):
            raise UserError(f"prepared data {path} was made with data.{key}={record.get(key)!r}, not "
                            f"{getattr(cfg.data, key)!r}: rerun `kind-bench data` with this config (dvc repro data)")
    full = ImageSet(tensors["images"], tensors["labels"].long())
    parts = [full.subset(tensors["part"] == i) for i in range(len(PARTS))]
    return Prepared(*parts, record={**record, "data_sha256": meta["sha256"]})
