"""Shared fixtures: a throw-away workspace with the prepared digits and a quickly trained evaluator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kind_bench.cli import main


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
    for sub in ("artifacts/data", "artifacts/evaluator"):
        (tmp_path / sub).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / sub).symlink_to(workspace / sub, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path
