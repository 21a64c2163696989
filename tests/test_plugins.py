"""Plugins: discovery through the entry-point group, the example package, broken and duplicate plugins."""

from __future__ import annotations

import json
import shutil
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


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_example_plugin_runs_through_the_cli_into_the_leaderboard(bitfit_site, fresh_registry, in_workspace,
                                                                   monkeypatch):
    add_to_path(monkeypatch, bitfit_site)
    overrides = micro("method=bitfit", ancestry=False)
    assert main(["run", *overrides]) == 0
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


VERA = '''"""VeRA (Kopiczko et al., ICLR 2024) through peft, as an outside plugin would add it."""

from dataclasses import dataclass

from kind_bench.peft_method import PeftMethod, target_modules


@dataclass
class VeraOptions:
    rank: int = 4

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"rank={self.rank} must be >= 1")


class Vera(PeftMethod):
    name = "vera"
    description = "VeRA: shared frozen random projections, trained scaling vectors (peft)"
    paper = "Kopiczko et al., ICLR 2024"
    Options = VeraOptions

    def peft_config(self, target):
        from peft import VeraConfig

        return VeraConfig(r=self.options.rank, target_modules=target_modules(["q", "v"], target))
'''

TINY_SUITE = """# @package _global_
suite:
  name: digits
  ancestry_classes: [0, 1, 2, 3, 4]
  ancestry_seeds: 1
model: {hidden_size: 16, num_heads: 1, depth: 2}
pretrain: {steps: 20, snapshots: [1.0], checkpoint_every: 0}
transfer: {steps: 8, warmup_steps: 2, snapshots: [0.5, 1.0], checkpoint_every: 0}
sample: {steps: 2, samples_per_class: 12, snapshot_samples_per_class: 6}
eval: {kid_subset_size: 10, kid_subsets: 5, draws: 2}
evaluator: {epochs: 3}
tuning: {lr_source: tuned, tasks: [novel], grids: {default: [1.0e-3, 1.0e-2]}, extend: 0, samples_per_class: 12,
         budget_methods: []}
runtime: {workers: 1}
"""


def dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def plugin_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh clone of this project with a VeRA plugin installed into a private site folder and added to
    params.yaml, a tiny digits suite, and a .venv whose python is this one (nothing activated). The published
    results and their dvc.lock stay behind: this suite's results are its own (and DVC re-reads the lock,
    ≈ 1 s of YAML for the published one, at every stage it runs)."""
    repo = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if not name.startswith("results/") and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "benchmarks/suite/digits.yaml").write_text(TINY_SUITE)
    (repo / "params.yaml").write_text(
        "suite: digits\nancestries: {vanilla: kind_bench/methods.py}\nancestry_seeds: '0'\n"
        "methods: {vera: artifacts/digits/ancestry/vanilla}\ntasks: novel\nseeds: '0'\n"
        "classification: {suite: digits_cls, ancestries: {vanilla: kind_bench/methods.py},\n"
        "  methods: {linear_probe: artifacts/digits_cls/ancestry/vanilla}, tasks: novel, seeds: '0'}\n")
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)  # this environment, not activated
    site = fake_distribution(repo.parent / f"{repo.name}-site", "kb-vera", {"vera": "kb_vera:Vera"},
                             {"kb_vera": VERA})
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(repo.parent)}
    return repo, env


def test_a_plugin_in_params_yaml_runs_through_dvc_and_reruns_when_its_code_changes(plugin_repo):
    repo, env = plugin_repo
    out = dvc(repo, env, "repro", "run@vera")
    assert "Running stage 'tune@vera'" in out and "Running stage 'run@vera'" in out
    record = json.loads((repo / "results/runs/digits/vera/vera-novel-0.json").read_text())
    assert record["run_info"]["status"] == "success", record["run_info"]["error"]
    assert record["meta_info"]["method_source"] == {"distribution": "kb-vera", "version": "0.1",
                                                    "entry_point": "kb_vera:Vera"}
    assert record["run_info"]["config"]["transfer"]["lr"] in (1e-3, 1e-2)  # the tuned rate
    again = dvc(repo, env, "status", "--with-deps", "run@vera")  # what a second `dvc repro` would rerun
    assert "run@vera:" not in again and "tune@vera:" not in again and "digests:" in again  # digests always runs
    site = Path(env["PYTHONPATH"])
    (site / "kb_vera.py").write_text(VERA + "\n# an edit to the plugin's code\n")
    dvc(repo, env, "repro", "digests")  # what `dvc repro` runs first; then it reruns whatever status names
    edited = dvc(repo, env, "status", "--with-deps", "run@vera")
    assert "tune@vera:" in edited and "run@vera:" in edited and "artifacts/digests/vera.json" in edited
    assert "pretrain@vanilla" not in edited  # the ancestry does not depend on the plugin
