"""The CI regression check: the ci suite reproduces the committed reference, and a perturbed reference fails."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from kind_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "ci.json"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> tuple[list[str], int, str]:
    """A full ci-suite check in a private folder, run once by whichever test of this module comes first
    (so the tests do not depend on their order or on sharing a process): overrides, exit status, output."""
    root = tmp_path_factory.mktemp("ci")
    overrides = [f"paths.artifacts={root / 'artifacts'}", f"paths.results={root / 'results'}",
                 f"suite.check.reference={REFERENCE}", "quiet=true"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["check", "suite=ci", *overrides])
    return overrides, status, out.getvalue()


@pytest.fixture(scope="module")
def ci_results(ci_run) -> list[str]:
    """The paths overrides of the module's ci-suite run."""
    return ci_run[0]


def test_ci_suite_matches_the_committed_reference(ci_run):
    _, status, out = ci_run
    assert status == 0, out
    assert "check: passed" in out


def test_a_perturbed_reference_fails_the_check_with_a_readable_table(ci_results, tmp_path, capsys):
    reference = json.loads(REFERENCE.read_text())
    reference["cells"]["kind-novel-0"]["fd_digits"] += 2.0
    reference["cells"]["lora-novel-0"]["trainable_params"] += 1
    perturbed = tmp_path / "ci.json"
    perturbed.write_text(json.dumps(reference))
    overrides = [o for o in ci_results if not o.startswith("suite.check.reference=")]
    assert main(["check", "--no-run", "suite=ci", *overrides, f"suite.check.reference={perturbed}"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and re.search(r"kind-novel-0 +fd_digits", out) and "trainable_params" in out
    assert "kind-bench check suite=ci --update" in out


def test_update_writes_a_reference_that_then_passes(ci_results, tmp_path, capsys):
    fresh = tmp_path / "ci.json"
    overrides = [o for o in ci_results if not o.startswith("suite.check.reference=")]
    assert main(["check", "--no-run", "--update", "suite=ci", *overrides, f"suite.check.reference={fresh}"]) == 0
    assert set(json.loads(fresh.read_text())["cells"]) == {"kind-novel-0", "full_finetune-novel-0", "lora-novel-0"}
    assert main(["check", "--no-run", "suite=ci", *overrides, f"suite.check.reference={fresh}"]) == 0


def test_the_default_suite_has_no_check_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--no-run"]) == 2
    assert "suite=digits has no check grid" in capsys.readouterr().err


def test_a_check_without_paths_runs_apart_from_the_published_files():
    from kind_bench.check import scratch
    from kind_bench.config import compose

    cfg, overrides = scratch(compose(["suite=ci"]), ["suite=ci"])
    assert (cfg.paths.artifacts, cfg.paths.results) == ("artifacts/check/ci/artifacts", "artifacts/check/ci/results")
    assert overrides[-2:] == ["paths.artifacts=artifacts/check/ci/artifacts",
                              "paths.results=artifacts/check/ci/results"]
    given = ["suite=ci", "paths.results=/tmp/x"]
    assert scratch(compose(given), given)[1] == given  # paths given: used as they are
