"""``python -m kind_bench.exp_queue``: bring the cells DVC's experiment queue ran into this workspace.

DVC runs each queued experiment in a temporary copy of the repository and keeps its outputs as a git
commit under ``refs/exps``. A run stage queued with a smaller ``tasks``/``seeds`` is one cell (or a few)
of the grid, so the grid runs on ``-j`` local workers::

    dvc exp run --queue -S tasks=novel -S seeds=0 run@lora      # one experiment per cell
    dvc exp run --queue -S tasks=novel -S seeds=1 run@lora
    dvc queue start -j 2                                         # workers; `dvc queue status` to follow
    python -m kind_bench.exp_queue                               # copy their result records here
    kind-bench leaderboard                                       # refuses a grid with a cell missing

Only experiments whose baseline is the current commit are read (an experiment of older code is not
mixed in), and only the published result records each one added or changed (``results/runs``). Two experiments
that wrote different records for the same cell are refused, with both named.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kind_bench.errors import UserError
from kind_bench.io import atomic_path


def _git(*args: str) -> bytes:
    proc = subprocess.run(["git", *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"git {args[0]}: {proc.stderr.decode().strip() or 'failed'}")
    return proc.stdout


def experiment_refs(baseline: str) -> list[str]:
    """The experiment refs DVC keeps for ``baseline`` (``refs/exps/<sha[:2]>/<sha[2:]>/<name>``)."""
    prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
    refs = _git("for-each-ref", "--format=%(refname)", prefix).decode().split()
    return sorted(ref for ref in refs if ref.startswith(prefix))


def collect(results: str) -> list[Path]:
    """Write every record the current commit's experiments added or changed under ``results`` (a folder
    relative to the repository root); their paths."""
    baseline = _git("rev-parse", "HEAD").decode().strip()
    found: dict[str, tuple[str, bytes]] = {}
    for ref in experiment_refs(baseline):
        changed = _git("diff", "--name-only", "--diff-filter=AM", baseline, ref, "--", results).decode()
        for name in changed.split():
            blob = _git("show", f"{ref}:{name}")
            if name in found and found[name][1] != blob:
                raise UserError(f"{name}: experiments {found[name][0]} and {ref} wrote different records; "
                                "remove one (dvc exp remove) and collect again")
            found[name] = (ref, blob)
    for name, (_, blob) in found.items():
        with atomic_path(name) as tmp:
            tmp.write_bytes(blob)
    return [Path(name) for name in sorted(found)]


def main() -> int:
    """Collect, and say how many records came from how many experiments."""
    from kind_bench.config import compose
    from kind_bench.paths import published_root

    try:
        results = published_root(compose([])).as_posix()
        written = collect(results)
    except UserError as exc:
        print(f"kind-bench exp_queue: error: {exc}", file=sys.stderr)
        return 2
    print(f"exp_queue: {len(written)} result records collected into {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
