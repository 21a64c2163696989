"""The statistics of a verdict, against values computed by hand on small tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kind_bench.errors import UserError
from kind_bench.findings import Claim, decide, fragile
from kind_bench.leaderboard import aggregate, per_unit
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


def test_equal_differences_get_the_sign_tests_p_not_zero():
    two, three = paired_test([1.0, 2.0], [0.9, 1.9]), paired_test([1, 2, 3], [0, 1, 2])
    assert (two.p, three.p) == (pytest.approx(0.5), pytest.approx(0.25))  # 2 / 2^n: two or three agree by chance
    assert two.test == "sign" and verdict(three, three.p, lower_is_better=True) == "inconclusive"
    assert paired_test([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5]).p == pytest.approx(2 / 2**6)
    assert paired_test([1, 2], [1, 2]).p == 1.0


def test_the_paired_interval_and_p_are_one_t_test_at_any_number_of_units():
    rng = np.random.default_rng(3)
    for n in (4, 12, 30):  # 12 and 30: where an interval of one mean switches to BCa
        for _ in range(50):
            d = rng.normal(0.3, 1.0, size=n)
            test = paired_test(d, np.zeros(n))
            assert (test.p < 0.05) == (test.ci_low > 0 or test.ci_high < 0)
            half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
            assert (test.ci_low, test.ci_high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))


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
    assert verdict(test, 0.2, lower_is_better=True) == "inconclusive"  # not separated, not shown equal


def test_p_best_by_hand():
    assert p_best({"a": [1, 1, 1], "b": [2, 2, 2]}, lower_is_better=True) == {"a": 1.0, "b": 0.0}
    assert p_best({"a": [1, 1], "b": [1, 1]}, lower_is_better=True) == {"a": 0.5, "b": 0.5}
    # resampling 2 seeds: (0,0) gives a mean 0 < 1 (a wins); (0,1), (1,0), (1,1) give 1.5 or 3 (b wins)
    shares = p_best({"a": [0, 3], "b": [1, 1]}, lower_is_better=True)
    assert shares["a"] == pytest.approx(0.25, abs=0.03) and shares["b"] == pytest.approx(0.75, abs=0.03)


def runs(rows: list[tuple[str, str, int, str, float]], apart: tuple[str, ...] = (),
         ancestries: int | None = None) -> pd.DataFrame:
    """Result rows; with ``ancestries``, seed s transfers from ancestry s % ancestries (else none: scratch)."""
    return pd.DataFrame([
        {"task": t, "method": m, "seed": s, "status": st, "error": "" if st == "success" else "boom",
         "fd_digits": fd, "trainable_params": 10, "steps": 100, "apart": t in apart, "lr": 0.01, "config_digest": "x",
         "unit": None if ancestries is None else s % ancestries}
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
    assert row.winner == "yes" and row.p_vs_next < 0.05
    assert row.fd_digits_ci_high > table.set_index("method").loc["b"].fd_digits_ci_low  # intervals overlap
    assert math.isnan(row.p_best)  # a bootstrap over 5 units is overconfident: not reported


def test_p_best_is_reported_from_ten_units():
    shared = np.linspace(-3, 3, 12)
    table = aggregate(runs([("t", "a", s, "success", 10 + x) for s, x in enumerate(shared)]
                           + [("t", "b", s, "success", 10.5 + x + 0.01 * s) for s, x in enumerate(shared)]))
    by = table.set_index("method")
    assert by.loc["a", "p_best"] == 1.0 and by.loc["b", "p_best"] == 0.0


def test_seeds_that_share_an_ancestry_are_one_unit():
    # seeds 0..4 on ancestries 0, 1, 2, 0, 1: three units, each the mean of its seeds
    a = [1.0, 4.0, 2.0, 3.0, 6.0]
    b = [0.0, 1.0, 1.5, 0.5, 1.0]
    table = aggregate(runs([("t", "a", s, "success", v) for s, v in enumerate(a)]
                           + [("t", "b", s, "success", v) for s, v in enumerate(b)], ancestries=3))
    row = table.set_index("method").loc["a"]
    units = [(1 + 3) / 2, (4 + 6) / 2, 2.0]
    mean, sd = np.mean(units), np.std(units, ddof=1)
    assert row.n_seeds == 5 and row.n_units == 3
    assert row.fd_digits == pytest.approx(mean) and row.fd_digits_std == pytest.approx(sd)
    assert row.fd_digits_ci_high == pytest.approx(mean + T_975[2] * sd / math.sqrt(3))
    scores = per_unit(runs([("t", "a", s, "success", v) for s, v in enumerate(a)]
                           + [("t", "b", s, "success", v) for s, v in enumerate(b)], ancestries=3), "t", ["a", "b"],
                      "fd_digits")
    assert scores["a"] == pytest.approx(units) and scores["b"] == pytest.approx([0.25, 1.0, 1.5])
    assert paired_test(scores["a"], scores["b"]).n == 3


def test_a_seed_with_two_ancestries_is_refused():
    rows = runs([("t", "a", 0, "success", 1.0), ("t", "b", 0, "success", 2.0),
                 ("t", "a", 1, "success", 1.0), ("t", "b", 1, "success", 2.5)], ancestries=3)
    rows.loc[(rows.method == "b") & (rows.seed == 1), "unit"] = 0
    with pytest.raises(UserError, match="seed 1 transfers from ancestry seeds"):
        per_unit(rows, "t", ["a", "b"], "fd_digits")


CLAIM = Claim("KIND beats x and y", "?", ("x", "y"), ("t",))


def claim_runs(kind: list[float], x: list[float], y: list[float], ancestries: int) -> pd.DataFrame:
    return runs([("t", m, s, "success", v) for m, values in (("kind", kind), ("x", x), ("y", y))
                 for s, v in enumerate(values)], ancestries=ancestries)


def test_reproduced_is_an_intersection_union_test_without_holm():
    # each comparison alone is significant (raw p 0.038 and 0.032); Holm over the two would not be
    kind = [1.0, 2.0, 3.0, 4.0]
    data = claim_runs(kind, [v + d for v, d in zip(kind, (0.5, 1.0, 0.7, 0.2), strict=True)],
                      [v + d for v, d in zip(kind, (0.6, 1.0, 0.8, 0.2), strict=True)], ancestries=4)
    result, comparisons = decide(data, CLAIM, "fd_digits")
    assert all(c.test.p < 0.05 for c in comparisons) and max(c.adjusted_p for c in comparisons) > 0.05
    assert result == "reproduced"


def test_the_verdict_is_over_ancestries_and_fragile_names_the_unit():
    # five seeds on three ancestries: per seed KIND is clearly worse than x, per unit (3) it is not
    kind = [1.0, 1.0, 1.0, 1.0, 1.0]
    x = [0.0, 0.5, 0.96, 0.02, 0.45]
    assert paired_test(kind, x).p < 0.05  # what a per-seed test would conclude
    y = [2.0, 2.1, 1.9, 2.05, 1.95]
    data = claim_runs(kind, x, y, ancestries=3)
    assert decide(data, CLAIM, "fd_digits")[0] == "inconclusive"
    assert decide(claim_runs(kind, x, y, ancestries=5), CLAIM, "fd_digits")[0] == "not reproduced"
    six = claim_runs([1.0] * 6, [0.0, -0.1, 0.1, 0.0, -0.1, 0.1], [2.0, 2.001, 1.999] * 2, ancestries=3)  # 3 units
    assert decide(six, CLAIM, "fd_digits")[0] == "not reproduced"
    # without ancestry 0 the differences are 1.1 and 0.9 (p 0.063 on 2 units); without 1 or 2 still p < 0.05
    assert fragile(six, CLAIM, "fd_digits", "not reproduced") == ["ancestry 0 (seed 0, 3)"]


def test_a_claims_tasks_do_not_depend_on_methods_outside_it_and_what_it_leaves_out_is_said():
    from kind_bench.findings import claim_section, generation_claims

    rows = [(t, m, s, "success", 1.0 + 0.1 * s + (0.5 if m != "kind" else 0.0))
            for t in ("novel", "shift") for m in ("kind", "full_finetune", "scratch", "lora") for s in range(3)]
    rows[-1] = ("shift", "lora", 2, "failed", float("nan"))  # a method outside Claim 2 fails one seed on shift
    every = runs(rows, ancestries=3).assign(domain=lambda d: d.task.map({"novel": "identity", "shift": "rot"}))
    ok = every[every.status == "success"]
    first, second, _ = generation_claims(ok)
    assert first.tasks == ("novel", "shift") and second.tasks == ("shift",) and second.others == ("full_finetune",
                                                                                                "scratch")
    text = "\n".join(claim_section(1, first, ok, aggregate(every), "fd_digits", every=every))
    assert "Left out: failed, left out of the pairs: lora shift seed 2." in text
    assert "| shift | lora | 2 |" in text  # paired over the two seeds both ran
    assert "Left out" not in "\n".join(claim_section(2, second, ok, aggregate(every), "fd_digits", every=every))
