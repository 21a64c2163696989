"""The README carries the committed findings files verbatim, and says what the pipeline runs."""

from __future__ import annotations

from pathlib import Path

from kind_bench.readme import SUITES, block, synced

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_findings_are_the_generated_files():
    readme = (ROOT / "README.md").read_text()
    for suite in SUITES:
        assert block(suite).search(readme), f"README has no findings region for {suite}"
    assert synced(readme, ROOT / "results") == readme, "README findings differ from the files: run `make readme`"


def test_sync_replaces_only_the_marked_region(tmp_path):
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "digits_findings.md").write_text("new text\n")
    start, end = "<!-- findings:digits:start -->", "<!-- findings:digits:end -->"
    readme = f"before\n{start}\nold\n{end}\nafter\n"
    assert synced(readme, tmp_path) == f"before\n{start}\nnew text\n{end}\nafter\n"
