"""Stage ``evaluate@<method>``: sample every snapshot of a cell, score it, write the result JSON.

Kept apart from transfer, so that a change to metric code never forces retraining. Every method is
sampled the same way, by the shared sampler of :mod:`kind_bench.diffusion`. Each snapshot (a fraction of
the transfer steps: the step-budget view) is scored; the last one gives the headline metrics.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kind_bench.config import Config
from kind_bench.data import load_prepared, target_set
from kind_bench.diffusion import noise_scheduler, sample
from kind_bench.errors import UserError
from kind_bench.io import atomic_path, load_module, read_json, write_json
from kind_bench.methods import make_method
from kind_bench.metrics.cost import sampling_flops
from kind_bench.metrics.fidelity import class_accuracy, quality_metrics
from kind_bench.models import null_label
from kind_bench.paths import (
    cell_of,
    evaluator_weights,
    metrics_path,
    result_path,
    run_dir,
    sample_grid_path,
    snapshot_path,
)
from kind_bench.results import provenance, record
from kind_bench.stages.common import descendant_depth, load_ancestry, make_target, setup


@torch.no_grad()
def generate(model: nn.Module, classes: list[int], cfg: Config, codec, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``sample.samples_per_class`` images of each of ``classes`` (model labels), as ([-1, 1] images,
    label). Classes are interleaved in each batch, as in DiT's sampling script; the noise is a function
    of the run seed only, so every method with the same seed starts from the same noise."""
    scheduler = noise_scheduler(cfg.diffusion)
    labels = torch.tensor(classes, device=device).repeat(cfg.sample.samples_per_class)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    null = null_label(model)
    images = []
    for batch in labels.split(cfg.sample.batch_size):
        x = sample(model, batch, (codec.channels, codec.size, codec.size), scheduler, cfg.sample, null, generator,
                   progress=not cfg.quiet)
        images.append(codec.decode(x).cpu())
    return torch.cat(images), labels.cpu()


def score(generated: torch.Tensor, source_ids: torch.Tensor, reference: torch.Tensor, cfg: Config,
          device: torch.device) -> dict[str, float]:
    """Quality metrics against the reference, plus class accuracy on the digits evaluator
    (``source_ids``: each image's class in the source data, e.g. digit 7)."""
    weights = evaluator_weights(cfg)
    metrics = quality_metrics(generated, reference, cfg.eval, weights, device)
    if cfg.eval.feature_extractor == "digits_cnn":
        metrics["class_accuracy"] = class_accuracy(generated, source_ids, weights)
    return metrics


def save_grid(path, images: torch.Tensor, labels: torch.Tensor, per_class: int = 10) -> None:
    """A PNG with one row per class and ``per_class`` samples in each, upscaled 4x."""
    from torchvision.utils import make_grid

    rows = [images[labels == c][:per_class] for c in torch.unique(labels)]
    grid = make_grid(torch.cat(rows), nrow=per_class, padding=1, pad_value=1.0, normalize=True, value_range=(-1, 1))
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def run(cfg: Config) -> None:
    """Evaluate one (method, task, seed) cell from its run folder."""
    method = make_method(cfg)
    cell = cell_of(cfg)
    trained = read_json(run_dir(cfg, cell) / "train.json", "training record")
    device, codec = setup(cfg)
    if cfg.eval.feature_extractor == "digits_cnn" and not evaluator_weights(cfg).is_file():
        raise UserError(f"evaluator weights {evaluator_weights(cfg)} not found: run `kind-bench evaluator` first")
    run_info: dict[str, Any] = {
        "run_id": cell.id, "method": method.name, "task": cfg.task.name, "seed": cfg.seed, "suite": cfg.suite.name,
        "config": trained["config"], "status": trained["status"], "error": trained["error"],
        "split": trained.get("split"),
    }
    metrics: dict[str, float] = {}
    by_budget: dict[str, dict[str, float]] = {}
    train_info = dict(trained["train_info"])
    if trained["status"] == "success":
        _, test_set, _ = load_prepared(cfg)
        reference = target_set(test_set, cfg.task).images
        ancestry = load_ancestry(cfg, method.ancestry.name, codec, device) if method.ancestry else None
        target = make_target(cfg, codec, len(cfg.task.target_classes), descendant_depth(cfg))
        model = method.build(ancestry, target).model.to(device)
        start = time.perf_counter()
        try:
            for snapshot in tqdm(trained["snapshots"], desc=f"evaluate {cell.id}", disable=cfg.quiet, leave=False):
                load_module(snapshot_path(cfg, cell, snapshot["step"]), model, what="descendant checkpoint")
                model.eval()
                generated, labels = generate(model, list(range(len(cfg.task.target_classes))), cfg, codec, device)
                if not torch.isfinite(generated).all():
                    raise FloatingPointError("generated samples contain NaN or inf")
                source_ids = torch.tensor(cfg.task.target_classes)[labels]
                by_budget[str(snapshot["fraction"])] = score(generated, source_ids, reference, cfg, device)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing cell is recorded, not fatal
            run_info.update(status="failed", error=f"evaluation: {type(exc).__name__}: {exc}".splitlines()[0])
        else:
            metrics = by_budget[str(trained["snapshots"][-1]["fraction"])]
            train_info["eval_time_s"] = time.perf_counter() - start
            train_info["n_reference"], train_info["n_generated"] = len(reference), len(generated)
            shape = (codec.channels, codec.size, codec.size)
            draw = partial(sample, model, shape=shape, train_scheduler=noise_scheduler(cfg.diffusion),
                           cfg=cfg.sample, null=null_label(model), generator=torch.Generator(device=device))
            train_info["flops_per_sample"] = sampling_flops(lambda y: draw(y), len(cfg.task.target_classes), device)
            if cfg.seed == cfg.eval.grid_seed:
                save_grid(sample_grid_path(cfg, cell), generated, labels)
    result = record(run_info=run_info, train_info=train_info, metrics=metrics, metrics_by_budget=by_budget,
                    meta_info=provenance(device))
    write_json(result_path(cfg, cell), result)
    cost = {k: v for k, v in train_info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    write_json(metrics_path(cfg, cell), {"metrics": metrics, "cost": cost, "by_budget": by_budget})
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()) or run_info["error"]
    print(f"evaluate {cell.id}: {run_info['status']} {shown}")
