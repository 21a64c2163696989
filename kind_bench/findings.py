"""KIND's claims, decided from the numbers: the findings file the leaderboard stage writes.

Each claim is a set of paired comparisons of KIND against named methods on named tasks, paired over
units: the seeds both ran, with the seeds that transfer from one pre-trained ancestry averaged into one
unit (:func:`kind_bench.leaderboard.seed_units`; 5 seeds on 3 ancestries are 3 units, not 5). The verdict
is **not reproduced** when any method is significantly better than KIND after Holm's correction within
the claim, **reproduced** when KIND is significantly better in every comparison, each at α (an
intersection-union test: no correction), and **inconclusive** otherwise. A verdict that changes when any
one unit is left out is marked *fragile*. Which methods a claim compares comes from each
method's declared ``family`` (``peft``, ``learngene``, ``baseline``), so a plugin joins the right claim.
The README carries this file's text between markers (``tests/test_readme.py`` checks it is current).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kind_bench.config import Config
from kind_bench.metrics import DIRECTION
from kind_bench.results import REFERENCE_ROW
from kind_bench.stats import ALPHA, Paired, holm, paired_test, verdict

KIND = "kind"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper and the comparisons that decide it."""

    title: str
    question: str
    others: tuple[str, ...]
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Comparison:
    """One paired test of KIND against ``other`` on ``task``."""

    task: str
    other: str
    test: Paired
    adjusted_p: float
    outcome: str


def families(methods: list[str]) -> dict[str, str]:
    """Each method's declared family (``other`` when it is not registered here)."""
    from kind_bench.methods import discover

    registry = discover()[0]
    return {m: registry[m].cls.family if m in registry else "other" for m in methods}


def generation_claims(runs: pd.DataFrame) -> list[Claim]:
    """KIND's three claims as comparisons available in these (successful) runs: a claim's tasks are those
    KIND ran, whatever methods outside the claim did there."""
    methods = sorted(set(runs.method) - {KIND, REFERENCE_ROW})
    family = families(methods)
    rivals = tuple(m for m in methods if family[m] in ("peft", "learngene"))
    mine = runs[runs.method == KIND]
    common = sorted(set(mine.task[~mine.apart]))
    shifted = tuple(sorted(set(mine.task[mine.domain != "identity"]) & set(common)))
    apart = tuple(sorted(set(runs.task[runs.apart])))
    shallow = tuple(m for m in methods if family[m] in ("learngene", "baseline")
                    and (runs[(runs.method == m) & runs.task.isin(apart)].status == "success").any())
    return [
        Claim("KIND beats PEFT and learngene methods with fewer trainable parameters",
              "Is KIND's primary metric better than every PEFT and learngene method's, task by task?",
              rivals, tuple(common)),
        Claim("Transferring learngenes alone mitigates domain shift",
              "Under domain shift, does KIND (learngenes + fresh tailors) beat inheriting everything "
              "(full fine-tuning) and inheriting nothing (scratch)?",
              tuple(m for m in ("full_finetune", "scratch") if m in methods), shifted),
        Claim("The components recombine into smaller models",
              "On a shallower descendant, does KIND's recombined model beat the methods that can build one?",
              shallow, apart),
    ]


def classification_claims(runs: pd.DataFrame, table: pd.DataFrame) -> list[Claim]:
    """Does KIND's learngene transfer beat the learngene baselines on top-1, and at which descendant sizes?
    One claim per depth: the full-depth ``novel`` task and every shallower descendant."""
    methods = sorted(set(runs.method) - {KIND, REFERENCE_ROW})
    family = families(methods)
    rivals = tuple(m for m in methods if family[m] == "learngene")
    depth = table[(table.method == KIND) & (table.status == "success")].set_index("task").depth
    tasks = ["novel", *sorted(set(runs.task[runs.apart]), key=lambda t: depth.get(t, 0))]
    return [Claim(f"KIND's learngenes beat the learngene baselines on top-1 at depth "
                  f"{int(depth[t]) if t in depth and pd.notna(depth[t]) else '?'} ({t})",
                  "Is KIND's top-1 higher than every learngene method's on this descendant size?", rivals, (t,))
            for t in tasks if t in set(runs.task)]


