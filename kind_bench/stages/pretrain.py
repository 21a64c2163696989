"""Stage ``pretrain@<ancestry>``: pre-train one ancestry on the suite's ancestry classes, once.

Every ``pretrain.checkpoint_every`` steps the training state goes to ``<weights>.resume.safetensors``
(not a DVC output, so DVC leaves it alone); a killed run restarted with the same config resumes there.
"""

from __future__ import annotations

import dataclasses

from kind_bench.checkpoint import fingerprint
from kind_bench.config import Config, as_dict
from kind_bench.data import ancestry_set, load_prepared
from kind_bench.io import save_module, write_json
from kind_bench.methods import make_ancestry
from kind_bench.paths import ancestry_report, ancestry_weights
from kind_bench.results import provenance
from kind_bench.stages.common import make_target, seed_everything, setup
from kind_bench.train import train


def run(cfg: Config) -> None:
    """Build, train and save ``cfg.ancestry``; write its training record."""
    name = str(cfg.ancestry["name"])
    ancestry = make_ancestry(cfg, name)
    train_set, _, split = load_prepared(cfg)
    data = ancestry_set(train_set, cfg.suite.ancestry_classes)
    device, codec = setup(cfg)
    seed_everything(cfg.seed)
    model = ancestry.build(make_target(cfg, codec, len(cfg.suite.ancestry_classes), cfg.model.depth)).to(device)
    images = codec.encode(data.images.to(device))
    weights = ancestry_weights(cfg, name)
    result = train(model, ancestry.trainable_parameters(model), images, data.labels.to(device), cfg.pretrain,
                   cfg.diffusion, seed=cfg.seed, desc=f"pretrain {name}", quiet=cfg.quiet,
                   checkpoint=weights.with_suffix(".resume.safetensors"),
                   fingerprint=fingerprint(as_dict(cfg), f"pretrain {name}", type(ancestry)))
    save_module(weights, model, metadata={"ancestry": name})
    info = dataclasses.asdict(result)
    info["total_params"] = sum(p.numel() for p in model.parameters())
    write_json(ancestry_report(cfg, name), {
        "ancestry": name, "train_info": info, "split": split, "config": as_dict(cfg), "meta_info": provenance(device),
    })
    print(f"pretrain {name}: {result.steps} steps, loss {result.final_loss:.4f}, {result.train_time_s:.1f}s")
