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

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kind_bench.config import Config, DataConfig
from kind_bench.errors import UserError
from kind_bench.io import load_metadata, load_tensors, save_tensors

#: the data config keys that decide the prepared set (a mismatch with the current config is refused)
RECORDED_KEYS = ("name", "root", "image_size", "channels", "test_fraction", "val_fraction", "split_seed", "storage")
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
        return ImageSet(self.images[mask_or_index].contiguous(), self.labels[mask_or_index])

    def relabel(self, labels: torch.Tensor) -> ImageSet:
        """The same images with new labels."""
        return ImageSet(self.images, labels)

    def map(self, transform: Callable[[torch.Tensor], torch.Tensor], name: str) -> ImageSet:
        """The images moved into a domain (``name`` identifies the transform)."""
        return ImageSet(transform(self.images).contiguous(), self.labels)

    def classes(self) -> list[int]:
        """The distinct labels, sorted."""
        return sorted(int(c) for c in torch.unique(self.labels))

    def identity(self) -> str:
        """What the images are, for caches: a checksum of the tensor."""
        from kind_bench.io import checksum

        return checksum({"images": self.images})

    def dataset(self) -> Dataset:
        """A Dataset of ([-1, 1] image, label) pairs (for a DataLoader)."""
        return TensorDataset(self.images, self.labels)


class FileSet:
    """An ImageFolder part that stays on disk: file paths and labels; images are read (and resized, and
    moved into a domain) one at a time by :meth:`dataset`, through a DataLoader's workers. Large
    datasets use it (``data.storage=files``): nothing holds the whole dataset as one tensor."""

    def __init__(self, cfg: DataConfig, paths: list[str], labels: torch.Tensor, source_sha256: str,
                 domains: tuple[tuple[str, Callable], ...] = ()) -> None:
        self.cfg, self.paths, self.labels, self.domains = cfg, paths, labels, domains
        self.source_sha256 = source_sha256  # of every file's name and bytes, taken by the data stage

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> FileSet:
        """The files selected by a boolean mask or an index tensor."""
        index = torch.nonzero(index).flatten() if index.dtype == torch.bool else index
        return FileSet(self.cfg, [self.paths[i] for i in index.tolist()], self.labels[index], self.source_sha256,
                       self.domains)

    def relabel(self, labels: torch.Tensor) -> FileSet:
        """The same files with new labels."""
        return FileSet(self.cfg, self.paths, labels, self.source_sha256, self.domains)

    def map(self, transform: Callable[[torch.Tensor], torch.Tensor], name: str) -> FileSet:
        """The files, moved into a domain as they are read."""
        return FileSet(self.cfg, self.paths, self.labels, self.source_sha256, (*self.domains, (name, transform)))

    def classes(self) -> list[int]:
        """The distinct labels, sorted."""
        return sorted(int(c) for c in torch.unique(self.labels))

    def identity(self) -> str:
        """What the images are, for caches: the source's hash (names and bytes), these files and the domains."""
        text = json.dumps([self.source_sha256, self.cfg.root, self.cfg.image_size, self.cfg.channels, self.paths,
                           [name for name, _ in self.domains]])
        return hashlib.sha256(text.encode()).hexdigest()

    def dataset(self) -> Dataset:
        """A Dataset of ([-1, 1] image, label) pairs read from the files."""
        return _Files(self)

    @property
    def images(self) -> torch.Tensor:
        """Every image as one tensor: refused (the point of ``data.storage=files``)."""
        raise UserError("this data part streams from files (data.storage=files); its consumer needs a DataLoader "
                        "(a latent model: set model.vae_path)")


class _Files(Dataset):
    def __init__(self, files: FileSet) -> None:
        from torchvision import transforms

        self.files = files
        size, channels = files.cfg.image_size, files.cfg.channels
        self.transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                             transforms.ToTensor(), transforms.Normalize([0.5] * channels,
                                                                                          [0.5] * channels)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(read_image(Path(self.files.cfg.root) / self.files.paths[i], self.files.cfg.channels))
        for _, transform in self.files.domains:
            image = transform(image.unsqueeze(0))[0]
        return image, self.files.labels[i]


@dataclass
class Prepared:
    """The three disjoint parts of a prepared source and the record that identifies them."""

    train: ImageSet | FileSet
    val: ImageSet | FileSet
    test: ImageSet | FileSet
    record: dict[str, object]

    def part(self, name: str) -> ImageSet | FileSet:
        """``train``, ``val`` or ``test``."""
        return getattr(self, name)


def _digits() -> tuple[ImageSet, str]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    digest = hashlib.sha256(digits.images.astype(np.float64).tobytes() + digits.target.astype(np.int64).tobytes())
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0 * 2.0 - 1.0
    return ImageSet(images.contiguous(), torch.from_numpy(digits.target).long()), digest.hexdigest()


def in_memory(part: ImageSet | FileSet, workers: int) -> ImageSet:
    """``part`` as tensors: an ImageSet as it is, a FileSet read whole through ``workers`` DataLoader workers.
    For consumers that need every image at once and are meant for small sets: the digits-style evaluator
    CNN, e.g. in ``make gpu-check``."""
    if isinstance(part, ImageSet):
        return part
    images = [batch for batch, _ in file_loader(part.dataset(), 256, workers)]
    return ImageSet(torch.cat(images), part.labels)


def may_start_workers(workers: int) -> bool:
    """Whether files are read by worker processes: ``data.workers`` > 0, and this is not a daemonic process
    (a cell of a CPU sweep's pool), which may not start children."""
    import multiprocessing

    return workers > 0 and not multiprocessing.current_process().daemon


