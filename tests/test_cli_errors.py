"""Bad input: one line naming the key and the valid choices, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kind_bench.cli import main

CASES = [
    (["transfer", "method=nope"], "method='nope' is not one of: auto_lg, difffit, dora, fine, full_finetune, heur_lg"),
    (["transfer", "task=nope"], "task='nope' is not one of:"),
    (["pretrain", "model=nope"], "model='nope' is not one of: dit_b2, dit_l2, dit_s2, dit_tiny"),
    (["transfer", "transfer.steps=many"], "transfer.steps"),
    (["transfer", "transfer.steps=-5"], "transfer.steps=-5 must be a positive integer"),
    (["data", "data=imagefolder", "data.root=/does/not/exist"], "data.root=/does/not/exist: no such directory"),
    (["evaluate", "sample.scheduler=euler"], "sample.scheduler='euler' is not one of: ddim, dpm"),
    (["frobnicate"], "verb 'frobnicate' is not one of"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kind-bench: error: "), err
    assert message in err
    assert not any(Path(tmp_path).rglob("*")), "nothing may be written"


def test_console_script_exit_code_and_single_line(tmp_path):
    exe = Path(sys.executable).with_name("kind-bench")
    proc = subprocess.run([str(exe), "transfer", "method=nope"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "kind-bench: error: method='nope' is not one of: auto_lg, difffit, dora, fine, full_finetune, heur_lg, kind, "
        "lora, pissa, scratch, svdiff, tleg"
    ]
