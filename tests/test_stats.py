"""The statistics of a verdict, against values computed by hand on small tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kind_bench.leaderboard import aggregate
from kind_bench.stats import holm, mean_interval, p_best, paired_test, verdict

T_975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student's t quantiles (tables)


def test_t_interval_of_three_values_by_hand():
    low, high, method = mean_interval([1.0, 2.0, 3.0])
    half = T_975[2] * 1.0 / math.sqrt(3)  # sd = 1, n = 3
    assert method == "t" and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)


def test_a_three_seed_interval_is_never_the_seed_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        values = rng.normal(size=3) * rng.uniform(0.1, 10)
        low, high, _ = mean_interval(values)
        assert low < values.min() and high > values.max()  # a percentile bootstrap would give the range


def test_bca_from_ten_values_and_none_below_two():
    low, high, method = mean_interval(np.arange(12, dtype=float))
    assert method == "bca" and low < 5.5 < high
    assert mean_interval([3.0])[2] == "none" and math.isnan(mean_interval([3.0])[0])


def test_paired_t_test_by_hand():
    test = paired_test([1, 2, 3, 4], [0, 0, 1, 1])  # differences 1, 2, 2, 3: mean 2, sd sqrt(2/3)
    t = 2 / (math.sqrt(2 / 3) / 2)
    assert t == pytest.approx(4.898979485566356)
    assert test.n == 4 and test.mean_diff == 2
    assert test.p == pytest.approx(0.016276603459428555, rel=1e-9)  # 2 * P(T_3 > 4.899)
    half = T_975[3] * math.sqrt(2 / 3) / 2
    assert (test.ci_low, test.ci_high) == (pytest.approx(2 - half), pytest.approx(2 + half))


def test_pairing_cancels_shared_noise_that_an_unpaired_view_keeps():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 5, size=5)  # e.g. an unlucky sampling draw shared by both methods
    a, b = 10 + shared, 10.5 + shared + rng.normal(0, 0.05, size=5)
    assert paired_test(a, b).p < 0.01
    assert mean_interval(a)[1] > mean_interval(b)[0]  # the unpaired intervals overlap


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 * 2 caps at 1; monotone: max(1, 0.9)


def test_verdict_needs_a_corrected_p_below_alpha_and_reads_the_direction():
    test = paired_test([1, 2, 3, 4], [0, 0, 1, 1])  # a is higher
    assert verdict(test, 0.01, lower_is_better=True) == "worse"
    assert verdict(test, 0.01, lower_is_better=False) == "better"
    assert verdict(test, 0.2, lower_is_better=True) == "no difference"


def test_p_best_by_hand():
    assert p_best({"a": [1, 1, 1], "b": [2, 2, 2]}, lower_is_better=True) == {"a": 1.0, "b": 0.0}
    assert p_best({"a": [1, 1], "b": [1, 1]}, lower_is_better=True) == {"a": 0.5, "b": 0.5}
    # resampling 2 seeds: (0,0) gives a mean 0 < 1 (a wins); (0,1), (1,0), (1,1) give 1.5 or 3 (b wins)
    shares = p_best({"a": [0, 3], "b": [1, 1]}, lower_is_better=True)
    assert shares["a"] == pytest.approx(0.25, abs=0.03) and shares["b"] == pytest.approx(0.75, abs=0.03)


def runs(rows: list[tuple[str, str, int, str, float]], apart: tuple[str, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame([
        {"task": t, "method": m, "seed": s, "status": st, "error": "" if st == "success" else "boom",
         "fd_digits": fd, "trainable_params": 10, "steps": 100, "apart": t in apart, "lr": 0.01, "config_digest": "x"}
        for t, m, s, st, fd in rows
    ])


def test_average_rank_is_over_the_tasks_every_ranked_method_ran():
    table = aggregate(runs([("t1", "a", 0, "success", 1.0), ("t1", "b", 0, "success", 2.0),
                            ("t2", "a", 0, "success", 3.0), ("t2", "b", 0, "success", 2.0),
                            ("t3", "a", 0, "success", 1.0), ("t3", "b", 0, "n/a", float("nan")),
                            ("small", "a", 0, "success", 1.0), ("small", "b", 0, "success", 2.0)],
                           apart=("small",)))
    by = table.set_index(["task", "method"])
    assert by.loc[("t1", "a"), "avg_rank"] == (1 + 2) / 2 and by.loc[("t1", "b"), "avg_rank"] == (2 + 1) / 2
    assert by.loc[("t3", "a"), "rank"] == 1 and by.loc[("small", "a"), "rank"] == 1  # ranked, but not averaged


def test_a_winner_needs_a_paired_test_not_separate_intervals():
    shared = [0.0, 5.0, -3.0, 2.0, 1.0]
    table = aggregate(runs([("t", "a", s, "success", 10 + x) for s, x in enumerate(shared)]
                           + [("t", "b", s, "success", 10.5 + x + 0.01 * s) for s, x in enumerate(shared)]))
    row = table.set_index("method").loc["a"]
    assert row.winner == "yes" and row.p_vs_next < 0.05 and row.p_best > 0.9
    assert row.fd_digits_ci_high > table.set_index("method").loc["b"].fd_digits_ci_low  # intervals overlap
