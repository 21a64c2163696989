"""Stage ``transfer@<method>``: build each descendant from its ancestry and train it on the target task.

One call may run several cells (task x seed sweeps, ``task=a,b seed=0,1,2``) to pay process start-up
once. Each cell writes weight snapshots and ``train.json`` into its run folder. A cell whose method
cannot build the target is recorded as ``n/a`` with the reason; a cell whose method raises or whose loss
diverges is recorded as ``failed`` with the error, and the other cells go on. Bad input is different:
it stops the call with a one-line error before anything is written.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from kind_bench.config import Config, as_dict
from kind_bench.data import load_prepared, target_set
from kind_bench.errors import UserError
from kind_bench.io import save_module, write_json
from kind_bench.methods import make_method
from kind_bench.paths import cell_of, run_dir, snapshot_path
from kind_bench.stages.common import descendant_depth, load_ancestry, make_target, seed_everything, setup
from kind_bench.train import snapshot_steps, train


def run(cfg: Config) -> None:
    """Train one (method, task, seed) cell and write its run folder."""
    method = make_method(cfg)
    cell = cell_of(cfg)
    rid = cell.id
    device, codec = setup(cfg)
    target = make_target(cfg, codec, len(cfg.task.target_classes), descendant_depth(cfg))
    record: dict[str, Any] = {"run_id": rid, "method": method.name, "task": cfg.task.name, "seed": cfg.seed,
                              "config": as_dict(cfg), "error": None, "train_info": {}, "snapshots": []}
    reason = method.unsupported(target, cfg.model.depth)
    if reason is None:
        ancestry = load_ancestry(cfg, method.ancestry.name, codec, device) if method.ancestry else None
        train_set, _, split = load_prepared(cfg)
        data = target_set(train_set, cfg.task, shots=cfg.task.shots, seed=cfg.seed)
        record["split"] = split
    out = run_dir(cfg, cell)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if reason is not None:
        record.update(status="n/a", error=reason)
        write_json(out / "train.json", record)
        print(f"transfer {rid}: n/a ({reason})")
        return
    try:
        seed_everything(cfg.seed)
        built = method.build(ancestry, target)
        model = built.model.to(device)
        params = method.trainable_parameters(model)
        result = train(
            model, params, codec.encode(data.images.to(device)), data.labels.to(device), cfg.transfer,
            cfg.diffusion, seed=cfg.seed, desc=f"transfer {rid}", quiet=cfg.quiet,
            on_snapshot=lambda step, m: save_module(snapshot_path(cfg, cell, step), m),
        )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing method is recorded, not fatal
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        write_json(out / "train.json", record)
        print(f"transfer {rid}: FAILED ({record['error']})")
        return
    info = dataclasses.asdict(result)
    info.update(total_params=sum(p.numel() for p in model.parameters()), transferred_params=built.transferred,
                n_train_images=len(data))
    record.update(status="success", train_info=info, snapshots=snapshot_steps(cfg.transfer))
    write_json(out / "train.json", record)
    print(f"transfer {rid}: {result.steps} steps, loss {result.final_loss:.4f}, "
          f"{info['trainable_params']:,} trainable, {result.train_time_s:.1f}s")
