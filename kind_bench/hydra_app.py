"""``python -m kind_bench.hydra_app -m <cell keys> [hydra/launcher=...]``: one job per cell through Hydra.

The CLI composes configs with Hydra's compose API, which cannot take a launcher; this thin ``@hydra.main``
entry point can. Each job of a multirun is exactly ``kind-bench run <its overrides>`` (transfer, then
evaluate, one cell), writing its own result under ``paths.results`` (a shared filesystem on a cluster);
``kind-bench leaderboard`` then collects them and refuses an incomplete grid. On SLURM, with
``hydra-submitit-launcher`` installed (``pip install -e ".[cluster]"``)::

    python -m kind_bench.hydra_app -m hydra/launcher=submitit_slurm hydra.launcher.partition=<p> \\
        hydra.launcher.gpus_per_node=1 method=kind,lora task=novel,shift seed=0,1,2,3,4
    kind-bench leaderboard

Hydra's own (basic) launcher runs the same sweep one job after another on this machine.
``hydra/launcher=submitit_local`` starts every job at once on this machine: unless ``runtime.threads``
is given, each job then gets an equal share of the usable cores (``runtime.threads``, recorded in each
result), instead of every job sizing its threads from all of them and oversubscribing the CPU.
"""

from __future__ import annotations

import math
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig

from kind_bench.config import config_dir

#: launchers that run a sweep's jobs at the same time on this machine
CONCURRENT_LOCAL_LAUNCHERS = ("submitit_local",)


def job(overrides: list[str]) -> int:
    """One cell: ``kind-bench run`` with the job's overrides (its exit status)."""
    from kind_bench.cli import main

    return main(["run", *overrides])


def local_thread_share(overrides: list[str], cores: int) -> int | None:
    """Torch threads per job when a local launcher runs the sweep's jobs at once (cores shared equally
    among the jobs, at least one each); None when the launcher runs them elsewhere or one at a time, or
    ``runtime.threads`` is given. Hydra's own parser reads the sweep (``a,b``, ``range(…)``, …) from the
    command line's overrides (its flags are skipped)."""
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and o[0] != "-"])
    except OverrideParseException:
        return None  # Hydra itself reports the bad override
    values = {o.key_or_group: o for o in parsed}
    launcher = values.get("hydra/launcher")
    if launcher is None or launcher.is_sweep_override() or launcher.value() not in CONCURRENT_LOCAL_LAUNCHERS:
        return None
    if "runtime.threads" in values:
        return None
    jobs = math.prod(len(list(o.sweep_string_iterator())) for o in parsed
                     if o.is_sweep_override() and not o.is_interval_sweep())
    return max(1, cores // jobs)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def app(_: DictConfig) -> None:
    """Hydra calls this once per job; the job's own overrides decide the cell."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra")]
    status = job(overrides)
    if status != 0:
        raise SystemExit(status)


if __name__ == "__main__":
    multirun = "-m" in sys.argv or "--multirun" in sys.argv
    share = local_thread_share(sys.argv[1:], len(os.sched_getaffinity(0))) if multirun else None
    sys.argv += ["hydra.job.chdir=False", "hydra.run.dir=artifacts/hydra/run",
                 "hydra.sweep.dir=artifacts/hydra/multirun", "hydra.output_subdir=null"]
    if share is not None:
        sys.argv.append(f"runtime.threads={share}")
    app()