def file_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    """Batches of ``dataset`` in order, read by ``workers`` processes (``data.workers``) where
    :func:`may_start_workers`, else by this one."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers if may_start_workers(workers) else 0,
                      shuffle=False)


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


def _folder_index(cfg: DataConfig) -> tuple[list[str], torch.Tensor, str]:
    """(relative paths, labels, SHA-256 of names and bytes) of an ImageFolder root, without decoding."""
    from torchvision.datasets import ImageFolder

    if cfg.root is None or not Path(cfg.root).is_dir():
        raise UserError(f"data.root={cfg.root}: no such directory (an ImageFolder root with one folder per class)")
    try:
        folder = ImageFolder(cfg.root, loader=lambda path: path)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"data.root={cfg.root}: {str(exc).splitlines()[0]}") from None
    digest = hashlib.sha256()
    paths = []
    for path, _ in folder.samples:
        relative = Path(path).relative_to(cfg.root).as_posix()
        digest.update(relative.encode() + b"\0" + Path(path).read_bytes())
        paths.append(relative)
    return paths, torch.tensor(folder.targets, dtype=torch.long), digest.hexdigest()


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


def source_config(cfg: Config, task: bool = False) -> DataConfig:
    """The data a stage reads: the suite's, or with ``task`` the task's own root when it has one."""
    if task and cfg.task.root is not None:
        return dataclasses.replace(cfg.data, root=cfg.task.root)
    return cfg.data


def prepared_path(cfg: Config, task: bool = False) -> Path:
    """Where the ``data`` stage writes the prepared set (the suite's, or a task root's)."""
    name = cfg.data.name if not (task and cfg.task.root) else f"{cfg.data.name}-task-{cfg.task.name}"
    return Path(cfg.paths.artifacts) / "data" / f"{name}.safetensors"


def _digest_tensor(hexdigest: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(hexdigest), dtype=torch.uint8)


def _index_sha1(part: torch.Tensor, value: int) -> str:
    return hashlib.sha1(torch.nonzero(part == value).flatten().numpy().astype(np.int64).tobytes()).hexdigest()


def prepare(cfg: Config, task: bool = False) -> dict[str, object]:
    """Load the source (or, with ``data.storage=files``, only index it), split it, and write the prepared
    set (the suite's, or with ``task`` the task root's). Returns the split record."""
    data = source_config(cfg, task)
    if data.storage == "files":
        paths, labels, source_sha256 = _folder_index(data)
        # the files' hash as a tensor, so that the prepared file's checksum (data_sha256: what ancestries,
        # fingerprints and latent caches are keyed by) changes with the pixels, not only with the names
        tensors: dict[str, torch.Tensor] = {"labels": labels, "source_sha256": _digest_tensor(source_sha256)}
    else:
        source, source_sha256 = _load(data)
        labels, paths = source.labels, None
        tensors = {"images": source.images.float(), "labels": labels}
    part = split_parts(labels, data.test_fraction, data.val_fraction, data.split_seed)
    record: dict[str, object] = {key: getattr(data, key) for key in RECORDED_KEYS}
    record.update(
        source_sha256=source_sha256,
        **{f"n_{name}": int((part == i).sum()) for i, name in enumerate(PARTS)},
        val_index_sha1=_index_sha1(part, 1),
        test_index_sha1=_index_sha1(part, 2),
    )
    meta = {"record": json.dumps(record, sort_keys=True)}
    if paths is not None:
        meta["paths"] = json.dumps(paths)
    save_tensors(prepared_path(cfg, task), {**tensors, "part": part}, metadata=meta)
    return {**record, "data_sha256": load_metadata(prepared_path(cfg, task))["sha256"]}


def load_prepared(cfg: Config, task: bool = False) -> Prepared:
    """The train, validation and test sets written by the ``data`` stage (the suite's, or with ``task`` the
    task's own root's), and their record.

    The record (with ``data_sha256``, the prepared file's checksum) must describe the data config: a
    prepared file made from another root, size or split is refused with the command that remakes it.
    """
    data = source_config(cfg, task)
    path = prepared_path(cfg, task)
    tensors = load_tensors(path, "prepared data", hint="`dvc repro data` (or `kind-bench data`)")
    meta = load_metadata(path, "prepared data")
    if "record" not in meta or "part" not in tensors:
        raise UserError(f"prepared data {path} is from an older kind-bench: rerun `kind-bench data` (dvc repro data)")
    record = json.loads(meta["record"])
    for key in RECORDED_KEYS:
        if record.get(key) != getattr(data, key):
            raise UserError(f"prepared data {path} was made with data.{key}={record.get(key)!r}, not "
                            f"{getattr(data, key)!r}: rerun `kind-bench data` with this config (dvc repro data)")
    if "paths" in meta:
        if "source_sha256" not in tensors or _digest_tensor(record["source_sha256"]).ne(tensors["source_sha256"]).any():
            raise UserError(f"prepared data {path} does not carry its files' hash: rerun `kind-bench data` "
                            "(dvc repro data)")
        full: ImageSet | FileSet = FileSet(data, json.loads(meta["paths"]), tensors["labels"].long(),
                                           record["source_sha256"])
    else:
        full = ImageSet(tensors["images"], tensors["labels"].long())
    parts = [full.subset(tensors["part"] == i) for i in range(len(PARTS))]
    return Prepared(*parts, record={**record, "data_sha256": meta["sha256"]})
