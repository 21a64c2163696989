"""The README carries the committed findings files verbatim, and says what the pipeline runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kind_bench.readme import KINDS, SUITES, block, glance, synced

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_tables_and_findings_are_the_generated_files():
    readme = (ROOT / "README.md").read_text()
    for suite in SUITES:
        for kind in KINDS:
            assert block(suite, kind).search(readme), f"README has no {kind} region for {suite}"
    assert synced(readme, ROOT / "results") == readme, "README tables or findings differ from the files: run " \
        "`make readme`"


def test_sync_replaces_only_the_marked_region_of_a_finished_leaderboard_build(tmp_path):
    from kind_bench.errors import UserError
    from kind_bench.leaderboard import manifest_path, publish

    out, staging = tmp_path / "leaderboard", tmp_path / "staging"
    staging.mkdir()
    (staging / "digits_findings.md").write_text("new text\n")
    start, end = "<!-- findings:digits:start -->", "<!-- findings:digits:end -->"
    readme = f"before\n{start}\nold\n{end}\nafter\n"
    publish(staging, {"digits_findings.md": out / "digits_findings.md"}, manifest_path(out, "digits"))
    assert synced(readme, tmp_path) == f"before\n{start}\nnew text\n{end}\nafter\n"
    manifest_path(out, "digits").unlink()  # as an interrupted build leaves it
    with pytest.raises(UserError, match="digits_manifest.json not found"):
        synced(readme, tmp_path)


def test_glance_keeps_the_summary_tables_and_drops_what_cannot_run():
    leaderboard = ("# Leaderboard: digits\n\nintro\n\n## At a glance: fd_digits ↓ per task\n\n| method | novel |\n"
                   "| a | 0.5 [0.4, 0.6] |\n\n## Ranked apart: small (not every method can run it)\n\n"
                   "| method | small | rank |\n| a | 0.7 [0.6, 0.8] | 1 |\n| b | n/a |  |\n\n"
                   "## novel\n\n| per-task |\n")
    assert glance(leaderboard) == ("#### At a glance: fd_digits ↓ per task\n\n| method | novel |\n"
                                   "| a | 0.5 [0.4, 0.6] |\n\n#### Ranked apart: small (not every method can run it)"
                                   "\n\n| method | small | rank |\n| a | 0.7 [0.6, 0.8] | 1 |\n")


def test_a_table_region_holds_the_first_table_of_its_file_under_results(tmp_path):
    (tmp_path / "results" / "ablations").mkdir(parents=True)
    table = "| a | b |\n|:--|:--|\n| 1 | 2 |\n"
    (tmp_path / "results" / "ablations" / "x.md").write_text(f"# T\n\nintro\n\n{table}\nmore\n")
    start, end = "<!-- table:results/ablations/x.md:start -->", "<!-- table:results/ablations/x.md:end -->"
    readme = f"before\n{start}\nold\n{end}\nafter\n"
    assert synced(readme, tmp_path / "results") == f"before\n{start}\n{table}{end}\nafter\n"
    outside = readme.replace("results/ablations/x.md", "results/../x.md")
    assert synced(outside, tmp_path / "results") == outside  # a path leaving results/ is not a region