def decide(runs: pd.DataFrame, claim: Claim, metric: str, drop_seeds: frozenset[int] = frozenset()
           ) -> tuple[str, list[Comparison]]:
    """The claim's verdict and its comparisons (optionally without some seeds), paired over units.

    Not reproduced: some rival significantly better than KIND after Holm's correction (a union of tests).
    Reproduced: KIND significantly better than every rival, each at α (an intersection-union test, whose
    level is α with no correction). Else inconclusive.
    """
    from kind_bench.leaderboard import per_unit

    lower = DIRECTION[metric] == "lower"
    data = runs[~runs.seed.isin(drop_seeds)]
    raw = []
    for task in claim.tasks:
        for other in claim.others:
            scores = per_unit(data, task, [KIND, other], metric)
            if len(scores) == 2 and len(scores[KIND]) >= 2:
                raw.append((task, other, paired_test(scores[KIND], scores[other])))
    adjusted = holm([t.p for _, _, t in raw]) if raw else []
    comparisons = [Comparison(task, other, test, p, verdict(test, p, lower))
                   for (task, other, test), p in zip(raw, adjusted, strict=True)]
    if not comparisons:
        return "inconclusive", comparisons
    if any(c.outcome == "worse" for c in comparisons):
        return "not reproduced", comparisons
    every_better = all(verdict(c.test, c.test.p, lower) == "better" for c in comparisons)
    return ("reproduced" if every_better else "inconclusive"), comparisons


def fragile(runs: pd.DataFrame, claim: Claim, metric: str, verdict_all: str) -> list[str]:
    """The units whose removal changes the verdict (leave one unit out: an ancestry and all its seeds)."""
    from kind_bench.leaderboard import seed_units

    mine = runs[runs.method == KIND]
    units = seed_units(mine, sorted(set(mine.seed)))
    shaky = []
    for unit, seeds in units.groupby(units).groups.items():
        if decide(runs, claim, metric, drop_seeds=frozenset(seeds))[0] != verdict_all:
            shaky.append(f"{unit} (seed {', '.join(map(str, sorted(seeds)))})")
    return shaky


def _parameters(table: pd.DataFrame, others: tuple[str, ...]) -> str:
    counts = table[table.method != REFERENCE_ROW].groupby("method").trainable_params.max()
    if KIND not in counts or pd.isna(counts[KIND]):
        return ""
    mine = counts[KIND]
    fewer = [f"{m} ({int(counts[m]):,})" for m in others if m in counts and counts[m] > mine]
    more = [f"{m} ({int(counts[m]):,})" for m in others if m in counts and counts[m] <= mine]
    return (f"Trainable parameters: KIND {int(mine):,}; fewer than {', '.join(fewer) or 'none'}; "
            f"not fewer than {', '.join(more) or 'none'}.")


def left_out(every: pd.DataFrame, claim: Claim, comparisons: list[Comparison]) -> list[str]:
    """What a claim's comparisons could not use: its methods' failed runs on its tasks (their seeds are
    dropped from both sides of a pair; a failure is rarely at random) and the pairs with fewer than two
    shared units (not compared at all)."""
    methods = [KIND, *claim.others]
    mine = every[every.method.isin(methods) & every.task.isin(claim.tasks)]
    failed = mine[~mine.status.isin(["success", "n/a"])].sort_values(["task", "method", "seed"])
    runs = ", ".join(f"{r.method} {r.task} seed {int(r.seed)}" for r in failed.itertuples())
    notes = [f"failed, left out of the pairs: {runs}"] if runs else []
    ran = set(zip(mine.task[mine.status == "success"], mine.method[mine.status == "success"], strict=True))
    compared = {(c.task, c.other) for c in comparisons}
    skipped = [f"{other} on {task}" for task in claim.tasks for other in claim.others
               if (task, other) not in compared and (task, other) in ran]
    if skipped:
        notes.append(f"not compared (fewer than two shared units): {', '.join(skipped)}")
    return notes


