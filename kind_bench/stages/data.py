"""Stage ``data``: load the source, draw the stratified train / validation / test split, write it."""

from __future__ import annotations

from kind_bench.config import Config
from kind_bench.data import prepare, prepared_path


def run(cfg: Config) -> str:
    """Write ``artifacts/data/<data>.safetensors`` and print the split record."""
    record = prepare(cfg)
    print(f"data: {prepared_path(cfg)} train={record['n_train']} val={record['n_val']} test={record['n_test']} "
          f"(split seed {record['split_seed']}, source sha256 {str(record['source_sha256'])[:10]})")
    return "success"
