"""Stage ``evaluate``: measure every snapshot of a cell, write the result JSON.

Every method is measured the same way against the same held-out images: the task's test images
(``eval.split=test``, the reported numbers) or its validation images (``eval.split=val``, what tuning
looks at). Classification (:mod:`kind_bench.tracks`): each snapshot's predictions give top-1, NLL and ECE.
Generation: the shared sampler of :mod:`kind_bench.diffusion` draws the final model ``eval.draws`` times,
``sample.samples_per_class`` images per class each; its metrics are the mean over the draws, and
``eval_noise_sd`` is the standard deviation of the primary metric across them: the metric's own noise,
shown next to the seeds'. Earlier snapshots (the early-regime curve) get one draw of
``sample.snapshot_samples_per_class``. The noise of draw ``d`` depends on the cell's seed and ``d`` only,
so every method with the same seed starts from the same noise (paired comparisons cancel it).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kind_bench.config import Config, as_dict, with_defaults
from kind_bench.data import FileSet, ImageSet, load_prepared, target_set
from kind_bench.device import autocast
from kind_bench.diffusion import image_generators, noise_scheduler, sample
from kind_bench.distributed import gather_rows, is_main, world
from kind_bench.errors import UserError
from kind_bench.identity import EVALUATION_ONLY, PUBLISHED, identifying, namespace, seedless_digest
from kind_bench.io import atomic_path, load_module, read_json, write_json
from kind_bench.kind.decompose import deploy
from kind_bench.lock import exclusive
from kind_bench.methods import make_method
from kind_bench.metrics import DIRECTION, primary_metric
from kind_bench.metrics.fidelity import Scorer, scored_reference_size
from kind_bench.models import null_label, weights_follow
from kind_bench.paths import (
    ancestry_seed,
    cell_of,
    evaluator_weights,
    lock_path,
    result_path,
    run_dir,
    sample_grid_path,
    snapshot_path,
)
from kind_bench.results import provenance, record
from kind_bench.stages.common import (
    descendant_depth,
    load_ancestry,
    make_target,
    require_evaluator,
    seed_everything,
    setup,
)
from kind_bench.stages.transfer import snapshot_fingerprint
from kind_bench.tracks import Measurement, flops_per_item, measure_classifier
from kind_bench.train import show_progress


def draw_seed(seed: int, draw: int) -> int:
    """The sampling seed of draw ``draw`` of a cell with seed ``seed`` (the same for every method)."""
    return seed * 1000 + draw


@torch.no_grad()
def generate(model: nn.Module, classes: list[int], per_class: int, seed: int, cfg: Config, codec,
             device: torch.device, collective: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of each of ``classes`` (model labels), as ([-1, 1] images, label).

    The starting noise of every image is drawn first, from ``seed`` alone, so every method with that seed starts
    from the same noise (and DDPM's step noise comes from a generator per image,
    :func:`~kind_bench.diffusion.image_generators`); then each class is sampled in turn (in batches of
    ``sample.batch_size``), a KIND model through its merged dense weights for that class (``sample.merged``: the
    same function, at a dense model's cost). With ``sample.by_class=false`` a model that is not merged per class
    samples batches across classes (full batches when classes are many and samples per class few, the paper tier).
    ``sample.precision=bf16`` denoises under autocast. In a multi-process run (``collective``) each rank denoises
    its share and every rank gets all the images.
    """
    scheduler = noise_scheduler(cfg.diffusion)
    labels = torch.tensor(classes, device=device).repeat(per_class)
    generator = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn((len(labels), codec.channels, codec.size, codec.size), generator=generator, device=device)
    null = null_label(model)
    guided = cfg.sample.guidance_scale > 1
    rank, size = world() if collective else (0, 1)
    merged = cfg.sample.merged and hasattr(model, "kind_gate")
    groups = [[c] for c in classes] if merged or cfg.sample.by_class else [classes]
    done, parts = [], []
    for group in groups:
        net = deploy(model, group[0], guided) if merged else model
        mine = torch.nonzero(torch.isin(labels, torch.tensor(group, device=device))).flatten()[rank::size]
        for index in mine.split(cfg.sample.batch_size):
            steps = image_generators(seed, index, device) if cfg.sample.scheduler == "ddpm" else generator
            with autocast(device, cfg.sample.precision):
                x = sample(net, labels[index], noise[index], scheduler, cfg.sample, null, steps,
                           progress=show_progress(cfg.quiet))
            done.append(index)
            parts.append(codec.decode(x.float()))
    order = torch.cat(done)
    local = torch.cat(parts)[torch.argsort(order)]
    images = gather_rows(local, order.sort().values, len(labels)) if collective else local
    if not torch.isfinite(images).all():
        raise FloatingPointError("generated samples contain NaN or inf")
    return images.cpu(), labels.cpu()


