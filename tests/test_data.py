"""The data layer: embedded digits, the stratified split, task views, and ImageFolder roots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kind_bench.cli import main
from kind_bench.config import DataConfig, TaskConfig, compose
from kind_bench.data.sources import load_prepared, load_source, read_image, split_parts
from kind_bench.data.tasks import DOMAINS, ancestry_set, target_set
from kind_bench.errors import UserError


def test_digits_are_the_real_embedded_set_scaled_to_unit_range():
    digits = load_source(DataConfig())
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.images.min() == -1 and digits.images.max() == 1
    assert digits.classes() == list(range(10))


def test_split_is_deterministic_and_stratified_into_three_parts():
    labels = load_source(DataConfig()).labels
    a, b = split_parts(labels, 0.3, 0.2, seed=0), split_parts(labels, 0.3, 0.2, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, split_parts(labels, 0.3, 0.2, seed=1))
    for c in range(10):
        mine = a[labels == c]
        assert abs((mine == 2).float().mean() - 0.3) < 0.02 and abs((mine == 1).float().mean() - 0.2) < 0.02


def test_train_validation_and_test_images_are_disjoint_and_recorded(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    prepared = load_prepared(compose([]))
    source = load_source(DataConfig())
    index = {name: {source.images.flatten(1).tolist().index(row) for row in part.images.flatten(1).tolist()}
             for name, part in (("train", prepared.train), ("val", prepared.val), ("test", prepared.test))}
    assert not index["train"] & index["val"] and not index["train"] & index["test"] and not index["val"] & index["test"]
    record = prepared.record
    assert (record["n_train"], record["n_val"], record["n_test"]) == (len(prepared.train), len(prepared.val),
                                                                      len(prepared.test))
    assert record["n_train"] + record["n_val"] + record["n_test"] == 1797
    assert record["val_index_sha1"] != record["test_index_sha1"] and len(record["source_sha256"]) == 64


def test_prepared_data_of_another_data_config_is_refused(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    with pytest.raises(UserError, match=r"was made with data.split_seed=0, not 1: rerun `kind-bench data`"):
        load_prepared(compose(["data.split_seed=1"]))


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


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    pixels = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # up to 63,000 of 65,535
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    image = np.asarray(read_image(tmp_path / "deep.png", channels=1), dtype=float)
    np.testing.assert_allclose(image, np.round(pixels / 65535 * 255), atol=0.5)
    assert (image == 255).mean() < 0.02  # the old convert("L") turned most pixels white


def test_an_imagefolder_root_changes_the_source_hash(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "root" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "root" / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    overrides = ["data=imagefolder", f"data.root={tmp_path / 'root'}", "data.image_size=8", "data.channels=1"]
    assert main(["data", *overrides]) == 0
    first = load_prepared(compose(overrides)).record["source_sha256"]
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "root" / "a" / "0.png")
    assert main(["data", *overrides]) == 0
    assert load_prepared(compose(overrides)).record["source_sha256"] != first


def test_a_corrupt_image_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UserError, match=r"image .*bad.png cannot be read"):
        load_source(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, channels=1))


def test_missing_imagefolder_root_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="data.root=.*no such directory"):
        load_source(DataConfig(name="imagefolder", root=str(tmp_path / "nope")))
