"""Stage ``evaluator``: train the digits CNN used to score samples; report its accuracy and how stable
its Frechet distance is between two real image sets (the floor of the metric's noise; the noise of
generated samples is measured per cell, ``eval_noise_sd``)."""

from __future__ import annotations

import torch

from kind_bench.config import Config
from kind_bench.data import DOMAINS, load_prepared, target_set
from kind_bench.data.sources import FileSet, in_memory
from kind_bench.errors import UserError
from kind_bench.io import atomic_path, write_json
from kind_bench.metrics.evaluator import accuracy, save_classifier, train_classifier
from kind_bench.metrics.stability import fd_stability
from kind_bench.paths import evaluator_report, evaluator_weights
from kind_bench.stages.common import evaluator_identity

#: how many bytes of float32 pixels the evaluator stage reads into memory from files (``data.storage=files``);
#: it holds about four times that while training (three domains and the real-vs-real pool). Our limit.
MEMORY_LIMIT = 2**30


def check_fits_in_memory(cfg: Config, parts: tuple) -> None:
    """Refuse, in one line, streamed data too large for this CNN, which reads every image into memory."""
    if not any(isinstance(part, FileSet) for part in parts):
        return
    count = sum(len(part) for part in parts)
    size = count * cfg.data.channels * cfg.data.image_size**2 * 4
    if size > MEMORY_LIMIT:
        raise UserError(f"data.storage=files: the evaluator stage's CNN reads all {count} images into memory "
                        f"({size / 2**30:.1f} GiB of pixels, over its {MEMORY_LIMIT / 2**30:.0f} GiB limit); a set "
                        "this large is scored with eval.feature_extractor=inception-v3-compat, which needs no "
                        "evaluator stage")


def run(cfg: Config) -> str:
    """Train on the train split in every domain; report held-out accuracy per domain and FD stability
    (real-vs-real, drawing from the target classes' training and validation images). Streamed parts
    (``data.storage=files``) are read into memory: this CNN is for small image sets."""
    from kind_bench.data import ImageSet
    from kind_bench.plots import stability_plot

    prepared = load_prepared(cfg)
    parts = (prepared.train, prepared.val, prepared.test)
    check_fits_in_memory(cfg, parts)
    train, val, test = (in_memory(part, cfg.data.workers) for part in parts)
    domains = sorted(DOMAINS)
    images = torch.cat([DOMAINS[d](train.images) for d in domains])
    labels = train.labels.repeat(len(domains))
    ev = cfg.evaluator
    model = train_classifier(images, labels, ev.feature_dim, ev.epochs, ev.batch_size, ev.lr, seed=ev.seed)
    report = {f"test_accuracy_{d}": accuracy(model, DOMAINS[d](test.images), test.labels) for d in domains}
    save_classifier(evaluator_weights(cfg), model, evaluator_identity(cfg, prepared.record["data_sha256"]))
    pool = target_set(ImageSet(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels])),
                      cfg.task).images
    counts = [k * len(cfg.task.target_classes) for k in (10, 20, 40, 80, 120)]
    stability = fd_stability(model, pool, target_set(test, cfg.task).images, [n for n in counts if n <= len(pool)])
    base = evaluator_report(cfg)
    with atomic_path(base.with_name(base.stem + "_fd_stability.csv")) as tmp:
        stability.to_csv(tmp, index=False, float_format="%.4f")
    stability_plot(stability, cfg.sample.samples_per_class * len(cfg.task.target_classes),
                   base.with_name(base.stem + "_fd_stability.png"))
    used = stability[(stability.dim == ev.feature_dim)]
    write_json(base, {**report, "feature_dim": ev.feature_dim,
                      "fd_real_vs_real": {str(int(r.n)): round(r.fd_mean, 4) for r in used.itertuples()}})
    print("evaluator: " + ", ".join(f"{k}={v:.3f}" for k, v in report.items()) + f" -> {evaluator_weights(cfg)}")
    return "success"
