"""Failure isolation (a broken method is recorded, the rest completes) and atomic result writing."""

from __future__ import annotations

import pandas as pd
import pytest

from kind_bench.cli import main
from kind_bench.methods import discover

from micro import micro

EXPLODES = '''
from kind_bench.methods import Method


class Explodes(Method):
    name = "explodes"
    description = "raises while building its descendant"
    ancestry = None

    def unsupported(self, target, ancestry_depth):
        return None

    def build(self, ancestry, target):
        raise RuntimeError("boom while building")

    def trainable_parameters(self, model):
        return list(model.parameters())
'''


@pytest.fixture
def explodes(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "explodes-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: explodes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kind_bench.methods]\nexplodes = kb_explodes:Explodes\n")
    (site / "kb_explodes.py").write_text(EXPLODES)
    monkeypatch.syspath_prepend(str(site))
    discover.cache_clear()
    yield
    discover.cache_clear()


def test_a_failing_method_is_recorded_every_other_cell_completes_and_the_call_exits_1(explodes, in_workspace,
                                                                                     capsys):
    sweep = ["task=novel,fewshot", "seed=0,1"]
    assert main(["run", *micro("method=explodes", ancestry=False), *sweep]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run: 4 of 4 cells failed" in err and "explodes-fewshot-1" in err
    assert main(["run", *micro("method=scratch", ancestry=False), *sweep]) == 0
    assert main(["leaderboard", "quiet=true"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits.csv", keep_default_na=False, na_values=[""])
    table = table.set_index(["task", "method"])
    for task in ("novel", "fewshot"):
        assert table.loc[(task, "explodes"), "status"] == "failed"
        assert "RuntimeError: boom while building" in table.loc[(task, "explodes"), "note"]
        assert table.loc[(task, "scratch"), "status"] == "success" and table.loc[(task, "scratch"), "n_seeds"] == 2
    assert "failed" in (in_workspace / "results/leaderboard/digits.md").read_text()


def test_an_interrupted_leaderboard_build_leaves_the_previous_csv_intact(in_workspace, monkeypatch):
    assert main(["run", *micro("method=scratch", ancestry=False)]) == 0
    assert main(["leaderboard", "quiet=true"]) == 0
    csv = in_workspace / "results/leaderboard/digits.csv"
    before = csv.read_bytes()

    def half_then_die(self, path, **kwargs):
        with open(path, "w") as handle:
            handle.write("task,method\nhalf")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_die)
    assert main(["leaderboard", "quiet=true"]) == 130  # interrupted: 128 + SIGINT
    assert csv.read_bytes() == before
    assert not [p for p in csv.parent.iterdir() if p.name.startswith(".")]
