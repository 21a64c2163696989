"""The grid on many workers: Hydra's submitit launcher (its local mode here, SLURM on a cluster) or DVC's
experiment queue, one job per cell, each writing its own result; then one leaderboard call that collects
them and refuses an incomplete grid."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kind_bench.cli import main

from micro import micro


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_a_hydra_multirun_runs_one_job_per_cell_and_the_leaderboard_collects_them(in_workspace):
    sweep = [sys.executable, "-m", "kind_bench.hydra_app", "-m", "hydra/launcher=submitit_local",
             "method=full_finetune,head_only", *micro(ancestry=False)]
    proc = subprocess.run(sweep, cwd=in_workspace, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (in_workspace / "artifacts/hydra/multirun/multirun.yaml").is_file()
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # two jobs at once: the cores split between them
    for method in ("full_finetune", "head_only"):
        record = json.loads((in_workspace / f"results/runs/digits/{method}/{method}-novel-0.json").read_text())
        assert record["run_info"]["config"]["runtime"]["threads"] == share
    (in_workspace / "params.yaml").write_text("suite: digits\nmethods: {full_finetune: x, head_only: x}\n"
                                              "tasks: novel\nseeds: '0'\n")
    assert main(["leaderboard"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv").set_index("method")
    assert (table.loc[["full_finetune", "head_only"], "status"] == "success").all()
    (in_workspace / "params.yaml").write_text("suite: digits\nmethods: {full_finetune: x, head_only: x}\n"
                                              "tasks: novel\nseeds: '0,1'\n")
    assert main(["leaderboard"]) == 1  # seed 1 never ran: listed, rows marked incomplete


def test_a_local_concurrent_sweep_shares_the_cores_among_its_jobs():
    from kind_bench.hydra_app import local_thread_share

    sweep = ["-m", "hydra/launcher=submitit_local", "method=kind,lora", "seed=range(0,3)", "task=novel"]
    assert local_thread_share(sweep, 16) == 2  # 6 jobs at once on 16 cores
    assert local_thread_share(sweep, 4) == 1  # at least one thread each
    assert local_thread_share([*sweep, "runtime.threads=4"], 16) is None  # the user's choice stands
    assert local_thread_share(["-m", "hydra/launcher=submitit_slurm", "method=kind,lora"], 16) is None  # elsewhere
    assert local_thread_share(["-m", "method=kind,lora"], 16) is None  # Hydra's basic launcher: one at a time


def test_threads_come_from_the_config_then_omp_num_threads_then_the_cores(monkeypatch):
    from kind_bench.config import RuntimeConfig, torch_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads(RuntimeConfig(workers=2), per_cell=True) == max(1, cores // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a launcher running processes side by side (torchrun, dvc queue)
    assert torch_threads(RuntimeConfig(workers=2), per_cell=True) == 3
    assert torch_threads(RuntimeConfig(workers=2, threads=5), per_cell=True) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "auto")  # not a count: ignored
    assert torch_threads(RuntimeConfig(workers=1), per_cell=True) == cores


def _git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _git_identity(monkeypatch) -> None:
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "kind-bench test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@kind-bench.invalid")


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_the_dvc_experiment_queue_runs_a_two_cell_grid_on_two_workers_and_the_leaderboard_collects_it(
        in_workspace, monkeypatch):
    _git_identity(monkeypatch)
    # DVC's queue workers start `dvc` from PATH
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # the shape of dvc.yaml's run stage (one per method, the cells from params), on the micro config
    run = [sys.executable, "-m", "kind_bench.cli", "run", "method=${key}", "task=${tasks}", "seed=${seeds}",
           *micro(ancestry=False)]
    (in_workspace / "dvc.yaml").write_text(
        "stages:\n  run:\n    foreach: ${methods}\n    do:\n"
        f"      cmd: {' '.join(shlex.quote(word) for word in run)}\n"
        "      outs:\n        - results/runs/digits/${key}:\n            cache: false\n")
    grid = "suite: digits\nmethods: {full_finetune: x}\ntasks: novel,shift\nseeds: '0'\n"
    (in_workspace / "params.yaml").write_text(grid)
    (in_workspace / ".gitignore").write_text("artifacts/\n")
    _git(in_workspace, "init", "-q")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=in_workspace, check=True)
    _git(in_workspace, "add", "-A")
    _git(in_workspace, "commit", "-qm", "baseline")
    for task in ("novel", "shift"):  # one experiment per cell
        subprocess.run([*dvc, "exp", "run", "--queue", "-C", "artifacts", "-S", f"tasks={task}",
                        "run@full_finetune"], cwd=in_workspace, check=True, capture_output=True)
    try:
        subprocess.run([*dvc, "queue", "start", "-j", "2"], cwd=in_workspace, check=True, capture_output=True)
        deadline = time.monotonic() + 240
        while len(_git(in_workspace, "for-each-ref", "refs/exps").splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(1)  # a finished experiment is a ref (cheap to poll; `dvc queue status` is a dvc start-up)
        while time.monotonic() < deadline:
            status = subprocess.run([*dvc, "queue", "status"], cwd=in_workspace, capture_output=True,
                                    text=True).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(1)
    finally:
        subprocess.run([*dvc, "queue", "stop", "--kill"], cwd=in_workspace, capture_output=True)
    failed = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    logs = [subprocess.run([*dvc, "queue", "logs", name], cwd=in_workspace, capture_output=True, text=True).stdout
            for name in failed]
    assert status.count("Success") == 2, status + "".join(log[-3000:] for log in logs)
    assert not (in_workspace / "results/runs").exists()  # the workers ran in copies; nothing here yet
    collect = subprocess.run([sys.executable, "-m", "kind_bench.exp_queue"], cwd=in_workspace,
                             capture_output=True, text=True)
    assert collect.returncode == 0 and "2 result records" in collect.stdout, collect.stdout + collect.stderr
    assert main(["leaderboard"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv").set_index("method")
    assert set(table.index) == {"full_finetune"} and set(table.task) == {"novel", "shift"}
    assert (table.status == "success").all()


def test_collecting_experiments_reads_only_the_current_baseline_and_refuses_two_different_records(
        tmp_path, monkeypatch):
    from kind_bench.errors import UserError
    from kind_bench.exp_queue import collect

    _git_identity(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _git(tmp_path, "init", "-q")
    (tmp_path / "README").write_text("baseline\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "baseline")
    baseline = _git(tmp_path, "rev-parse", "HEAD")

    def experiment(name: str, record: str, base: str = baseline) -> None:
        _git(tmp_path, "checkout", "-q", "--detach", baseline)
        path = tmp_path / "results/runs/digits/lora" / record
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name}\n")
        _git(tmp_path, "add", "-A")
        _git(tmp_path, "commit", "-qm", name)
        _git(tmp_path, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/{name}", "HEAD")
        _git(tmp_path, "checkout", "-q", "-")  # back on the baseline, without the record

    experiment("cell-a", "lora-novel-0.json")
    experiment("cell-b", "lora-novel-1.json")
    experiment("older-code", "lora-novel-2.json", base="f" * 40)
    assert [p.name for p in collect("results/runs")] == ["lora-novel-0.json", "lora-novel-1.json"]
    assert (tmp_path / "results/runs/digits/lora/lora-novel-1.json").read_text() == "cell-b\n"
    for path in (tmp_path / "results").rglob("*.json"):
        path.unlink()
    experiment("cell-a-again", "lora-novel-0.json")
    with pytest.raises(UserError, match="lora-novel-0.json: experiments .*cell-a.* and .*cell-a-again"):
        collect("results/runs")
    assert not list((tmp_path / "results").rglob("*.json"))  # refused before writing anything
