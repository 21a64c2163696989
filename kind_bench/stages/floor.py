"""Stage ``floor``: the ``real_data`` reference row of every task (the metrics' noise floor).

Held-out real images (the target classes' train-split images, in the task's domain, drawn with the run
seed) are scored against the same test reference, at the same sample count as a method's samples. A
method cannot be expected to beat this row; it shows what "near zero" means at this sample count.
"""

from __future__ import annotations

import torch

from kind_bench.config import Config, as_dict
from kind_bench.data import load_prepared, target_set
from kind_bench.io import write_json
from kind_bench.leaderboard import REFERENCE_ROW
from kind_bench.paths import Cell, metrics_path, result_path
from kind_bench.results import provenance, record
from kind_bench.stages.common import setup
from kind_bench.stages.evaluate import score


def run(cfg: Config) -> None:
    """Score held-out real images for one (task, seed)."""
    cell = Cell(REFERENCE_ROW, cfg.task.name, cfg.seed)
    device, _ = setup(cfg)
    train, test, split = load_prepared(cfg)
    real, reference = target_set(train, cfg.task), target_set(test, cfg.task)
    per_class = cfg.sample.samples_per_class
    generator = torch.Generator().manual_seed(cfg.seed)
    picked = torch.cat([
        torch.nonzero(real.labels == c).flatten()[torch.randperm(int((real.labels == c).sum()), generator=generator)]
        [:per_class] for c in range(len(cfg.task.target_classes))
    ])
    source_ids = torch.tensor(cfg.task.target_classes)[real.labels[picked]]
    metrics = score(real.images[picked], source_ids, reference.images, cfg, device)
    run_info = {"run_id": cell.id, "method": REFERENCE_ROW, "task": cfg.task.name, "seed": cfg.seed,
                "suite": cfg.suite.name, "config": as_dict(cfg), "status": "success", "error": None, "split": split}
    train_info = {"n_reference": len(reference), "n_generated": len(picked)}
    write_json(result_path(cfg, cell), record(run_info=run_info, train_info=train_info, metrics=metrics,
                                              meta_info=provenance(device)))
    write_json(metrics_path(cfg, cell), {"metrics": metrics})
    print(f"floor {cell.id}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
