"""Stage ``transfer@<method>``: build each descendant from its ancestry and train it on the target task.

One call may run several cells (task x seed sweeps, ``task=a,b seed=0,1,2``) to pay process start-up
once. Each cell writes weight snapshots and ``train.json`` into its run folder, and, every
``transfer.checkpoint_every`` steps, a resumable checkpoint: a killed call rerun with the same config
resumes every unfinished cell where it stopped. A finished cell of the same training config, ancestry
weights and code (its ``train.json`` carries their fingerprint) is not retrained. A cell whose method
cannot build the target is recorded as ``n/a`` with the reason; a cell whose method raises or whose loss
diverges is recorded as ``failed`` with the error, and the other cells go on. Bad input is different:
it stops the call with a one-line error before anything is written.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from kind_bench.checkpoint import fingerprint, has_checkpoint
from kind_bench.config import Config, as_dict
from kind_bench.data import load_prepared, target_set
from kind_bench.errors import UserError
from kind_bench.io import load_metadata, read_json, save_module, write_json
from kind_bench.methods import make_method
from kind_bench.paths import Cell, ancestry_weights, cell_of, run_dir, snapshot_path
from kind_bench.stages.common import descendant_depth, load_ancestry, make_target, seed_everything, setup
from kind_bench.train import snapshot_schedule, train


def is_finished(cfg: Config, cell: Cell, tag: str) -> bool:
    """Whether the cell's run folder holds a successful run with fingerprint ``tag`` and all its snapshots."""
    path = run_dir(cfg, cell) / "train.json"
    try:
        record = read_json(path, "training record") if path.is_file() else {}
    except UserError:  # a damaged record means an unfinished run
        return False
    if record.get("status") != "success" or record.get("fingerprint") != tag:
        return False
    return all(snapshot_path(cfg, cell, s["step"]).is_file() for s in record["snapshots"])


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
    out = run_dir(cfg, cell)
    inherited = ""  # the ancestry's checksum: a re-trained ancestry means a re-trained descendant
    if method.ancestry and reason is None and ancestry_weights(cfg, method.ancestry.name).is_file():
        name = method.ancestry.name
        inherited = load_metadata(ancestry_weights(cfg, name), f"ancestry checkpoint ({name})").get("sha256", "")
    resume, tag = out / "resume.safetensors", fingerprint(as_dict(cfg), "transfer", type(method), inherited)
    if is_finished(cfg, cell, tag):
        print(f"transfer {rid}: up to date (same training config, ancestry and code)")
        return
    if reason is None:
        ancestry = load_ancestry(cfg, method.ancestry.name, codec, device) if method.ancestry else None
        train_set, _, split = load_prepared(cfg)
        data = target_set(train_set, cfg.task, shots=cfg.task.shots, seed=cfg.seed)
        record["split"] = split
    if not has_checkpoint(resume, tag):  # a killed run with the same config resumes; anything else restarts
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
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
            checkpoint=resume, fingerprint=tag,
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
    record.update(status="success", train_info=info, snapshots=snapshot_schedule(cfg.transfer), fingerprint=tag)
    write_json(out / "train.json", record)
    print(f"transfer {rid}: {result.steps} steps, loss {result.final_loss:.4f}, "
          f"{info['trainable_params']:,} trainable, {result.train_time_s:.1f}s")
