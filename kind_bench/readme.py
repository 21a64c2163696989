"""``python -m kind_bench.readme`` (``make readme``): the README carries the generated tables and findings.

Three kinds of marked region, so that no number in them can drift from the CSVs:

* ``<!-- findings:<suite>:start -->`` … ``<!-- findings:<suite>:end -->``: the text of
  ``results/leaderboard/<suite>_findings.md``, verbatim;
* ``<!-- glance:<suite>:start -->`` … ``<!-- glance:<suite>:end -->``: the "At a glance" and "Ranked apart"
  tables of ``results/leaderboard/<suite>.md`` (headings two levels down; a ranked-apart table without the
  ``n/a`` rows of methods that cannot run its task);
* ``<!-- table:results/<path>.md:start -->`` … ``<!-- table:results/<path>.md:end -->``: the first table of
  that generated markdown file (an ablation table, the descendant-size table).

This command copies them in, and ``tests/test_readme.py`` fails when the README and the files differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from kind_bench.errors import UserError
from kind_bench.leaderboard import check_published

SUITES = ("digits", "digits_cls")
KINDS = ("findings", "glance")


def block(suite: str, kind: str = "findings") -> re.Pattern[str]:
    """The README region of one suite's findings (or glance tables)."""
    return re.compile(rf"(<!-- {kind}:{suite}:start -->\n)(.*?)(<!-- {kind}:{suite}:end -->)", re.S)


#: a table region: the file is named in the marker, and only a markdown file under results/ is accepted
TABLE = re.compile(r"(<!-- table:(results/[\w/-]+(?:\.[\w-]+)*\.md):start -->\n)(.*?)(<!-- table:\2:end -->)", re.S)


def first_table(markdown: str) -> str:
    """The first markdown table of a file (its contiguous ``|`` lines)."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def glance(leaderboard_md: str) -> str:
    """The "At a glance" and "Ranked apart" sections of a leaderboard markdown, headings demoted, n/a rows out."""
    kept, inside = [], False
    for line in leaderboard_md.splitlines():
        if line.startswith("## "):
            inside = line.startswith(("## At a glance", "## Ranked apart"))
            line = "##" + line
        if inside and not re.match(r"\| [^|]+ \| n/a \|", line):
            kept.append(line)
    return "\n".join(kept).strip("\n") + "\n"


def generated(results: Path, suite: str, kind: str) -> str | None:
    """What a region of ``kind`` for ``suite`` holds, from the files under ``results`` (None: no file)."""
    name = f"{suite}_findings.md" if kind == "findings" else f"{suite}.md"
    path = results / "leaderboard" / name
    if not path.is_file():
        return None
    return path.read_text() if kind == "findings" else glance(path.read_text())


def synced(readme: str, results: Path) -> str:
    """``readme`` with every marked region replaced by its file's current text (refused unless each suite's
    leaderboard files are one finished build)."""
    for suite in SUITES:
        if any((results / "leaderboard" / name).is_file() for name in (f"{suite}.md", f"{suite}_findings.md")):
            check_published(results / "leaderboard", suite)
        for kind in KINDS:
            text = generated(results, suite, kind)
            if text is not None:
                readme = block(suite, kind).sub(lambda m, t=text: m.group(1) + t.rstrip("\n") + "\n" + m.group(3),
                                                readme)

    def table(match: re.Match[str]) -> str:
        path = results.parent / match.group(2)
        text = first_table(path.read_text()) if path.is_file() else match.group(3)
        return match.group(1) + text + match.group(4)

    return TABLE.sub(table, readme)


def main() -> int:
    """Rewrite README.md's marked regions."""
    path = Path("README.md")
    try:
        text = synced(path.read_text(), Path("results"))
    except UserError as exc:
        print(f"readme: error: {exc}", file=sys.stderr)
        return 1
    path.write_text(text)
    print("readme: findings, glance and table regions updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
