"""Task views of a prepared set: which classes, which visual domain, how many shots.

Pre-training sees the suite's ancestry classes in the source domain; transfer sees the task's target
classes moved into the task's domain. Both are relabelled 0..K-1 in the listed order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kind_bench.config import TaskConfig
from kind_bench.data.sources import ImageSet
from kind_bench.errors import UserError, choices_error


def identity(images: torch.Tensor) -> torch.Tensor:
    """The source domain, unchanged."""
    return images


def invert_rot90(images: torch.Tensor) -> torch.Tensor:
    """Intensity-inverted and rotated 90 degrees counter-clockwise."""
    return torch.rot90(-images, k=1, dims=(-2, -1))


def thick(images: torch.Tensor) -> torch.Tensor:
    """Thicker strokes: grey-level dilation with a 3x3 cross, blended with the original."""
    ink = (images + 1) / 2
    dilated = torch.nn.functional.max_pool2d(ink, kernel_size=3, stride=1, padding=1)
    horizontal = torch.maximum(ink.roll(1, -1), ink.roll(-1, -1))
    cross = torch.maximum(horizontal, torch.maximum(ink.roll(1, -2), ink.roll(-1, -2)))
    thickened = torch.maximum(ink, 0.75 * torch.minimum(cross, dilated))
    return thickened * 2 - 1


DOMAINS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": identity,
    "invert_rot90": invert_rot90,
    "thick": thick,
}


def domain_transform(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image transform of a named domain."""
    if name not in DOMAINS:
        raise choices_error("task.domain", name, tuple(DOMAINS))
    return DOMAINS[name]


def select_classes(
    data: ImageSet, classes: list[int], key: str, shots: int | None = None, seed: int = 0
) -> ImageSet:
    """The images of ``classes``, relabelled 0..K-1 in the listed order.

    ``shots`` keeps that many images per class, chosen with ``seed`` (the run seed, so every method
    with the same seed sees the same few-shot subset). ``key`` names the config key in errors.
    """
    available = set(data.classes())
    missing = [c for c in classes if c not in available]
    if missing:
        raise UserError(f"{key} lists {missing}, which the data does not have (valid: {sorted(available)})")
    keep: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    generator = torch.Generator().manual_seed(seed)
    for new, old in enumerate(classes):
        index = torch.nonzero(data.labels == old).flatten()
        if shots is not None:
            if shots > len(index):
                raise UserError(f"task.shots={shots} exceeds the {len(index)} images of class {old}")
            index = index[torch.randperm(len(index), generator=generator)[:shots]].sort().values
        keep.append(index)
        labels.append(torch.full((len(index),), new, dtype=torch.long))
    return data.subset(torch.cat(keep)).relabel(torch.cat(labels))


def ancestry_set(data: ImageSet, classes: list[int]) -> ImageSet:
    """The pre-training view: the suite's ancestry classes in the source domain."""
    return select_classes(data, classes, "suite.ancestry_classes")


def target_set(data: ImageSet, task: TaskConfig, shots: int | None = None, seed: int = 0) -> ImageSet:
    """The transfer view: the task's target classes, moved into the task's domain."""
    chosen = select_classes(data, task.target_classes, "task.target_classes", shots, seed)
    return chosen.map(domain_transform(task.domain), task.domain)
