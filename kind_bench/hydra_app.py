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
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kind_bench.config import config_dir


def job(overrides: list[str]) -> int:
    """One cell: ``kind-bench run`` with the job's overrides (its exit status)."""
    from kind_bench.cli import main

    return main(["run", *overrides])


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def app(_: DictConfig) -> None:
    """Hydra calls this once per job; the job's own overrides decide the cell."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra")]
    status = job(overrides)
    if status != 0:
        raise SystemExit(status)


if __name__ == "__main__":
    sys.argv += ["hydra.job.chdir=False", "hydra.run.dir=artifacts/hydra/run",
                 "hydra.sweep.dir=artifacts/hydra/multirun", "hydra.output_subdir=null"]
    app()
