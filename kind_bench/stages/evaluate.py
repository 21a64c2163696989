"""Stage ``evaluate@<method>``: sample every snapshot of a cell, score it, write the result JSON.

Kept apart from transfer, so that a change to metric code never forces retraining. Every method is
sampled the same way, by the shared sampler of :mod:`kind_bench.diffusion`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from kind_bench.config import Config
from kind_bench.data import load_prepared, target_set
from kind_bench.diffusion import noise_scheduler, sample
from kind_bench.errors import UserError
from kind_bench.io import load_module, read_json, write_json
from kind_bench.methods import make_method
from kind_bench.metrics.fidelity import class_accuracy, quality_metrics
from kind_bench.models import null_label
from kind_bench.paths import cell_of, evaluator_weights, metrics_path, result_path, run_dir, snapshot_path
from kind_bench.results import provenance, record
from kind_bench.stages.common import descendant_depth, load_ancestry, make_target, setup


@torch.no_grad()
def generate(model: nn.Module, cfg: Config, codec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``sample.samples_per_class`` images of every target class, as ([-1, 1] images, class index).

    Classes are interleaved in each batch, as in DiT's sampling script; the noise is a function of the
    run seed only, so every method with the same seed starts from the same noise.
    """
    scheduler = noise_scheduler(cfg.diffusion)
    classes = torch.arange(len(cfg.task.target_classes), device=device)
    labels = classes.repeat(cfg.sample.samples_per_class)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    null = null_label(model)
    images = []
    for batch in labels.split(cfg.sample.batch_size):
        x = sample(model, batch, (codec.channels, codec.size, codec.size), scheduler, cfg.sample, null, generator)
        images.append(codec.decode(x).cpu())
    return torch.cat(images), labels.cpu()


def score(generated: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor, cfg: Config,
          device: torch.device) -> dict[str, float]:
    """Quality metrics against the reference, plus class accuracy on the digits evaluator."""
    weights = evaluator_weights(cfg)
    metrics = quality_metrics(generated, reference, cfg.eval, weights, device)
    if cfg.eval.feature_extractor == "digits_cnn":
        source_ids = torch.tensor(cfg.task.target_classes)[labels]
        metrics["class_accuracy"] = class_accuracy(generated, source_ids, weights)
    return metrics


def run(cfg: Config) -> None:
    """Evaluate one (method, task, seed) cell from its run folder."""
    method = make_method(cfg)
    cell = cell_of(cfg)
    rid = cell.id
    trained = read_json(run_dir(cfg, cell) / "train.json", "training record")
    device, codec = setup(cfg)
    if cfg.eval.feature_extractor == "digits_cnn" and not evaluator_weights(cfg).is_file():
        raise UserError(f"evaluator weights {evaluator_weights(cfg)} not found: run `kind-bench evaluator` first")
    run_info: dict[str, Any] = {
        "run_id": rid, "method": method.name, "task": cfg.task.name, "seed": cfg.seed, "suite": cfg.suite.name,
        "config": trained["config"], "status": trained["status"], "error": trained["error"],
        "split": trained.get("split"),
    }
    metrics: dict[str, float] = {}
    by_step: dict[str, dict[str, float]] = {}
    train_info = dict(trained["train_info"])
    if trained["status"] == "success":
        _, test_set, _ = load_prepared(cfg)
        reference = target_set(test_set, cfg.task).images
        ancestry = load_ancestry(cfg, method.ancestry.name, codec, device) if method.ancestry else None
        target = make_target(cfg, codec, len(cfg.task.target_classes), descendant_depth(cfg))
        model = method.build(ancestry, target).model.to(device)
        start = time.perf_counter()
        try:
            for step in trained["snapshots"]:
                load_module(snapshot_path(cfg, cell, step), model, what="descendant checkpoint")
                model.eval()
                generated, labels = generate(model, cfg, codec, device)
                if not torch.isfinite(generated).all():
                    raise FloatingPointError("generated samples contain NaN or inf")
                by_step[str(step)] = score(generated, labels, reference, cfg, device)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing cell is recorded, not fatal
            run_info.update(status="failed", error=f"evaluation: {type(exc).__name__}: {exc}".splitlines()[0])
        else:
            metrics = by_step[str(max(trained["snapshots"]))]
            train_info["eval_time_s"] = time.perf_counter() - start
            train_info["n_reference"] = len(reference)
            train_info["n_generated"] = len(generated)
    result = record(run_info=run_info, train_info=train_info, metrics=metrics, metrics_by_step=by_step,
                    meta_info=provenance(device))
    write_json(result_path(cfg, cell), result)
    cost = {k: v for k, v in train_info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    write_json(metrics_path(cfg, cell), {"metrics": metrics, "cost": cost, "by_step": by_step})
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()) or run_info["error"]
    print(f"evaluate {rid}: {run_info['status']} {shown}")
