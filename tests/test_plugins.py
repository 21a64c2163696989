"""Plugins: discovery through the entry-point group, the example package, broken and duplicate plugins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kind_bench.cli import main
from kind_bench.methods import discover

from micro import micro

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_registry():
    discover.cache_clear()
    yield
    discover.cache_clear()


def add_to_path(monkeypatch, folder: Path) -> None:
    monkeypatch.syspath_prepend(str(folder))
    discover.cache_clear()


def fake_distribution(folder: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """A minimal installed distribution: a real *.dist-info with entry_points.txt, plus its modules."""
    info = folder / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[kind_bench.methods]\n{lines}")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)
    return folder


@pytest.fixture(scope="module")
def bitfit_site(tmp_path_factory) -> Path:
    """examples/plugin_method installed (offline, no deps) into a private folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "plugin_method")], check=True)
    assert list(target.glob("kind_bench_bitfit-*.dist-info"))
    return target


def test_example_plugin_lists_as_a_plugin(bitfit_site, fresh_registry, monkeypatch, capsys):
    add_to_path(monkeypatch, bitfit_site)
    assert main(["list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("bitfit"))
    assert "plugin (kind-bench-bitfit)" in line and "vanilla" in line and "Ben Zaken" in line


def test_example_plugin_runs_through_the_cli_into_the_leaderboard(bitfit_site, fresh_registry, in_workspace,
                                                                   monkeypatch):
    add_to_path(monkeypatch, bitfit_site)
    assert main(["pretrain", "ancestry=vanilla", *micro(ancestry=False)]) == 0
    overrides = micro("method=bitfit", ancestry=False)
    assert main(["transfer", *overrides]) == 0
    assert main(["evaluate", *overrides]) == 0
    assert main(["leaderboard", "quiet=true"]) == 0
    row = pd.read_csv(in_workspace / "results/leaderboard/digits.csv").set_index("method").loc["bitfit"]
    assert row.status == "success" and 0 < row.trainable_params < row.total_params / 10


def test_console_script_finds_an_installed_plugin(bitfit_site):
    exe = Path(sys.executable).with_name("kind-bench")
    proc = subprocess.run([str(exe), "list"], capture_output=True, text=True, env={"PYTHONPATH": str(bitfit_site)})
    assert proc.returncode == 0, proc.stderr
    assert any(row.startswith("bitfit") and "plugin" in row for row in proc.stdout.splitlines())


def test_broken_plugin_is_reported_by_name_and_the_others_still_work(tmp_path, fresh_registry, monkeypatch, capsys):
    site = fake_distribution(tmp_path, "broken-plugin", {"broken": "kb_broken:Broken"},
                             {"kb_broken": "raise ImportError('needs a package that is not installed')\n"})
    add_to_path(monkeypatch, site)
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "broken: failed to import: ImportError: needs a package that is not installed" in err
    assert any(row.startswith("kind ") for row in out.splitlines())
    monkeypatch.chdir(tmp_path)
    assert main(["transfer", "method=broken"]) == 2
    assert "method='broken' failed to import: ImportError" in capsys.readouterr().err


def test_two_methods_with_one_name_name_both_sources(tmp_path, fresh_registry, monkeypatch, capsys):
    site = fake_distribution(tmp_path, "copycat", {"lora": "kb_copycat:Lora"},
                             {"kb_copycat": "from baselines.lora import Lora\n"})
    add_to_path(monkeypatch, site)
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "'lora' is registered twice" in err and "baselines.lora:Lora" in err and "kb_copycat:Lora" in err
