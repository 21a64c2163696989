"""Stage ``data``: load the source, draw the stratified train / validation / test split, write it."""

from __future__ import annotations

from kind_bench.config import Config
from kind_bench.data import prepare, prepared_path


def run(cfg: Config) -> str:
    """Write ``artifacts/data/<data>.safetensors`` (and, for a task with a root of its own, that root's
    prepared set) and print the split records."""
    for task in (False, True) if cfg.task.root else (False,):
        record = prepare(cfg, task)
        print(f"data: {prepared_path(cfg, task)} train={record['n_train']} val={record['n_val']} "
              f"test={record['n_test']} (split seed {record['split_seed']}, source sha256 "
              f"{str(record['source_sha256'])[:10]})")
    return "success"
