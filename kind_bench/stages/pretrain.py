"""Stage ``pretrain@<ancestry>``: pre-train one ancestry on the suite's ancestry classes, once per seed.

``seed`` is the pre-training seed (``kind-bench pretrain ancestry=kind seed=0,1,2``); a transfer cell of
seed s uses the ancestry of seed ``s % suite.ancestry_seeds``, so the intervals carry pre-training
variance. Every ``pretrain.checkpoint_every`` steps the training state goes to
``<weights>.resume.safetensors`` (not a DVC output, so DVC leaves it alone); a killed run restarted with
the same config resumes there. The record holds the ancestry's own quality on its classes: the primary
metric on the validation images at every snapshot (is the pre-training budget converged?) and, for the
final weights, every metric on the test images.
"""

from __future__ import annotations

import dataclasses

import torch

from kind_bench.checkpoint import fingerprint
from kind_bench.config import Config, as_dict
from kind_bench.data import ancestry_set, load_prepared
from kind_bench.data.latents import training_inputs, training_sources
from kind_bench.distributed import is_main
from kind_bench.identity import ancestry_identity
from kind_bench.io import save_module, write_json
from kind_bench.lock import exclusive
from kind_bench.methods import Phase, make_ancestry
from kind_bench.metrics import primary_metric
from kind_bench.paths import ancestry_report, ancestry_weights
from kind_bench.results import provenance
from kind_bench.stages.common import make_target, require_evaluator, seed_everything, setup
from kind_bench.stages.evaluate import measurer
from kind_bench.tracks import objective
from kind_bench.train import train


def run(cfg: Config) -> str:
    """Build, train and save ``cfg.ancestry`` with seed ``cfg.seed``; write its record."""
    name = str(cfg.ancestry["name"])
    ancestry = make_ancestry(cfg, name)
    weights = ancestry_weights(cfg, name, seed=cfg.seed)
    require_evaluator(cfg)
    with exclusive(weights.with_name(f".{weights.name}.lock"), f"ancestry {name} seed {cfg.seed}"):
        prepared = load_prepared(cfg)
        data = ancestry_set(prepared.train, cfg.suite.ancestry_classes)
        device, codec = setup(cfg)
        seed_everything(cfg.seed)
        model = ancestry.build(make_target(cfg, codec, len(cfg.suite.ancestry_classes), cfg.model.depth)).to(device)
        snapshots: dict[int, dict[str, torch.Tensor]] = {}
        sources = training_sources(cfg, str(prepared.record["data_sha256"]))
        tag = fingerprint(as_dict(cfg), f"pretrain {name}", type(ancestry), *sources)
        result = train(model, [Phase(1.0, ancestry.trainable_parameters(model))],
                       training_inputs(cfg, data, codec, device), data.labels.to(device), cfg.pretrain,
                       objective(cfg, model), seed=cfg.seed,
                       desc=f"pretrain {name} seed {cfg.seed}", quiet=cfg.quiet,
                       checkpoint=weights.with_suffix(".resume.safetensors"), fingerprint=tag, runtime=cfg.runtime,
                       on_snapshot=lambda step, m: snapshots.__setitem__(step, {k: v.clone() for k, v
                                                                                in m.state_dict().items()}))
        identity = ancestry_identity(as_dict(cfg), cfg.seed, sources)
        if not is_main():  # rank 0 saves, evaluates and writes
            return "success"
        classes = cfg.suite.ancestry_classes
        one_draw = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, draws=1))
        val = measurer(one_draw, ancestry_set(prepared.val, classes), classes, codec, device, collective=False)
        primary, curve = primary_metric(cfg), {}
        final = {k: v.clone() for k, v in model.state_dict().items()}
        for step, state in sorted(snapshots.items()):  # (a resumed run lacks those taken before the kill)
            model.load_state_dict(state)
            curve[str(step)] = val(model, True).draws[0][primary]
        model.load_state_dict(final)
        test = measurer(one_draw, ancestry_set(prepared.test, classes), classes, codec, device, collective=False)
        quality = test(model, True).draws[0]
        info = dataclasses.asdict(result)
        info["total_params"] = sum(p.numel() for p in model.parameters())
        # scored before anything is written: a failure while scoring leaves no weights without their report
        save_module(weights, model, metadata={"ancestry": name, "seed": str(cfg.seed), "identity": identity})
        write_json(ancestry_report(cfg, name, cfg.seed), {
            "ancestry": name, "seed": cfg.seed, "train_info": info, "split": prepared.record, "config": as_dict(cfg),
            "val_by_step": curve, "quality": quality, "meta_info": provenance(device),
        })
    print(f"pretrain {name} seed {cfg.seed}: {result.steps} steps, loss {result.final_loss:.4f}, "
          f"{result.train_time_s:.1f}s, val {primary} by step {curve} -> {weights}")
    return "success"
