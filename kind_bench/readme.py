"""``python -m kind_bench.readme`` (``make readme``): the README carries the generated findings verbatim.

Between ``<!-- findings:<suite>:start -->`` and ``<!-- findings:<suite>:end -->`` the README holds the text
of ``results/leaderboard/<suite>_findings.md``, so that prose cannot drift from the CSV; this command
copies it in, and ``tests/test_readme.py`` fails when the two differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SUITES = ("digits", "digits_cls")


def block(suite: str) -> re.Pattern[str]:
    """The README region of one suite's findings."""
    return re.compile(rf"(<!-- findings:{suite}:start -->\n)(.*?)(<!-- findings:{suite}:end -->)", re.S)


def synced(readme: str, results: Path) -> str:
    """``readme`` with every findings region replaced by its file's current text."""
    for suite in SUITES:
        path = results / "leaderboard" / f"{suite}_findings.md"
        if path.is_file():
            text = path.read_text()
            readme = block(suite).sub(lambda m, t=text: m.group(1) + t.rstrip("\n") + "\n" + m.group(3), readme)
    return readme


def main() -> int:
    """Rewrite README.md's findings regions."""
    path = Path("README.md")
    path.write_text(synced(path.read_text(), Path("results")))
    print("readme: findings regions updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
