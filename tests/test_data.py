"""The data layer: embedded digits, the stratified split, task views, and ImageFolder roots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kind_bench.config import DataConfig, TaskConfig
from kind_bench.data.sources import load_source, split_mask
from kind_bench.data.tasks import DOMAINS, ancestry_set, target_set
from kind_bench.errors import UserError


def test_digits_are_the_real_embedded_set_scaled_to_unit_range():
    digits = load_source(DataConfig())
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.images.min() == -1 and digits.images.max() == 1
    assert digits.classes() == list(range(10))


def test_split_is_deterministic_and_stratified():
    labels = load_source(DataConfig()).labels
    a, b = split_mask(labels, 0.3, seed=0), split_mask(labels, 0.3, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, split_mask(labels, 0.3, seed=1))
    for c in range(10):
        share = a[labels == c].float().mean()
        assert abs(share - 0.3) < 0.02


def test_task_views_relabel_and_move_the_target_into_its_domain():
    digits = load_source(DataConfig())
    base = ancestry_set(digits, [0, 1, 2, 3, 4])
    assert base.classes() == [0, 1, 2, 3, 4]
    task = TaskConfig(target_classes=[5, 6, 7, 8, 9], domain="invert_rot90")
    target = target_set(digits, task)
    assert target.classes() == [0, 1, 2, 3, 4]
    first_five = digits.images[digits.labels == 5][0]
    torch.testing.assert_close(target.images[0], DOMAINS["invert_rot90"](first_five.unsqueeze(0))[0])


def test_few_shot_keeps_k_per_class_chosen_by_the_seed():
    digits = load_source(DataConfig())
    task = TaskConfig()
    a, b = target_set(digits, task, shots=10, seed=0), target_set(digits, task, shots=10, seed=1)
    assert torch.bincount(a.labels).tolist() == [10] * 5
    assert not torch.equal(a.images, b.images)
    with pytest.raises(UserError, match="task.shots=500"):
        target_set(digits, task, shots=500)


def test_unknown_classes_and_domains_are_named():
    digits = load_source(DataConfig())
    with pytest.raises(UserError, match=r"task.target_classes lists \[11\]"):
        target_set(digits, TaskConfig(target_classes=[5, 11]))
    with pytest.raises(UserError, match="task.domain='sepia' is not one of"):
        target_set(digits, TaskConfig(domain="sepia"))


def test_imagefolder_root_loads_resized_images_with_folder_labels(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    images = load_source(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, channels=3))
    assert images.images.shape == (6, 3, 8, 8)
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.images.min() >= -1 and images.images.max() <= 1


def test_missing_imagefolder_root_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="data.root=.*no such directory"):
        load_source(DataConfig(name="imagefolder", root=str(tmp_path / "nope")))
