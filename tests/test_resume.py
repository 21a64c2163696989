"""Resume after a real SIGKILL, and determinism: the same config and seed give the same numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from kind_bench.checkpoint import LoopState, save_checkpoint
from kind_bench.cli import main

from micro import micro

#: a cell slow enough to be killed in the middle, checkpointing every 25 steps, on one thread
CELL = micro("method=kind", "transfer.steps=300", "transfer.checkpoint_every=25", "transfer.snapshots=[0.5,1.0]",
             "runtime.threads=1")
RUN = Path("artifacts/digits/runs/kind/kind-novel-0")


def result(root: Path, method: str = "kind") -> dict:
    """The published result record of the cell (novel, seed 0) of ``method``."""
    return json.loads((root / f"results/runs/digits/{method}/{method}-novel-0.json").read_text())


def outcome(root: Path) -> tuple[dict, dict]:
    """(final weights, metrics) of the cell, after evaluating it (without an SVD: the descendant's
    factorised layers are about to receive their weights)."""
    svd = torch.linalg.svd
    calls = []
    with mock.patch("torch.linalg.svd", lambda *a, **k: calls.append(1) or svd(*a, **k)):
        assert main(["evaluate", *CELL]) == 0
    assert not calls
    weights = load_file(str(root / RUN / "step-000300.safetensors"))
    return weights, result(root)["metrics"]


def test_a_run_killed_with_sigkill_resumes_and_ends_identical_to_an_uninterrupted_run(in_workspace, capsys):
    assert main(["pretrain", "ancestry=kind", *micro()]) == 0
    assert main(["transfer", *CELL]) == 0
    straight_weights, straight_metrics = outcome(in_workspace)

    checkpoint = in_workspace / RUN / "resume.safetensors"
    (in_workspace / RUN / "train.json").unlink()
    command = [str(Path(sys.executable).with_name("kind-bench")), "transfer", *CELL]
    proc = subprocess.Popen(command, cwd=in_workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert checkpoint.exists() and proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (in_workspace / RUN / "train.json").exists()
    # disk proportional to what trains: the snapshot and the resume file hold the tailors, label parameters
    # and buffers, not the frozen learngenes (rebuilt from the ancestry; their checksum is kept)
    resume_file = load_file(str(checkpoint))
    stored = {k.removeprefix("model.") for k in resume_file if k.startswith("model.")}
    assert stored == set(straight_weights) and any(".U_T" in k for k in stored)
    assert not any(part in k for k in stored for part in (".U_G", ".V_G", ".sigma_G"))

    capsys.readouterr()
    assert main(["transfer", *CELL, "quiet=false"]) == 0
    assert "resuming from step" in capsys.readouterr().out
    assert not checkpoint.exists()
    resumed_weights, resumed_metrics = outcome(in_workspace)
    assert straight_weights.keys() == resumed_weights.keys()
    assert all(bool((straight_weights[k] == resumed_weights[k]).all()) for k in straight_weights)
    assert resumed_metrics == straight_metrics


def test_a_checkpoint_of_another_config_is_not_resumed(in_workspace, capsys):
    assert main(["pretrain", "ancestry=kind", *micro()]) == 0
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    (in_workspace / RUN).mkdir(parents=True)
    save_checkpoint(in_workspace / RUN / "resume.safetensors", model, optimizer, schedule, torch.Generator(),
                    LoopState(step=100), tag="an-older-config")
    capsys.readouterr()
    assert main(["transfer", *CELL, "quiet=false"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert json.loads((in_workspace / RUN / "train.json").read_text())["status"] == "success"


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_same_config_and_seed_give_identical_metrics(in_workspace):
    overrides = micro("method=full_finetune", ancestry=False)
    results = []
    for _ in range(2):
        shutil.rmtree(in_workspace / "artifacts/digits/runs/full_finetune", ignore_errors=True)  # train anew
        assert main(["transfer", *overrides]) == 0
        assert main(["evaluate", *overrides]) == 0
        results.append(result(in_workspace, "full_finetune"))
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["metrics_by_budget"] == results[1]["metrics_by_budget"]


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_run_does_not_retrain_a_finished_cell_but_reevaluates_it(in_workspace, capsys):
    overrides = micro("method=full_finetune", "quiet=false", ancestry=False)
    assert main(["run", *overrides]) == 0
    record = in_workspace / "artifacts/digits/runs/full_finetune/full_finetune-novel-0/train.json"
    trained, first = record.read_text(), result(in_workspace, "full_finetune")["metrics"]
    capsys.readouterr()

    assert main(["run", *overrides, "sample.steps=3"]) == 0  # an evaluation setting: no retraining
    assert "up to date" in capsys.readouterr().out
    assert record.read_text() == trained
    assert result(in_workspace, "full_finetune")["metrics"] != first

    assert main(["run", *overrides, "transfer.lr=1e-3"]) == 0  # a training setting: retrained
    assert "up to date" not in capsys.readouterr().out
    assert record.read_text() != trained


def test_a_checkpoint_written_on_another_device_type_is_not_resumed(monkeypatch):
    from kind_bench import checkpoint

    config = {"seed": 0, "transfer": {"steps": 10}}
    on_cpu = checkpoint.fingerprint(config, "transfer", resumable=True)
    monkeypatch.setattr(checkpoint, "pick_device", lambda: torch.device("cuda"))  # a CUDA generator's state differs
    assert checkpoint.fingerprint(config, "transfer", resumable=True) != on_cpu
    assert checkpoint.fingerprint(config, "transfer") != checkpoint.fingerprint(config, "transfer", resumable=True)


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_a_run_resumed_under_another_number_of_processes_is_finished_and_evaluated(in_workspace, monkeypatch, capsys):
    from kind_bench import checkpoint, distributed, train
    from kind_bench.stages import transfer

    cell = micro("method=full_finetune", "transfer.steps=40", "transfer.checkpoint_every=10",
                 "transfer.snapshots=[0.25,1.0]", ancestry=False)

    def two_processes(*args, **kwargs):  # the fingerprints a 2-process launch computes on rank 0
        with monkeypatch.context() as patch:
            patch.setattr(distributed, "world", lambda: (0, 2))
            return checkpoint.fingerprint(*args, **kwargs)

    def killed_at_step_20(path, model, optimizer, schedule, generator, loop, *rest):
        save_checkpoint(path, model, optimizer, schedule, generator, loop, *rest)
        if loop.step == 20:  # after the step-10 snapshot
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(transfer, "fingerprint", two_processes)
        patch.setattr(train, "save_checkpoint", killed_at_step_20)
        assert main(["transfer", *cell]) != 0
    assert "interrupted" in capsys.readouterr().err
    run = in_workspace / "artifacts/digits/runs/full_finetune/full_finetune-novel-0"
    early = (run / "step-000010.safetensors").read_bytes()
    assert (run / "resume.safetensors").is_file()
    assert main(["transfer", *cell]) == 0  # resumed in one process: the snapshot from before the kill is kept
    assert (run / "step-000010.safetensors").read_bytes() == early and not (run / "resume.safetensors").exists()
    assert main(["evaluate", *cell]) == 0  # its step-10 snapshot, written under 2 processes, is the run's
    assert main(["run", *cell]) == 0 and "up to date" in capsys.readouterr().out
