"""The two tracks of a suite and the little that differs between them.

* **generation**: a DiT trained with the diffusion loss; a trained model is scored on samples drawn by the
  shared sampler (``eval.draws`` draws at the final budget), against real images, on the digits evaluator
  (or Inception).
* **classification**: a timm ViT trained with cross-entropy; a trained model is scored on its predictions
  for the held-out images: top-1 accuracy (the primary metric), negative log-likelihood and the expected
  calibration error (15 equal-width confidence bins). Its ``eval_noise_sd`` is the metric's own noise: the
  binomial standard error of top-1 on that many images.

A track contributes its objective and how a model is measured; the registry, methods, training loop,
tuning, statistics, costs and leaderboard are shared. KIND's class gate needs a label the classifier does
not have at test time, and a gate opened by the *true* label during training leaks it (the pre-trained
ViT then fits its training set and is at chance on held-out images). So a label-gated KIND classifier is
always routed by its own prediction, in training as in evaluation (our adaptation): a learngenes-only
pass predicts the class, a second pass opens that class's tailors; training minimises the cross-entropy
of both passes, so the learngenes learn to route and the tailors to refine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.config import Config
from kind_bench.data import ImageSet
from kind_bench.diffusion import DiffusionObjective
from kind_bench.metrics.cost import count_flops
from kind_bench.models import null_label

ECE_BINS = 15


def routed_logits(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(learngenes-only logits or None, final logits). A KIND model whose gate opens by label is routed by
    its own prediction: the first pass (the null label: learngenes only) picks the tailors of the second."""
    gate = getattr(model, "kind_gate", None)
    if gate is None or gate.open_all:
        return None, model(images)
    null = torch.full((len(images),), gate.num_classes, device=images.device)
    with gate.labels(null):
        first = model(images)
    with gate.labels(first.detach().argmax(1)):
        return first, model(images)


class ClassificationObjective:
    """Cross-entropy of the model's logits (for a label-gated KIND model, of both routed passes)."""

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        from kind_bench.distributed import local_slice

        mine = local_slice(len(labels))  # a rank of a multi-process run keeps its slice of the global batch
        images, labels = images[mine], labels[mine]
        first, logits = routed_logits(model, images)
        loss = F.cross_entropy(logits, labels)
        return loss if first is None else loss + F.cross_entropy(first, labels)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for ``images`` (a label-gated KIND model routed by its own prediction)."""
    return torch.cat([routed_logits(model, batch)[1] for batch in images.split(batch_size)])


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the confidence-weighted gap between confidence and accuracy per bin."""
    confidence, guess = probs.max(1)
    correct = (guess == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs()
    return float(ece)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top1, nll and ece of logits against labels, and top-1's binomial standard error."""
    logits, labels = logits.float().cpu(), labels.cpu()
    top1 = float((logits.argmax(1) == labels).float().mean())
    return {"top1": top1, "nll": float(F.cross_entropy(logits, labels)),
            "ece": calibration_error(logits.softmax(1), labels),
            "eval_noise_sd": math.sqrt(max(top1 * (1 - top1), 0.0) / len(labels))}


@dataclass(frozen=True)
class Measurement:
    """What measuring one trained model gave: one metrics dict per draw (one for classification), the
    number of items each measured, and the last draw's images (generation; for the sample grid)."""

    draws: list[dict[str, float]]
    n_items: int
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None


def objective(cfg: Config, model: nn.Module) -> Callable:
    """The track's training objective for ``model``."""
    if cfg.track == "classification":
        return ClassificationObjective()
    return DiffusionObjective(cfg.diffusion, null_label(model))


def flops_per_item(cfg: Config, model: nn.Module, num_classes: int, device: torch.device, codec) -> float:
    """FLOPs per generated sample (a full guided sampling trajectory, on the model that samples: a KIND model's
    merged weights with ``sample.merged``) or per classified image. Every sampler step is one model call, so
    one step is counted and multiplied by ``sample.steps``."""
    if cfg.track == "classification":
        images = torch.zeros(num_classes, cfg.data.channels, cfg.data.image_size, cfg.data.image_size, device=device)
        return count_flops(lambda: predict(model, images)) / num_classes
    import dataclasses
    from functools import partial

    from kind_bench.diffusion import noise_scheduler, sample
    from kind_bench.kind.decompose import deploy
    from kind_bench.metrics.cost import sampling_flops

    shape = (codec.channels, codec.size, codec.size)
    guided = cfg.sample.guidance_scale > 1
    one_step = dataclasses.replace(cfg.sample, steps=1)
    if cfg.sample.merged and hasattr(model, "kind_gate"):  # every class's merged model costs the same
        net, per_class = deploy(model, 0, guided), lambda labels: torch.zeros_like(labels)
    else:
        net, per_class = model, lambda labels: labels
    draw = partial(sample, net, train_scheduler=noise_scheduler(cfg.diffusion), cfg=one_step,
                   null=null_label(model), generator=torch.Generator(device=device))
    step = sampling_flops(lambda labels: draw(per_class(labels), torch.zeros(len(labels), *shape, device=device)),
                          num_classes, device)
    return step * cfg.sample.steps


def measure_classifier(model: nn.Module, part, device: torch.device, workers: int = 0) -> Measurement:
    """A classifier's metrics on a labelled image set (an ImageSet, or a FileSet read through a DataLoader)."""
    if isinstance(part, ImageSet):
        logits = predict(model, part.images.to(device))
    else:
        from kind_bench.data.sources import file_loader

        loader = file_loader(part.dataset(), 256, workers)
        logits = torch.cat([predict(model, images.to(device)) for images, _ in loader])
    return Measurement([classification_metrics(logits, part.labels)], len(part))
