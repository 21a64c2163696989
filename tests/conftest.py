"""Shared fixtures: a throw-away workspace with the prepared digits and a quickly trained evaluator."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kind_bench.cli import main

from micro import micro


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A folder holding prepared data and an evaluator; tests chdir into copies of their own."""
    root = tmp_path_factory.mktemp("workspace")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["data", "quiet=true"]) == 0
        assert main(["evaluator", "evaluator.epochs=8", "quiet=true"]) == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def in_workspace(workspace, tmp_path, monkeypatch) -> Path:
    """A fresh working directory with the session's data and evaluator linked in."""
    link_shared(tmp_path, workspace)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def link_shared(root: Path, workspace: Path) -> None:
    """Link the session's prepared data and evaluator into ``root``."""
    for sub in ("artifacts/data", "artifacts/evaluator"):
        (root / sub).parent.mkdir(parents=True, exist_ok=True)
        (root / sub).symlink_to(workspace / sub, target_is_directory=True)


@pytest.fixture(scope="session")
def micro_ancestries(workspace, tmp_path_factory) -> Path:
    """``artifacts/digits`` holding the micro vanilla ancestry, seed 0, pre-trained once per test process
    (what ``kind-bench pretrain ancestry=vanilla`` with :func:`micro.micro` writes)."""
    root = tmp_path_factory.mktemp("micro-vanilla")
    link_shared(root, workspace)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["pretrain", "ancestry=vanilla", *micro(ancestry=False)]) == 0
    finally:
        os.chdir(cwd)
    return root / "artifacts/digits"


@pytest.fixture
def with_vanilla(in_workspace, micro_ancestries) -> Path:
    """:func:`in_workspace` with its own copy of the micro vanilla ancestry."""
    shutil.copytree(micro_ancestries, in_workspace / "artifacts/digits")
    return in_workspace


def pytest_configure(config) -> None:
    """Under pytest-xdist, pin each worker to its own core(s): every stage sizes its torch threads from the
    process's CPU affinity, so unpinned workers would each run one thread per core (2 workers x 2 threads on
    2 cores) and oversubscribe the CPU."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if worker is None or count < 2 or len(cores) < 2:
        return
    index = int(worker.removeprefix("gw"))
    os.sched_setaffinity(0, cores[index % len(cores) :: count] or cores)