def claim_section(index: int, claim: Claim, runs: pd.DataFrame, table: pd.DataFrame, metric: str,
                  every: pd.DataFrame) -> list[str]:
    """One claim: verdict, fragility, its comparisons as a table, and what they left out (``every``: all the
    runs, failed ones included; ``runs``: the successful ones)."""
    result, comparisons = decide(runs, claim, metric)
    shaky = fragile(runs, claim, metric, result)
    tag = f" (fragile: leaving out {'; or '.join(shaky)} changes it)" if shaky else ""
    lines = [f"### Claim {index}: \"{claim.title}\": **{result}**{tag}", "", claim.question, ""]
    notes = left_out(every, claim, comparisons)
    if notes:
        lines += [f"Left out: {'; '.join(notes)}.", ""]
    if not comparisons:
        return [*lines, "No comparison is possible with these runs (a method or task is missing).", ""]
    lines += [f"| task | KIND vs | units | Δ {metric} (KIND − other) [95% CI, unadjusted] | p | p (Holm) | outcome |",
              "|:--|:--|--:|:--|--:|--:|:--|"]
    for c in comparisons:
        t = c.test
        lines.append(f"| {c.task} | {c.other} | {t.n} | {t.mean_diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}] | "
                     f"{t.p:.3g} | {c.adjusted_p:.3g} | {c.outcome} |")
    counts = {o: sum(c.outcome == o for c in comparisons) for o in ("better", "inconclusive", "worse")}
    lower = DIRECTION[metric] == "lower"
    alone = sum(verdict(c.test, c.test.p, lower) == "better" for c in comparisons)
    lines += ["", f"After Holm: KIND better in {counts['better']}, inconclusive in {counts['inconclusive']}, "
              f"worse in {counts['worse']} of {len(comparisons)} comparisons. Each at α alone (what decides "
              f"\"reproduced\"): better in {alone}."]
    if index == 1 and (params := _parameters(table, claim.others)):
        lines.append(params)
    return [*lines, ""]


def findings_markdown(cfg: Config, runs: pd.DataFrame, table: pd.DataFrame) -> str:
    """The findings file: every claim, decided by paired tests on the committed per-seed numbers."""
    from kind_bench.leaderboard import metric_columns, primary_metric

    metric = primary_metric(metric_columns(runs))
    if metric is None:
        return f"## Findings: {cfg.suite.name}\n\nNo run succeeded: no claim can be decided.\n"
    lines = [f"## Findings: {cfg.suite.name} (generated by `kind-bench leaderboard`; do not edit)", "",
             f"Decided on `{metric}` ({DIRECTION[metric]} is better) of the test images with paired t-tests over "
             f"units, α = {ALPHA}: seeds that transfer from one pre-trained ancestry are one unit (averaged first: "
             "they share its pre-training), over the seeds both methods ran. Not reproduced: some method "
             "significantly better than KIND after Holm's correction within the claim; reproduced: KIND "
             "significantly better in every comparison, each at α (an intersection-union test needs no "
             "correction); else inconclusive. `outcome` is Holm-corrected; the intervals are not. Fragile: "
             "leaving out one unit changes the verdict.", ""]
    ok = runs[runs.status == "success"]
    if KIND not in set(ok.method):
        return "\n".join([*lines, "KIND has no successful run here: no claim can be decided.", ""])
    if cfg.track == "classification":
        lines += ["KIND on a classifier is our adaptation (the paper evaluates KIND on generation only): the "
                  "ancestry is routed by its own prediction (a learngenes-only pass predicts the class, a second "
                  "pass opens that class's tailors); at transfer the learngenes are inherited and fresh tailors are "
                  "all open.", ""]
        claims = classification_claims(ok, table)
    else:
        claims = generation_claims(ok)
    for index, claim in enumerate(claims, start=1):
        lines += claim_section(index, claim, ok, table, metric, every=runs)
    return "\n".join(lines)