def save_grid(path, images: torch.Tensor, labels: torch.Tensor, per_class: int = 10) -> None:
    """A PNG with one row per class and ``per_class`` samples in each, upscaled 4x."""
    from PIL import Image
    from torchvision.utils import make_grid

    rows = [images[labels == c][:per_class] for c in torch.unique(labels)]
    grid = make_grid(torch.cat(rows), nrow=per_class, padding=1, pad_value=1.0, normalize=True, value_range=(-1, 1))
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def mean_metrics(draws: list[dict[str, float]]) -> dict[str, float]:
    """Every metric's mean over the draws."""
    return {name: statistics.fmean(d[name] for d in draws) for name in draws[0]}


def nonfinite(metrics: dict[str, float]) -> list[str]:
    """The names of metrics that are NaN or infinite."""
    return sorted(name for name, value in metrics.items() if not math.isfinite(value))


def evaluation_part(cfg: Config) -> ImageSet | FileSet:
    """The task's images a cell is scored against: its ``eval.split`` part, target classes only."""
    return target_set(load_prepared(cfg, task=True).part(cfg.eval.split), cfg.task)


def reference_of(part: ImageSet | FileSet):
    """What the Scorer compares with: the images of a tensor-backed set, the set itself when it streams."""
    return part.images if isinstance(part, ImageSet) else part


def measurer(cfg: Config, part: ImageSet | FileSet, source_ids: list[int], codec, device: torch.device,
             collective: bool = True) -> Callable[[nn.Module, bool], Measurement]:
    """How to measure a trained model against ``part`` (labels 0..K-1 meaning ``source_ids``): sampled
    draws scored on the evaluator (generation; ``final`` models get ``eval.draws`` full draws, others one
    smaller draw) or predictions (classification). Not ``collective``: this rank alone samples everything."""
    if cfg.track == "classification":
        return lambda model, final: measure_classifier(model, part, device, cfg.data.workers)
    scorer = Scorer(reference_of(part), cfg.eval, evaluator_weights(cfg), device) if is_main() or not collective \
        else None
    classes, ids = list(range(len(source_ids))), torch.tensor(source_ids)

    def measure(model: nn.Module, final: bool) -> Measurement:
        draws, per_class = (cfg.eval.draws, cfg.sample.samples_per_class) if final else \
            (1, cfg.sample.snapshot_samples_per_class)
        scored = []
        for d in range(draws):
            images, labels = generate(model, classes, per_class, draw_seed(cfg.seed, d), cfg, codec, device,
                                      collective)
            scored.append(scorer(images, ids[labels]) if scorer is not None else {})
        return Measurement(scored, len(images), images, labels)

    return measure


