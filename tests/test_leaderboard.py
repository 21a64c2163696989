"""Leaderboard statistics: mean/std/bootstrap CI, ranks, CI-separated winners, reference rows, format."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kind_bench.leaderboard import aggregate, bootstrap_ci, format_table, markdown


def runs(rows: list[tuple[str, str, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"task": t, "method": m, "seed": s, "status": st, "error": "" if st == "success" else "boom",
         "fd_digits": fd, "class_accuracy": 0.5, "fd_digits@25%": fd * 2, "trainable_params": 10, "steps": 100}
        for t, m, s, st, fd in rows
    ])


def test_bootstrap_interval_contains_the_mean_and_needs_two_values():
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0]))
    assert lo <= 2.0 <= hi and lo >= 1.0 and hi <= 3.0
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([1.0])))


def test_ranks_follow_the_declared_direction_and_skip_reference_and_failures():
    table = aggregate(runs([
        ("novel", "a", s, "success", 1.0 + 0.01 * s) for s in range(3)
    ] + [("novel", "b", s, "success", 5.0 + 0.01 * s) for s in range(3)]
      + [("novel", "real_data", s, "success", 0.1) for s in range(3)]
      + [("novel", "c", 0, "failed", float("nan"))]))
    by = table.set_index("method")
    assert by.loc["a", "rank"] == 1 and by.loc["b", "rank"] == 2  # lower fd_digits is better
    assert math.isnan(by.loc["real_data", "rank"]) and math.isnan(by.loc["c", "rank"])
    assert by.loc["c", "status"] == "failed" and by.loc["c", "note"] == "boom"
    assert by.loc["a", "winner"] == "yes"  # CIs [1.00, 1.02] and [5.00, 5.02] are apart
    assert list(table.method) == ["real_data", "a", "b", "c"]  # reference first, then by rank
    assert by.loc["a", "fd_digits@25%"] == 2 * by.loc["a", "fd_digits"]


def test_no_winner_when_intervals_overlap_or_with_one_seed():
    overlapping = aggregate(runs([("t", "a", s, "success", v) for s, v in enumerate([1.0, 3.0, 2.0])]
                                 + [("t", "b", s, "success", v) for s, v in enumerate([1.5, 3.5, 2.5])]))
    assert (overlapping.winner == "").all()
    single = aggregate(runs([("t", "a", 0, "success", 1.0), ("t", "b", 0, "success", 9.0)]))
    assert (single.winner == "").all() and single.fd_digits_std.isna().all()


def test_average_rank_is_over_the_tasks_a_method_ran():
    table = aggregate(runs([("t1", "a", 0, "success", 1.0), ("t1", "b", 0, "success", 2.0),
                            ("t2", "a", 0, "success", 3.0), ("t2", "b", 0, "success", 2.0),
                            ("t3", "a", 0, "success", 1.0), ("t3", "b", 0, "n/a", float("nan"))]))
    avg = table.dropna(subset=["avg_rank"]).groupby("method").avg_rank.first()
    assert avg["a"] == (1 + 2 + 1) / 3 and avg["b"] == (2 + 1) / 2
    assert table.set_index(["task", "method"]).loc[("t3", "b"), "status"] == "n/a"


def test_formatting_is_fixed_precision_and_markdown_marks_the_winner():
    table = aggregate(runs([("novel", "a", s, "success", 1.0 + 0.01 * s) for s in range(3)]
                           + [("novel", "b", s, "success", 5.0 + 0.01 * s) for s in range(3)]))
    text = format_table(table)
    assert text.loc[0, "fd_digits"] == "1.0100" and text.loc[0, "trainable_params"] == "10"
    assert "| 1 | a ★ |" in markdown(table, "digits")
