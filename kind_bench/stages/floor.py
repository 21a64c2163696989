"""Stage ``floor``: the ``real_data`` reference row of every task (the metrics' noise floor).

Every training-split image of the task's target classes, in the task's domain, is scored against the same
test reference as the methods' samples. A method cannot be expected to beat this row; it shows what
"near zero" means. The embedded digits have fewer training images per class (about 90) than a cell
generates (``sample.samples_per_class``), so the floor is measured at that smaller count (recorded as
``n_generated``); a Frechet distance only falls as the count grows, so the floor at the cells' count
would be lower still. The seed of the call is recorded but changes nothing.
"""

from __future__ import annotations

import torch

from kind_bench.config import Config, as_dict
from kind_bench.data import load_prepared, target_set
from kind_bench.identity import seedless_digest
from kind_bench.io import write_json
from kind_bench.metrics.fidelity import Scorer, scored_reference_size
from kind_bench.paths import Cell, evaluator_weights, published_result
from kind_bench.results import REFERENCE_ROW, provenance, record
from kind_bench.stages.common import require_evaluator, setup
from kind_bench.stages.evaluate import reference_of


def run(cfg: Config) -> str:
    """Score the held-out real images of one task."""
    cell = Cell(REFERENCE_ROW, cfg.task.name, cfg.seed)
    require_evaluator(cfg)
    device, _ = setup(cfg)
    prepared = load_prepared(cfg, task=True)
    real, reference = target_set(prepared.train, cfg.task), target_set(prepared.test, cfg.task)
    scorer = Scorer(reference_of(reference), cfg.eval, evaluator_weights(cfg), device)
    metrics = scorer(reference_of(real), torch.tensor(cfg.task.target_classes)[real.labels])
    run_info = {"run_id": cell.id, "method": REFERENCE_ROW, "task": cfg.task.name, "seed": cfg.seed,
                "suite": cfg.suite.name, "config": as_dict(cfg), "config_digest": seedless_digest(as_dict(cfg)),
                "status": "success", "error": None,
                "split": prepared.record, "eval_split": "test"}
    train_info = {"n_reference": scored_reference_size(len(reference), cfg.eval), "n_generated": len(real)}
    path = published_result(cfg, cell)
    write_json(path, record(run_info=run_info, train_info=train_info, metrics=metrics, meta_info=provenance(device)))
    print(f"floor {cell.id}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()) + f" -> {path}")
    return "success"
