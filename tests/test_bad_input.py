"""Bad input, table-driven: one line naming the key (and the choices), exit status 2, nothing written.

Every case runs in a workspace that already holds prepared data, an evaluator and, where the case needs
them, pre-trained ancestries; ``results/`` must be byte-for-byte the same afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kind_bench.cli import main
from kind_bench.methods import discover

from micro import micro


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def broken_plugin(root: Path, monkeypatch) -> None:
    info = root / "site" / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kind_bench.methods]\nbroken = kb_broken:Broken\n")
    (root / "site" / "kb_broken.py").write_text("raise RuntimeError('this plugin is broken')\n")
    monkeypatch.syspath_prepend(str(root / "site"))
    discover.cache_clear()


KIND_WEIGHTS = "artifacts/digits/ancestry/kind.safetensors"
Setup = Callable[[Path, object], None]
CASES: list[tuple[str, list[str], str, Setup | None]] = [
    ("unknown method", ["transfer", "method=nope"], "method='nope' is not one of: auto_lg, difffit", None),
    ("unknown task", ["transfer", "task=nope"], "task='nope' is not one of: fewshot, novel, shift, shift2, small",
     None),
    ("unknown model", ["pretrain", "model=dit_xxl"], "model='dit_xxl' is not one of: dit_b2, dit_l2, dit_micro",
     None),
    ("negative steps", ["transfer", "transfer.steps=-5"], "transfer.steps=-5 must be a positive integer", None),
    ("string for a number", ["pretrain", "pretrain.lr=fast"], "config key pretrain.lr: Value 'fast'", None),
    ("missing ImageFolder", ["data", "data=imagefolder", "data.root=/no/such/dir"],
     "data.root=/no/such/dir: no such directory", None),
    ("empty class list", ["transfer", "task.target_classes=[]"], "task.target_classes is empty", None),
    ("tailors beyond the rank", ["pretrain", "ancestry=kind", "ancestry.n_tailors=64"],
     "ancestry.n_tailors=64 must be in [1, 32)", None),
    ("truncated checkpoint", ["transfer", "method=kind", "quiet=true"],
     f"ancestry checkpoint (kind) {KIND_WEIGHTS} is truncated or corrupted",
     lambda root, mp: corrupt(root / KIND_WEIGHTS)),
    ("altered checkpoint bytes", ["transfer", "method=kind", "quiet=true"], "checksum mismatch",
     lambda root, mp: flip_a_byte(root / KIND_WEIGHTS)),
    ("missing evaluator", ["floor", "quiet=true"],
     "evaluator weights artifacts/evaluator/digits_cnn.safetensors not found",
     lambda root, mp: (root / "artifacts/evaluator").unlink()),
    ("corrupted evaluator", ["floor", "quiet=true"], "evaluator weights artifacts/evaluator/digits_cnn.safetensors",
     lambda root, mp: corrupt_evaluator(root)),
    ("plugin that raises at import", ["transfer", "method=broken"],
     "method='broken' failed to import: RuntimeError: this plugin is broken", broken_plugin),
    ("unknown sweep key", ["transfer", "model=dit_tiny,dit_s2"], "only task, seed may list several values", None),
    ("unknown sampler", ["evaluate", "sample.scheduler=euler"], "sample.scheduler='euler' is not one of: ddim, dpm",
     None),
    ("unknown verb", ["frobnicate"], "verb 'frobnicate' is not one of", None),
]


def corrupt_evaluator(root: Path) -> None:
    target = root / "artifacts/evaluator"
    real = target.resolve()
    target.unlink()
    target.mkdir()
    data = (real / "digits_cnn.safetensors").read_bytes()
    (target / "digits_cnn.safetensors").write_bytes(data[: len(data) // 3])


@pytest.fixture(scope="module")
def ancestries(workspace) -> Path:
    """A kind ancestry next to the session's data and evaluator."""
    import os

    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        assert main(["pretrain", "ancestry=kind", *micro(), "model.hidden_size=32", "model.num_heads=2"]) == 0
    finally:
        os.chdir(cwd)
    return workspace / KIND_WEIGHTS


@pytest.mark.parametrize(("argv", "message", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, message, setup, ancestries, in_workspace,
                                                          monkeypatch, capsys):
    root = in_workspace
    (root / KIND_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
    (root / KIND_WEIGHTS).write_bytes(ancestries.read_bytes())
    (root / "results").mkdir()
    (root / "results" / "keep.json").write_text("{}")
    if setup is not None:
        setup(root, monkeypatch)
    before = tree(root / "results")
    try:
        code = main(argv)
    finally:
        discover.cache_clear()
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kind-bench: error: "), err
    assert message in err, err
    assert tree(root / "results") == before