def check_trained_with(cfg: Config, trained: dict[str, Any], folder: Path) -> None:
    """Refuse to evaluate weights that were trained with another config than this call's (evaluation
    settings aside): the result would carry this call's config, not the one that trained them."""
    recorded = trained.get("config")
    if not isinstance(recorded, dict):
        raise UserError(f"training record {folder / 'train.json'} has no config: rerun the cell (kind-bench run)")
    mine = identifying(as_dict(cfg), drop=EVALUATION_ONLY)
    theirs = identifying(with_defaults(recorded), drop=EVALUATION_ONLY)
    if mine != theirs:
        key = next(k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
        raise UserError(f"the weights in {folder} were trained with another {key} section than this call's: "
                        "rerun the cell with this config (kind-bench run), or evaluate with the training's")


def evaluate_cell(cfg: Config) -> str:
    """Evaluate one (method, task, seed) cell from its run folder; returns its status."""
    method = make_method(cfg)
    cell = cell_of(cfg)
    trained = read_json(run_dir(cfg, cell) / "train.json", "training record")
    check_trained_with(cfg, trained, run_dir(cfg, cell))
    device, codec = setup(cfg)
    require_evaluator(cfg)
    run_info: dict[str, Any] = {
        "run_id": cell.id, "method": method.name, "task": cfg.task.name, "seed": cfg.seed, "track": cfg.track,
        "ancestry_seed": ancestry_seed(cfg) if method.ancestry else None, "suite": cfg.suite.name,
        "config": as_dict(cfg), "config_digest": seedless_digest(as_dict(cfg)), "namespace": namespace(cfg),
        "train_fingerprint": trained.get("fingerprint"), "eval_split": cfg.eval.split,
        "status": trained["status"], "error": trained["error"], "split": trained.get("split"),
        "method_source": trained.get("method_source"),
    }
    metrics: dict[str, float] = {}
    by_budget: dict[str, dict[str, float]] = {}
    train_info = dict(trained["train_info"])
    if trained["status"] == "success":
        part = evaluation_part(cfg)
        measure = measurer(cfg, part, cfg.task.target_classes, codec, device)
        ancestry = load_ancestry(cfg, method.ancestry.name, codec, device)[0] if method.ancestry else None
        target = make_target(cfg, codec, len(cfg.task.target_classes), descendant_depth(cfg))
        seed_everything(cfg.seed)  # the same build as in training: the frozen part is rebuilt, not stored
        with weights_follow():  # a factorised layer's SVD init is overwritten (learngenes copied, tailors loaded)
            model = method.build(ancestry, target).model.to(device).requires_grad_(False)
        primary = primary_metric(cfg)
        start = time.perf_counter()
        try:
            for snapshot in tqdm(trained["snapshots"], desc=f"evaluate {cell.id}", disable=not show_progress(cfg.quiet),
                                 leave=False):
                path = snapshot_path(cfg, cell, snapshot["step"])
                meta = load_module(path, model, what="descendant snapshot")
                if meta.get("fingerprint") != snapshot_fingerprint(trained):
                    raise UserError(f"snapshot {path} was written by another run than {run_dir(cfg, cell)}/train.json "
                                    f"records: rerun the cell (kind-bench run ...)")
                model.eval()
                measured = measure(model, snapshot is trained["snapshots"][-1])
                by_budget[str(snapshot["fraction"])] = mean_metrics(measured.draws)
            if not is_main():  # rank 0 scores and writes
                return trained["status"]
            if bad := nonfinite(by_budget[str(trained["snapshots"][-1]["fraction"])]):
                raise FloatingPointError(f"{', '.join(bad)} not finite")
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing cell is recorded, not fatal
            run_info.update(status="failed", error=f"evaluation: {type(exc).__name__}: {exc}".splitlines()[0])
        else:
            metrics = dict(by_budget[str(trained["snapshots"][-1]["fraction"])])
            if len(measured.draws) > 1:
                metrics["eval_noise_sd"] = statistics.stdev(d[primary] for d in measured.draws)
            scored = len(part) if cfg.track == "classification" else scored_reference_size(len(part), cfg.eval)
            train_info.update(eval_time_s=time.perf_counter() - start, n_reference=scored,
                              n_generated=measured.n_items, n_draws=len(measured.draws), draws=measured.draws)
            train_info["flops_per_sample"] = flops_per_item(cfg, model, len(cfg.task.target_classes), device, codec)
            publish = cfg.seed == cfg.eval.grid_seed and namespace(cfg) == PUBLISHED and cfg.eval.split == "test"
            if publish and measured.images is not None:
                save_grid(sample_grid_path(cfg, cell), measured.images, measured.labels)
    result = record(run_info=run_info, train_info=train_info, metrics=metrics, metrics_by_budget=by_budget,
                    meta_info={**provenance(device), "method_source": run_info["method_source"]})
    path = result_path(cfg, cell)
    write_json(path, result)
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if DIRECTION.get(k) or k == "eval_noise_sd")
    print(f"evaluate {cell.id}: {run_info['status']} {shown or run_info['error']} -> {path}")
    return run_info["status"]


def run(cfg: Config) -> str:
    """``kind-bench evaluate``: score one trained cell while holding its lock."""
    cell = cell_of(cfg)
    with exclusive(lock_path(cfg, cell), f"cell {cell.id}"):
        return evaluate_cell(cfg)
