"""Metric sanity: real data against itself scores near zero; noise scores badly."""

from __future__ import annotations

import math
import os

import pytest
import torch

from kind_bench.config import compose
from kind_bench.data import load_prepared, target_set
from kind_bench.errors import UserError
from kind_bench.metrics import DIRECTION
from kind_bench.metrics.fidelity import Scorer, class_accuracy, quality_metrics, to_uint8
from kind_bench.paths import evaluator_weights


@pytest.fixture(scope="module")
def real(workspace):
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        cfg = compose([])
        prepared = load_prepared(cfg)
        train, test = prepared.train, prepared.test
        weights = evaluator_weights(cfg).resolve()
    finally:
        os.chdir(cwd)
    return cfg, target_set(train, cfg.task), target_set(test, cfg.task), weights


def test_real_test_images_against_real_train_images_score_near_zero(real):
    cfg, train, test, weights = real
    subset = train.images[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:250]]
    scores = quality_metrics(subset, test.images, cfg.eval, weights, torch.device("cpu"))
    assert set(scores) == {"fd_digits", "is_digits", "is_gap_digits", "kid_digits", "precision_digits",
                           "recall_digits"}
    assert scores["fd_digits"] < 1.0
    assert abs(scores["kid_digits"]) < 0.1
    assert 4.0 < scores["is_digits"] <= 5.0 + 0.5  # near the 5 target classes
    assert scores["precision_digits"] > 0.7 and scores["recall_digits"] > 0.7


def test_uniform_noise_scores_badly(real):
    cfg, train, test, weights = real
    noise = torch.rand(250, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = quality_metrics(noise, test.images, cfg.eval, weights, torch.device("cpu"))
    assert scores["fd_digits"] > 10.0
    assert scores["precision_digits"] < 0.1 and scores["is_digits"] < 3.5


def test_class_accuracy_agrees_with_real_labels_and_not_with_shuffled_ones(real):
    cfg, _, test, weights = real
    source_ids = torch.tensor(cfg.task.target_classes)[test.labels]
    assert class_accuracy(test.images, source_ids, weights) > 0.9
    wrong = torch.tensor(cfg.task.target_classes)[(test.labels + 1) % 5]
    assert class_accuracy(test.images, wrong, weights) < 0.1


def better_or_equal(metric: str, a: float, b: float) -> bool:
    return a <= b if DIRECTION[metric] == "lower" else a >= b


def test_the_direction_table_ranks_real_data_above_noise_and_above_a_collapsed_sampler(real):
    """Every directed metric prefers real images to noise; every one but precision (fidelity alone) also
    prefers them to a mode-collapsed set (each class one real image, repeated); IS has no direction."""
    cfg, train, test, weights = real
    g = torch.Generator().manual_seed(0)
    index = torch.randperm(len(train), generator=g)[:250]
    real_images, real_ids = train.images[index], train.labels[index]
    noise = torch.rand(250, 1, 8, 8, generator=g) * 2 - 1
    first = torch.stack([torch.nonzero(real_ids == c)[0, 0] for c in range(5)])
    collapsed = real_images[first].repeat_interleave(50, dim=0)
    collapsed_ids = real_ids[first].repeat_interleave(50)
    scorer = Scorer(test.images, cfg.eval, weights, torch.device("cpu"))
    ids = torch.tensor(cfg.task.target_classes)
    scores = {name: scorer(images, ids[labels]) for name, images, labels in
              (("real", real_images, real_ids), ("noise", noise, real_ids), ("collapsed", collapsed, collapsed_ids))}
    directed = [m for m in scores["real"] if DIRECTION[m]]
    assert set(directed) == set(scores["real"]) - {"is_digits"} and DIRECTION["is_digits"] is None
    for metric in directed:
        assert better_or_equal(metric, scores["real"][metric], scores["noise"][metric]), metric
    for metric in set(directed) - {"precision_digits", "class_accuracy"}:
        assert better_or_equal(metric, scores["real"][metric], scores["collapsed"][metric]), metric
        assert scores["real"][metric] != scores["collapsed"][metric], metric


def test_uint8_conversion_round_trips_the_unit_range():
    x = torch.tensor([[-1.0, 0.0, 1.0]]).view(1, 1, 1, 3)
    out = to_uint8(x)
    assert out.shape == (1, 3, 1, 3) and out.dtype == torch.uint8
    assert out[0, 0, 0].tolist() == [0, 128, 255]


def test_the_scorer_featurises_its_reference_once_and_equals_torch_fidelitys_calculate_metrics(real, monkeypatch):
    from torch_fidelity import calculate_metrics

    from kind_bench.metrics import fidelity

    cfg, train, test, weights = real
    calls = []
    real_features = fidelity.get_featuresdict_from_dataset
    monkeypatch.setattr(fidelity, "get_featuresdict_from_dataset", lambda data, *a: calls.append(len(data)) or
                        real_features(data, *a))
    scorer = Scorer(test.images, cfg.eval, weights, torch.device("cpu"))
    draws = [train.images[:150], train.images[150:300]]
    scores = [scorer.quality(d) for d in draws]
    assert calls == [len(test), 150, 150]  # the reference once, then each draw once
    options = {"cuda": False, "batch_size": 256, "save_cpu_ram": True, "verbose": False,
               "feature_extractor": "digits_cnn", "feature_extractor_weights_path": str(weights)}
    raw = calculate_metrics(input1=fidelity.fidelity_input(draws[1]), input2=fidelity.fidelity_input(test.images),
                            isc=True, fid=True, kid=True, prc=True, kid_subset_size=cfg.eval.kid_subset_size,
                            kid_subsets=cfg.eval.kid_subsets, isc_splits=cfg.eval.isc_splits,
                            prc_neighborhood=cfg.eval.prc_neighborhood, **options)
    assert scores[1]["fd_digits"] == raw["frechet_inception_distance"]
    assert scores[1]["kid_digits"] == raw["kernel_inception_distance_mean"]
    assert (scores[1]["precision_digits"], scores[1]["recall_digits"]) == (raw["precision"], raw["recall"])
    assert scores[1]["is_digits"] == raw["inception_score_mean"]


def test_a_reference_limit_scores_against_a_fixed_subset(real):
    import dataclasses

    cfg, train, test, weights = real
    limited = dataclasses.replace(cfg.eval, reference_limit=100)
    first, again = (Scorer(test.images, limited, weights, torch.device("cpu")) for _ in range(2))
    assert first.n_reference == 100 < len(test)
    assert first.quality(train.images[:150]) == again.quality(train.images[:150])  # the same subset each time
    assert Scorer(test.images, cfg.eval, weights, torch.device("cpu")).n_reference == len(test)


def test_a_kid_subset_larger_than_the_reference_or_the_draw_is_refused_not_shrunk(real):
    import dataclasses

    cfg, train, test, weights = real
    subset = cfg.eval.kid_subset_size
    with pytest.raises(UserError, match=f"eval.kid_subset_size={subset} exceeds the {subset - 1} reference images"):
        Scorer(test.images[: subset - 1], cfg.eval, weights, torch.device("cpu"))
    scorer = Scorer(test.images, cfg.eval, weights, torch.device("cpu"))
    with pytest.raises(UserError, match=f"exceeds the {subset - 1} generated images in the draw"):
        scorer.quality(train.images[: subset - 1])
    small = Scorer(test.images[:30], dataclasses.replace(cfg.eval, kid_subset_size=100), weights,
                   torch.device("cpu"), kid_subset_size=30)  # a subset given explicitly (recombination's rows)
    assert small.kid_subset_size == 30 and math.isfinite(small.quality(train.images[:30])["kid_digits"])
