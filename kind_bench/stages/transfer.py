"""Stage ``transfer``: build each descendant from its ancestry and train it on the target task.

One call may run several cells (task x seed sweeps, ``task=a,b seed=0,1,2``) to pay process start-up
once. Each cell writes weight snapshots and ``train.json`` into its run folder, and, every
``transfer.checkpoint_every`` steps, a resumable checkpoint: a killed call rerun with the same config
resumes every unfinished cell where it stopped. A cell is trained by one process at a time (a lock file
beside its run folder). Every snapshot carries the fingerprint of the run that wrote it (training config,
thread count, code, and the checksums of the prepared data and of the ancestry), and a finished cell with
the same fingerprint is not retrained. A cell whose method cannot build the target is recorded as ``n/a``
with the reason; a cell whose method raises or whose loss diverges is recorded as ``failed`` with the
error, and the other cells go on. Bad input is different: it stops the call with a one-line error before
anything is written.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from kind_bench.checkpoint import fingerprint, has_checkpoint
from kind_bench.config import Config, as_dict
from kind_bench.data import load_prepared, target_set
from kind_bench.data.latents import training_inputs, training_sources
from kind_bench.distributed import barrier, is_main, world
from kind_bench.errors import UserError
from kind_bench.io import load_metadata, read_json, save_module, write_json
from kind_bench.lock import exclusive
from kind_bench.methods import Method, distribution_of, make_method, training_phases, unique
from kind_bench.paths import Cell, ancestry_seed, cell_of, lock_path, run_dir, snapshot_path
from kind_bench.stages.common import (
    check_ancestry,
    descendant_depth,
    load_ancestry,
    make_target,
    seed_everything,
    setup,
)
from kind_bench.tracks import objective
from kind_bench.train import snapshot_schedule, train


def snapshot_fingerprint(record: dict[str, Any]) -> str | None:
    """The fingerprint a training record's snapshots carry: the run's own without the number of processes
    (a run resumes under another world size, so its earlier snapshots were written under the first one;
    records from before this rule stamped them with the run's fingerprint)."""
    return record.get("snapshot_fingerprint", record.get("fingerprint"))


def finished(cfg: Config, cell: Cell, tag: str) -> dict[str, Any] | None:
    """The cell's training record if it holds a successful run with fingerprint ``tag`` whose every
    snapshot was written by that same run; else None."""
    path = run_dir(cfg, cell) / "train.json"
    try:
        record = read_json(path, "training record") if path.is_file() else {}
        if record.get("status") != "success" or record.get("fingerprint") != tag:
            return None
        for snapshot in record["snapshots"]:
            file = snapshot_path(cfg, cell, snapshot["step"])
            if not file.is_file() or load_metadata(file, "snapshot").get("fingerprint") != snapshot_fingerprint(record):
                return None
    except (UserError, KeyError, TypeError):  # a damaged record or snapshot means an unfinished run
        return None
    return record


def inputs(cfg: Config, method: Method) -> list[str]:
    """Checksums of what a cell trains from: the prepared data (and the VAE that encodes it, in a latent space)
    and, if it has one, its ancestry seed."""
    found = training_sources(cfg, str(load_prepared(cfg, task=True).record["data_sha256"]))
    if method.ancestry is not None:
        found.append(check_ancestry(cfg, method.ancestry.name))
    return found


def train_cell(cfg: Config) -> str:
    """Train one (method, task, seed) cell and write its run folder; returns its status."""
    method = make_method(cfg)
    cell = cell_of(cfg)
    rid = cell.id
    device, codec = setup(cfg)
    target = make_target(cfg, codec, len(cfg.task.target_classes), descendant_depth(cfg))
    reason = method.unsupported(target, cfg.model.depth)
    out = run_dir(cfg, cell)
    sources = inputs(cfg, method) if reason is None else []
    tag = fingerprint(as_dict(cfg), "transfer", type(method), *sources)
    resume_tag = fingerprint(as_dict(cfg), "transfer", type(method), *sources, resumable=True)
    if finished(cfg, cell, tag):
        print(f"transfer {rid}: up to date (same training config, data, ancestry and code)")
        return "success"
    prepared = load_prepared(cfg, task=True)
    record: dict[str, Any] = {
        "run_id": rid, "method": method.name, "task": cfg.task.name, "seed": cfg.seed,
        "ancestry_seed": ancestry_seed(cfg) if method.ancestry else None, "config": as_dict(cfg), "error": None,
        "train_info": {}, "snapshots": [], "fingerprint": tag, "snapshot_fingerprint": resume_tag,
        "split": prepared.record,
        "method_source": distribution_of(method.name),
    }
    resume = out / "resume.safetensors"
    if is_main():
        if not has_checkpoint(resume, resume_tag):  # a killed run of the same config resumes; anything else restarts
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
    barrier()
    if reason is not None:
        record.update(status="n/a", error=reason)
        if is_main():
            write_json(out / "train.json", record)
        print(f"transfer {rid}: n/a ({reason})")
        return "n/a"
    try:
        ancestry = load_ancestry(cfg, method.ancestry.name, codec, device)[0] if method.ancestry else None
        data = target_set(prepared.train, cfg.task, shots=cfg.task.shots, seed=cfg.seed)
        seed_everything(cfg.seed)
        built = method.build(ancestry, target)
        model = built.model.to(device)
        phases = training_phases(method, model, cfg.transfer.final_layer)
        result = train(
            model, phases, training_inputs(cfg, data, codec, device), data.labels.to(device), cfg.transfer,
            objective(cfg, model), seed=cfg.seed, desc=f"transfer {rid}",
            quiet=cfg.quiet, checkpoint=resume, fingerprint=resume_tag,
            on_snapshot=lambda step, m: save_module(snapshot_path(cfg, cell, step), m, {"fingerprint": resume_tag},
                                                    params=unique([p for phase in phases for p in phase.params])),
            runtime=cfg.runtime,
        )
    except UserError:
        if is_main() and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # bad input found only now (e.g. a class the data lacks): leave nothing behind
        raise
    except Exception as exc:  # noqa: BLE001 - a failing method is recorded, not fatal
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        if is_main():
            write_json(out / "train.json", record)
        print(f"transfer {rid}: FAILED ({record['error']})")
        return "failed"
    info = dataclasses.asdict(result)
    info.update(total_params=sum(p.numel() for p in model.parameters()), transferred_params=built.transferred,
                n_train_images=len(data), depth=target.depth,
                phases=[{"until": p.until, "params": sum(q.numel() for q in p.params)} for p in phases])
    record.update(status="success", train_info=info, snapshots=snapshot_schedule(cfg.transfer),
                  world_size=world()[1])
    if is_main():
        write_json(out / "train.json", record)
    barrier()
    print(f"transfer {rid}: {result.steps} steps, loss {result.final_loss:.4f}, "
          f"{info['trainable_params']:,} trainable, {result.train_time_s:.1f}s")
    return "success"


def run(cfg: Config) -> str:
    """``kind-bench transfer``: train one cell while holding its lock."""
    cell = cell_of(cfg)
    with exclusive(lock_path(cfg, cell), f"cell {cell.id}"):
        return train_cell(cfg)
