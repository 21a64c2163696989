"""Stage ``digests``: one file per registered method whose content changes exactly when its code does.

DVC sees only the files a stage lists, and a plugin's code lives outside this repository, so every
``run@<method>`` stage depends on ``artifacts/digests/<method>.json``: the SHA-256 of the method's package
(and of its ancestry's), its config file here if it has one, and its distribution's name and version. The
stage runs on every ``dvc repro`` (``always_changed``) and costs one start-up; an unchanged digest leaves
the run stages up to date, an edited plugin reruns its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from kind_bench.checkpoint import source_digest
from kind_bench.config import Config, config_dir
from kind_bench.io import file_sha256, write_json
from kind_bench.methods import discover, distribution_of


def method_digest(name: str) -> dict[str, object]:
    """What identifies a method's code: its package, its ancestry's package, its YAML file, its distribution."""
    cls = discover()[0][name].cls
    yaml = config_dir() / "method" / f"{name}.yaml"
    return {
        "method": source_digest(cls),
        "ancestry": source_digest(cls.ancestry) if cls.ancestry else None,
        "config": file_sha256(yaml) if yaml.is_file() else None,
        "distribution": distribution_of(name),
    }


def run(cfg: Config) -> str:
    """Write ``<artifacts>/digests/<method>.json`` for every registered method (only when it changed)."""
    out = Path(cfg.paths.artifacts) / "digests"
    for name in sorted(discover()[0]):
        path = out / f"{name}.json"
        digest = method_digest(name)
        if not path.is_file() or json.loads(path.read_text()) != digest:
            write_json(path, digest)
    print(f"digests: {out} ({len(discover()[0])} methods)")
    return "success"
