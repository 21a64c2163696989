"""The result record of one run and its provenance (the layout follows PEFT's method_comparison)."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from kind_bench.device import device_name

STATUSES = ("success", "failed", "n/a")
#: the method name of the noise-floor rows (held-out real images, written by the floor stage)
REFERENCE_ROW = "real_data"
TRACKED_PACKAGES = ("kind-bench", "torch", "diffusers", "timm", "torch-fidelity", "peft", "dvc", "hydra-core")
CODE_PATHS = ("kind_bench", "baselines", "benchmarks", "pyproject.toml")


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device) -> dict[str, Any]:
    """Git commit, whether the code differs from it, package versions, hardware and time.

    Same machine and thread count give bit-identical numbers; another CPU model or vector capability
    (``cpu_capability``: the SIMD kernels torch dispatches to) or a GPU agrees only within the intervals.
    """
    versions = {}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    status = _git("status", "--porcelain", "--", *CODE_PATHS)
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "packages": versions,
        "torch_build": {"cuda": torch.version.cuda, "threads": torch.get_num_threads()},
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record(
    *,
    run_info: dict[str, Any],
    train_info: dict[str, Any],
    metrics: dict[str, float],
    meta_info: dict[str, Any],
    metrics_by_budget: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Assemble a result record; ``run_info['status']`` must be one of STATUSES.

    ``metrics_by_budget`` maps a fraction of the transfer steps ("0.25", "0.5", "1.0") to the metrics of
    the snapshot taken there; ``metrics`` are those of the last snapshot.
    """
    if run_info.get("status") not in STATUSES:
        raise ValueError(f"status {run_info.get('status')!r} is not one of {STATUSES}")
    return {
        "run_info": run_info,
        "train_info": train_info,
        "metrics": metrics,
        "metrics_by_budget": metrics_by_budget or {},
        "meta_info": meta_info,
    }
