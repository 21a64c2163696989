"""``python -m kind_bench.disk [key=value ...]``: what one cell stores on disk, per method, at a given size.

A snapshot holds the parameters that train and the buffers (the frozen rest is rebuilt from the ancestry
and the seed, :func:`kind_bench.io.save_module`), so a cell's disk is ``snapshots x`` that, plus a resume
checkpoint of the same parameters with AdamW's two moments (and their moving average, with
``transfer.ema``) while it trains. This builds each method's
descendant at the configured model (default ``model=dit_b2``, 461 target classes as in the paper's novel
split, 32x32x4 latents of 256x256 images) on the CPU, without training, and counts; it writes
``results/disk/<model>.json``.
"""

from __future__ import annotations

import sys

import torch

from kind_bench.config import compose
from kind_bench.io import split_state, write_json
from kind_bench.methods import Target, compose_cell, discover, make_ancestry, training_phases, unique


def cell_bytes(overrides: list[str], classes: int = 461) -> dict[str, dict[str, int]]:
    """Per method: bytes of one snapshot (trained parameters + buffers) and of a resume checkpoint."""
    out: dict[str, dict[str, int]] = {}
    for name, entry in sorted(discover()[0].items()):
        cls = entry.cls
        if "generation" not in cls.tracks:
            continue
        cfg = compose_cell([*overrides, f"method={name}", "tuning.lr_source=config"])
        target = Target(classes, cfg.model.depth, cfg.model, 4, 32)
        torch.manual_seed(0)
        ancestry = make_ancestry(cfg, cls.ancestry.name).build(Target(150, cfg.model.depth, cfg.model, 4, 32)) \
            if cls.ancestry else None
        method = cls(cls.Options())
        model = method.build(ancestry, target).model
        params = unique([p for phase in training_phases(method, model, True) for p in phase.params])
        stored, _ = split_state(model, params)
        snapshot = sum(t.numel() * t.element_size() for t in stored.values())
        trained = sum(p.numel() * p.element_size() for p in params)
        copies = 2 + (cfg.transfer.ema > 0)  # AdamW's two moments, and the moving average when it is on
        out[name] = {"snapshot_bytes": snapshot, "resume_bytes": snapshot + copies * trained,
                     "cell_bytes": len(cfg.transfer.snapshots) * snapshot,
                     "dense_model_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
        print(f"{name:14s} snapshot {snapshot / 2**20:9.1f} MiB  cell {out[name]['cell_bytes'] / 2**20:9.1f} MiB  "
              f"(whole model {out[name]['dense_model_bytes'] / 2**20:8.1f} MiB)")
    return out


def main(argv: list[str] | None = None) -> int:
    """Count and write ``results/disk/<model>.json``."""
    overrides = list(argv if argv is not None else sys.argv[1:]) or ["model=dit_b2"]
    model = compose(overrides).model.name
    write_json(f"results/disk/{model}.json", cell_bytes(overrides))
    print(f"disk: results/disk/{model}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
