"""Stage ``recombine``: KIND's "decomposable models" claim, measured on the pre-trained KIND ancestry.

For k = 1 .. all ancestry classes, deploy the ancestry for its first k classes by keeping only the learngenes
and the tailors those classes (and, with guidance, the null label) open (the others are dropped from every
layer), count the parameters, and score k x ``sample.samples_per_class`` samples against the real test images
of those classes. The full model is scored on the same classes with the same noise: the recombined model must
match it (it computes the same function for those classes), which the curve records as a sanity column.
Each row's KID uses the largest subset (``kid_subset_size``, at most ``eval.kid_subset_size``) that its
reference and draw allow: one class has fewer test images than the suite's subset.
``deploy_params`` is the size of the merged dense model of one class
(:func:`kind_bench.kind.decompose.deploy`, guidance off): the dense DiT's size, whatever k;
``max_abs_deploy_diff`` checks it samples what the gated model samples.
"""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import torch
from torch import nn

from kind_bench.config import Config
from kind_bench.data import ancestry_set, load_prepared
from kind_bench.io import atomic_path, write_json
from kind_bench.kind.decompose import deploy, kind_layers
from kind_bench.methods import NoOptions, Target, Vanilla
from kind_bench.metrics import primary_metric
from kind_bench.metrics.fidelity import Scorer, scored_reference_size
from kind_bench.paths import evaluator_weights, recombination_path
from kind_bench.stages.common import load_ancestry, require_evaluator, setup
from kind_bench.stages.evaluate import generate, reference_of


@torch.no_grad()
def recombine(model: nn.Module, classes: list[int], guidance: bool) -> nn.Module:
    """A copy of a KIND model with only the learngenes and the tailors that ``classes`` open (and, with
    classifier-free ``guidance``, those the null label opens: the unconditional half of every step)."""
    small = copy.deepcopy(model)
    gate = small.kind_gate
    keep = gate.mask[classes + ([gate.num_classes] if guidance else [])].amax(0) > 0
    for _, layer in kind_layers(small):
        layer.U_T = nn.Parameter(layer.U_T[:, keep].clone())
        layer.sigma_T = nn.Parameter(layer.sigma_T[keep].clone())
        layer.V_T = nn.Parameter(layer.V_T[:, keep].clone())
    gate.mask = gate.mask[:, keep].clone()
    return small


def run(cfg: Config) -> str:
    """Write the recombination curve (CSV + JSON) and its plot, for the ancestry of seed ``cfg.seed``."""
    from kind_bench.plots import recombination_plot

    device, codec = setup(cfg)
    require_evaluator(cfg)
    full = load_ancestry(cfg, "kind", codec, device)[0]
    test = load_prepared(cfg).test
    names = cfg.suite.ancestry_classes
    dense = sum(p.numel() for p in Vanilla(NoOptions()).build(
        Target(len(names), cfg.model.depth, cfg.model, codec.channels, codec.size)).parameters())
    per_class = cfg.sample.samples_per_class
    rows = []
    for k in range(1, len(names) + 1):
        classes = list(range(k))
        small = recombine(full, classes, guidance=cfg.sample.guidance_scale > 1).to(device).eval()
        reference = reference_of(ancestry_set(test, names[:k]))
        # ours: the first k classes' test images can be fewer than eval.kid_subset_size (54 for one digit), so
        # each row's KID uses the largest subset its sets allow, recorded beside it
        kid_subset = min(cfg.eval.kid_subset_size, scored_reference_size(len(reference), cfg.eval), per_class * k)
        scorer = Scorer(reference, cfg.eval, evaluator_weights(cfg), device, kid_subset_size=kid_subset)
        images, labels = generate(small, classes, per_class, cfg.seed, cfg, codec, device)
        full_images, _ = generate(full, classes, per_class, cfg.seed, cfg, codec, device)
        source_ids = torch.tensor(names)[labels]
        metrics, full_metrics = scorer(images, source_ids), scorer(full_images, source_ids)
        merged = deploy(small, 0, guidance=False)
        unguided = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, guidance_scale=1.0, merged=False))
        merged_images, _ = generate(merged, [0], per_class, cfg.seed, unguided, codec, device)
        gated_images, _ = generate(small, [0], per_class, cfg.seed, unguided, codec, device)
        tailors = kind_layers(small)[0][1].n_tailors
        rows.append({"classes": k, "params": sum(p.numel() for p in small.parameters()),
                     "full_params": sum(p.numel() for p in full.parameters()), "dense_params": dense,
                     "deploy_params": sum(p.numel() for p in merged.parameters()),
                     "tailors_per_layer": tailors, "kid_subset_size": kid_subset, **metrics,
                     **{f"full_{m}": v for m, v in full_metrics.items()},
                     "max_abs_sample_diff": float((images - full_images).abs().max()),
                     "max_abs_deploy_diff": float((merged_images - gated_images).abs().max())})
        print(f"recombine k={k}: {rows[-1]['params']:,} params factorised, {rows[-1]['deploy_params']:,} merged "
              f"per class, {tailors} tailors/layer, fd {metrics[primary_metric(cfg)]:.3f} "
              f"(full model {full_metrics[primary_metric(cfg)]:.3f})")
    table = pd.DataFrame(rows)
    with atomic_path(recombination_path(cfg, ".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    write_json(recombination_path(cfg, ".json"), {"curve": rows})
    recombination_plot(table, recombination_path(cfg, ".png"))
    return "success"
