"""The console script itself: exit status and a single line on stderr (the table is test_bad_input.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_console_script_exit_code_and_single_line(tmp_path):
    exe = Path(sys.executable).with_name("kind-bench")
    proc = subprocess.run([str(exe), "transfer", "method=nope"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "kind-bench: error: method='nope' is not one of: auto_lg, difffit, dora, fine, full_finetune, heur_lg, kind, "
        "lora, pissa, scratch, svdiff, tleg"
    ]
    assert not any(tmp_path.iterdir())
