"""``python -m kind_bench.budget``: where the time of a full ``dvc repro`` goes (both tracks).

Runs the whole pipeline once, forced (``dvc repro --force``: the command ``make repro`` runs, with every
stage rerun), and timestamps DVC's ``Running stage '<name>'`` lines as they stream: a stage's wall time
runs from its line to the next one (the last stage's to the end of the call). It measures separately what
one ``kind-bench`` process spends starting (Python, torch, diffusers, our config). Prints wall time per
group of stages (data + evaluator, ancestries, transfer + evaluation runs, reference rows, recombination,
leaderboard) split into start-up and the rest, and writes the table to ``results/budget.json``. Start-up
per process is the median of three cold measurements; the rest of a stage is its work plus DVC's own
bookkeeping.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

GROUPS = (("data", "data + evaluator"), ("evaluator", "data + evaluator"), ("digests", "code digests"),
          ("pretrain", "ancestries"), ("tune", "tuning"), ("tuning", "tuning"), ("run", "transfer + evaluation"),
          ("floor", "reference rows"), ("recombine", "recombination"), ("ablate", "ablations"),
          ("leaderboard", "leaderboard"), ("pretrain_cls", "classification"), ("tune_cls", "classification"),
          ("tuning_cls", "classification"), ("run_cls", "classification"), ("ablate_cls", "classification"),
          ("leaderboard_cls", "classification"))
STARTUP_PROBE = "from kind_bench.cli import main; from diffusers import DiTTransformer2DModel"
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def startup_seconds() -> float:
    """Median wall time of a process that only imports what a stage imports."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP_PROBE], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_repro() -> tuple[float, list[tuple[str, float]]]:
    """Run ``dvc repro --force`` and return its total wall time and each stage's, in pipeline order.

    DVC's output is read unbuffered, so each line is timestamped when the stage starts.
    """
    starts: list[tuple[str, float]] = []
    begin = time.perf_counter()
    with subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        for line in proc.stdout:
            match = STAGE_LINE.search(line)
            if match:
                starts.append((match.group(1), time.perf_counter()))
                print(f"{time.perf_counter() - begin:7.1f} s  {match.group(1)}", flush=True)
    end = time.perf_counter()
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed with exit status {proc.returncode}")
    ends = [t for _, t in starts[1:]] + [end]
    return end - begin, [(name, stop - start) for (name, start), stop in zip(starts, ends, strict=True)]


def main() -> int:
    """Run the pipeline, then print and write the breakdown."""
    startup = startup_seconds()
    total, stages = timed_repro()
    rows: dict[str, dict[str, float]] = {}
    for stage, wall in stages:
        group = next(label for prefix, label in GROUPS if stage.split("@")[0] == prefix)
        row = rows.setdefault(group, {"stages": 0, "wall_s": 0.0})
        row["stages"] += 1
        row["wall_s"] += wall
    for row in rows.values():
        row["startup_s"] = min(row["wall_s"], row["stages"] * startup)
        row["rest_s"] = row["wall_s"] - row["startup_s"]
    print(f"\nstart-up per kind-bench process: {startup:.1f} s (median of 3)")
    print(f"{'group':22s} {'stages':>6s} {'wall s':>8s} {'start-up s':>10s} {'work+dvc s':>10s}")
    for group, row in rows.items():
        print(f"{group:22s} {row['stages']:6d} {row['wall_s']:8.1f} {row['startup_s']:10.1f} {row['rest_s']:10.1f}")
    print(f"{'total (dvc repro)':22s} {sum(r['stages'] for r in rows.values()):6d} {total:8.1f} "
          f"{sum(r['startup_s'] for r in rows.values()):10.1f} {sum(r['rest_s'] for r in rows.values()):10.1f}")
    Path("results").mkdir(exist_ok=True)
    Path("results/budget.json").write_text(json.dumps(
        {"total_s": round(total, 1), "startup_per_process_s": round(startup, 2),
         "stages": {name: round(wall, 1) for name, wall in stages},
         "groups": {g: {k: round(v, 1) for k, v in r.items()} for g, r in rows.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
