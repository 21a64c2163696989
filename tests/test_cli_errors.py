"""The console script itself: exit status and a single line on stderr (the table is test_bad_input.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from micro import micro

EXE = Path(sys.executable).with_name("kind-bench")


def test_console_script_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([str(EXE), "transfer", "method=nope"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "kind-bench: error: method='nope' is not one of: auto_lg, difffit, dora, fine, full_finetune, head_only, "
        "heur_lg, kind, linear_probe, lora, pissa, scratch, svdiff, tleg"
    ]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_an_interrupt_says_how_to_resume_in_one_line(in_workspace, sig, code):
    cell = micro("method=full_finetune", "transfer.steps=3000", "transfer.checkpoint_every=20", ancestry=False)
    proc = subprocess.Popen([str(EXE), "transfer", *cell], cwd=in_workspace, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = in_workspace / "artifacts/digits/runs/full_finetune/full_finetune-novel-0/resume.safetensors"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert err.strip().splitlines() == [
        f"kind-bench: interrupted ({sig.name}): rerun the same command to resume (finished cells are kept; an "
        "unfinished one resumes from its last checkpoint)"]
    assert checkpoint.exists()


def test_a_repeated_sweep_value_is_one_cell():
    from kind_bench.cli import expand_sweeps

    assert expand_sweeps(["seed=0,0,1", "task=novel"]) == [["seed=0", "task=novel"], ["seed=1", "task=novel"]]
