"""Stage ``evaluator``: train the digits CNN used to score samples, and report its accuracy."""

from __future__ import annotations

import torch

from kind_bench.config import Config
from kind_bench.data import DOMAINS, load_prepared
from kind_bench.io import write_json
from kind_bench.metrics.evaluator import accuracy, save_classifier, train_classifier
from kind_bench.paths import evaluator_report, evaluator_weights


def run(cfg: Config) -> None:
    """Train on the train split in every domain; report held-out accuracy per domain."""
    train, test, split = load_prepared(cfg)
    domains = sorted(DOMAINS)
    images = torch.cat([DOMAINS[d](train.images) for d in domains])
    labels = train.labels.repeat(len(domains))
    ev = cfg.evaluator
    model = train_classifier(images, labels, ev.feature_dim, ev.epochs, ev.batch_size, ev.lr, seed=cfg.seed)
    report = {f"test_accuracy_{d}": accuracy(model, DOMAINS[d](test.images), test.labels) for d in domains}
    save_classifier(evaluator_weights(cfg), model)
    write_json(evaluator_report(cfg), {**report, "feature_dim": ev.feature_dim, "split": split})
    print("evaluator: " + ", ".join(f"{k}={v:.3f}" for k, v in report.items()))
