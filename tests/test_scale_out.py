"""The grid on many workers through Hydra's submitit launcher: one job per cell (its local mode here, SLURM
on a cluster), each writing its own result; then one leaderboard call that collects them and refuses an
incomplete grid."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from kind_bench.cli import main

from micro import micro


def test_a_hydra_multirun_runs_one_job_per_cell_and_the_leaderboard_collects_them(in_workspace):
    assert main(["pretrain", "ancestry=vanilla", *micro(ancestry=False)]) == 0
    sweep = [sys.executable, "-m", "kind_bench.hydra_app", "-m", "hydra/launcher=submitit_local",
             "method=full_finetune,head_only", *micro(ancestry=False)]
    proc = subprocess.run(sweep, cwd=in_workspace, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (in_workspace / "artifacts/hydra/multirun/multirun.yaml").is_file()
    (in_workspace / "params.yaml").write_text("suite: digits\nmethods: {full_finetune: x, head_only: x}\n"
                                              "tasks: novel\nseeds: '0'\n")
    assert main(["leaderboard"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv").set_index("method")
    assert (table.loc[["full_finetune", "head_only"], "status"] == "success").all()
    (in_workspace / "params.yaml").write_text("suite: digits\nmethods: {full_finetune: x, head_only: x}\n"
                                              "tasks: novel\nseeds: '0,1'\n")
    assert main(["leaderboard"]) == 1  # seed 1 never ran: listed, rows marked incomplete
