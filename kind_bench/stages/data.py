"""Stage ``data``: load the source, draw the stratified split, write the prepared set."""

from __future__ import annotations

from kind_bench.config import Config
from kind_bench.data import prepare, prepared_path


def run(cfg: Config) -> None:
    """Write ``artifacts/data/<data>.safetensors`` and print the split record."""
    record = prepare(cfg)
    print(f"data: {prepared_path(cfg)} train={record['n_train']} test={record['n_test']} "
          f"(split seed {record['split_seed']}, sha1 {str(record['test_index_sha1'])[:10]})")
