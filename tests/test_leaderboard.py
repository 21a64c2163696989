"""The leaderboard refuses what it cannot trust: stray files, bad metrics, mixed configs, missing cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kind_bench.cli import main
from kind_bench.config import compose
from kind_bench.identity import seedless_digest
from kind_bench.leaderboard import aggregate, format_table, load_runs, markdown, per_unit, run

METRICS = {"fd_digits": 1.0, "kid_digits": 0.1, "is_digits": 5.0, "is_gap_digits": 0.1, "precision_digits": 0.5,
           "recall_digits": 0.5, "class_accuracy": 0.9}


def write(root: Path, method: str, task: str, seed: int, fd: float, status: str = "success", lr: float = 0.01,
          name: str | None = None, drop: str | None = None, **info: object) -> Path:
    config = {"task": {"name": task, "depth_ratio": 1.0, "domain": "identity"},
              "suite": {"name": "digits", "ancestry_seeds": 3},
              "seed": seed, "transfer": {"lr": lr}}
    record = {"run_info": {"method": method, "task": task, "seed": seed, "status": status, "error": None,
                           "config_digest": seedless_digest(config), "config": config, "namespace": "runs",
                           **info},
              "train_info": {"trainable_params": 10, "steps": 100},
              "metrics": {**METRICS, "fd_digits": fd} if status == "success" else {}, "metrics_by_budget": {}}
    if drop:
        block, key = drop.split(".")
        del record[block][key]
    path = root / "results/runs/digits" / method / (name or f"{method}-{task}-{seed}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, allow_nan=True))
    return path


def grid(root: Path, methods: list[str], seeds: int = 3) -> None:
    (root / "params.yaml").write_text(f"suite: digits\nmethods: {{{', '.join(f'{m}: x' for m in methods)}}}\n"
                                      f"tasks: novel\nseeds: \"{','.join(map(str, range(seeds)))}\"\n")


@pytest.fixture
def board(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for seed in range(3):
        write(tmp_path, "a", "novel", seed, 1.0 + 0.1 * seed)
        write(tmp_path, "b", "novel", seed, 2.0 + 0.1 * seed)
    grid(tmp_path, ["a", "b"])
    return tmp_path


def table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "results/leaderboard/digits.csv", keep_default_na=False, na_values=[""]).set_index(
        "method")


def test_only_files_named_for_their_cell_are_read(board):
    write(board, "a", "novel", 0, 100.0, name="a-novel-0 (copy).json")
    write(board, "a", "novel", 3, 100.0, name="notes.json")
    assert main(["leaderboard"]) == 0
    assert table(board).loc["a", "n_seeds"] == 3 and table(board).loc["a", "fd_digits"] == pytest.approx(1.1)


def test_a_file_that_claims_another_cell_is_refused(board, capsys):
    write(board, "a", "novel", 1, 1.0, name="a-novel-2.json")
    assert main(["leaderboard"]) == 2
    assert "records cell a-novel-1, not the one its name says" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_a_non_finite_metric_fails_the_cell_instead_of_winning_or_vanishing(board, bad):
    write(board, "b", "novel", 0, bad)
    assert main(["leaderboard"]) == 0
    rows = table(board)
    assert rows.loc["b", "status"] == "failed" and "fd_digits missing or not finite" in rows.loc["b", "note"]
    assert rows.loc["a", "rank"] == 1 and math.isnan(rows.loc["b", "rank"])


def test_a_record_missing_its_blocks_is_one_line(board, capsys):
    write(board, "b", "novel", 1, 2.0, drop="run_info.seed")
    assert main(["leaderboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks run_info.seed" in err


def test_seeds_with_different_configs_are_never_pooled(board, capsys):
    write(board, "a", "novel", 2, 0.5, lr=0.02)
    assert main(["leaderboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a on novel: seeds were run with different configs" in err


def edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(("change", "redigest", "message"), [
    (lambda r: r["run_info"]["config"]["transfer"].update(lr=0.5), False, "does not match its config_digest"),
    (lambda r: r["run_info"].pop("config_digest"), False, "does not match its config_digest"),
    (lambda r: r["run_info"]["config"]["task"].update(name="shift"), True, "was run with task='shift'"),
    (lambda r: r["run_info"]["config"]["suite"].update(name="digits_cls"), True, "was run with suite='digits_cls'"),
    (lambda r: r["run_info"].update(namespace="adhoc/0123"), False, "belongs to namespace 'adhoc/0123'"),
])
def test_a_record_whose_provenance_does_not_hold_is_refused(board, capsys, change, redigest, message):
    path = board / "results/runs/digits/a/a-novel-1.json"
    edit(path, change)
    if redigest:  # a consistent record of another cell or suite: only its content gives it away
        edit(path, lambda r: r["run_info"].update(config_digest=seedless_digest(r["run_info"]["config"])))
    assert main(["leaderboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_records_outside_the_grid_are_refused(board, capsys):
    write(board, "a", "novel", 7, 0.5)
    write(board, "bogus", "novel", 0, 0.1)
    assert main(["leaderboard"]) == 2
    assert "2 result records are outside the grid of params.yaml (a-novel-7, bogus-novel-0)" in capsys.readouterr().err


def test_a_boolean_metric_is_not_a_number(board):
    edit(board / "results/runs/digits/b/b-novel-0.json", lambda r: r["metrics"].update(fd_digits=True))
    assert main(["leaderboard"]) == 0
    assert table(board).loc["b", "status"] == "failed"


def test_missing_cells_are_listed_and_their_rows_marked_incomplete(board, capsys):
    grid(board, ["a", "b", "c"], seeds=5)
    assert main(["leaderboard"]) == 1
    out = capsys.readouterr().out
    assert "incomplete grid: 9 cells missing" in out and "c-novel-0" in out
    rows = table(board)
    assert rows.loc["a", "status"] == "incomplete" and "missing seeds 3, 4" in rows.loc["a", "note"]
    assert rows.loc["c", "status"] == "incomplete" and math.isnan(rows.loc["a", "rank"])


def test_every_cell_failed_still_builds_a_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in range(2):
        write(tmp_path, "a", "novel", seed, 0, status="failed")
    assert main(["leaderboard"]) == 0
    assert table(tmp_path).loc["a", "status"] == "failed"


def test_tables_findings_and_plots_are_replaced_together_and_leftovers_cleaned(board, monkeypatch):
    assert main(["leaderboard"]) == 0
    out = board / "results/leaderboard"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"digits.csv", "digits.md", "digits_findings.md", "digits_pareto.png"} <= set(before)
    (out / ".tmp-digits-stale").mkdir()
    (out / ".digits.csv.x.tmp").write_text("half")
    (out / ".tmp-digits_cls-live").mkdir()  # another suite's build, running beside this one: left alone

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    write(board, "a", "novel", 0, 0.1)
    with monkeypatch.context() as patch:
        patch.setattr("kind_bench.plots.convergence_plot", die)  # after the CSV and Markdown are staged
        with pytest.raises(KeyboardInterrupt):
            run(compose([]))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main(["leaderboard"]) == 0
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".tmp-digits_cls-live"]


def test_formatting_is_fixed_precision_and_markdown_names_the_interval(board):
    frame = aggregate(load_runs(board / "results/runs/digits"))
    text = format_table(frame)
    assert text.set_index("method").loc["a", "fd_digits"] == "1.1000"
    assert text.set_index("method").loc["a", "ci_method"] == "t"
    assert "95% CI of the mean" in markdown(frame, "digits")


def test_a_second_build_of_the_same_leaderboard_is_refused_while_one_runs(board, capsys):
    from kind_bench.lock import exclusive

    with exclusive(board / "artifacts/locks/leaderboard-digits.lock", "a build"):
        assert main(["leaderboard"]) == 2
    assert "the digits leaderboard is being run by process" in capsys.readouterr().err
    assert main(["leaderboard"]) == 0


def test_a_metric_missing_for_some_seeds_is_not_averaged_over_the_rest(board):
    edit(board / "results/runs/digits/b/b-novel-1.json", lambda r: r["metrics"].pop("kid_digits"))
    assert main(["leaderboard"]) == 0
    row = table(board).loc["b"]
    assert math.isnan(row.kid_digits) and "kid_digits missing for seed 1" in row.note
    assert row.fd_digits == pytest.approx(2.1) and row.n_seeds == 3


def test_a_method_without_an_ancestry_is_summarised_over_the_units_it_is_paired_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind, scratch = [3.21, 3.19, 0.205, 3.20, 3.22], [3.0, 3.0, 0.0, 3.0, 3.01]  # KIND worse on every seed
    for seed in range(5):
        write(tmp_path, "kind", "novel", seed, kind[seed], ancestry_seed=seed % 3)
        write(tmp_path, "scratch", "novel", seed, scratch[seed])  # no ancestry: the suite's units all the same
    grid(tmp_path, ["kind", "scratch"], seeds=5)
    assert main(["leaderboard"]) == 0
    rows = table(tmp_path)
    assert rows.loc["kind", "n_units"] == rows.loc["scratch", "n_units"] == 3
    assert rows.loc["scratch", "rank"] == 1 and rows.loc["kind", "winner"] != "yes"
    paired = per_unit(load_runs(tmp_path / "results/runs/digits"), "novel", ["kind", "scratch"], "fd_digits")
    for method in ("kind", "scratch"):  # the table's mean is the mean of the units the tests pair
        assert rows.loc[method, "fd_digits"] == pytest.approx(np.mean(paired[method]), abs=1e-4)  # CSV: 4 places


def test_tied_methods_share_a_mid_rank_and_snapshots_are_averaged_by_unit_like_the_final_metric(tmp_path,
                                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in range(5):  # units: seeds 0+3, 1+4, 2
        for method, fd in (("a", 1.0), ("b", 1.0), ("c", 2.0)):  # a and b tie exactly
            path = write(tmp_path, method, "novel", seed, fd + (0.3 if seed == 2 else 0.0), ancestry_seed=seed % 3)
            edit(path, lambda r, s=seed: r.update(metrics_by_budget={"0.5": {"fd_digits": 10.0 if s == 2 else s}}))
    grid(tmp_path, ["a", "b", "c"], seeds=5)
    assert main(["leaderboard", "quiet=true"]) == 0
    rows = table(tmp_path)
    assert rows.loc["a", "rank"] == rows.loc["b", "rank"] == 1.5 and rows.loc["c", "rank"] == 3
    assert rows.loc["a", "avg_rank"] == rows.loc["b", "avg_rank"] == 1.5
    # @50%: units (0+3)/2, (1+4)/2, 10 -> 4.667, as the final metric is averaged (over the seeds: 3.6)
    assert rows.loc["a", "fd_digits@50%"] == pytest.approx(14 / 3, abs=1e-4)


def test_methods_of_one_task_scored_with_different_settings_are_not_ranked_together(board, capsys):
    for seed in range(3):  # every seed of b sampled with fewer steps: a consistent row, but not a's scoring
        path = board / f"results/runs/digits/b/b-novel-{seed}.json"
        edit(path, lambda r: r["run_info"]["config"].update(sample={"steps": 2}))
        edit(path, lambda r: r["run_info"].update(config_digest=seedless_digest(r["run_info"]["config"])))
    assert main(["leaderboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "on novel, these methods were scored with different data/task/sample/eval" in err
    assert "(a; b)" in err


def test_a_snapshot_that_is_not_finite_for_some_seeds_is_not_averaged_over_the_rest(board):
    for seed in range(3):
        value = float("nan") if seed == 1 else 1.0
        edit(board / f"results/runs/digits/a/a-novel-{seed}.json",
             lambda r, v=value: r.update(metrics_by_budget={"0.5": {"fd_digits": v}}))
    assert main(["leaderboard"]) == 0
    rows = table(board)
    assert math.isnan(rows.loc["a", "fd_digits@50%"]) and "fd_digits@50% missing for seed 1" in \
        rows.loc["a", "note"]


def test_leaderboard_files_that_are_not_one_finished_build_are_refused(board, monkeypatch):
    from kind_bench.errors import UserError
    from kind_bench.leaderboard import check_published

    out = board / "results/leaderboard"
    assert main(["leaderboard"]) == 0
    check_published(out, "digits")  # a finished build
    csv = (out / "digits.csv").read_text()
    (out / "digits.csv").write_text(csv.replace("a,", "b,", 1))  # edited after the build
    with pytest.raises(UserError, match="digits.csv is not the file the digits leaderboard build recorded"):
        check_published(out, "digits")
    moves = []
    real = Path.replace

    def interrupted(self, target):  # the build dies after its first file is in place
        if moves:
            raise KeyboardInterrupt
        moves.append(target)
        return real(self, target)

    write(board, "a", "novel", 0, 0.5)
    with monkeypatch.context() as patch:
        patch.setattr(Path, "replace", interrupted)
        assert main(["leaderboard"]) == 130  # interrupted
    with pytest.raises(UserError, match="digits_manifest.json not found: the digits leaderboard files are not one"):
        check_published(out, "digits")  # one new file beside old ones: not one build
    assert main(["leaderboard"]) == 0
    check_published(out, "digits")
