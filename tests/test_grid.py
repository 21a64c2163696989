"""The DVC grid, the config tree and the method registry agree with each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kind_bench.config import compose, group_choices
from kind_bench.methods import compose_ancestry, discover, method_class
from kind_bench.paths import ancestry_dir

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_methods_map_to_each_methods_declared_ancestry():
    cfg = compose([f"suite={PARAMS['suite']}"])
    for name, dependency in PARAMS["methods"].items():
        ancestry = method_class(name).ancestry
        if ancestry is None:
            assert dependency == f"artifacts/data/{cfg.data.name}.safetensors"
        else:
            assert dependency == str(ancestry_dir(compose_ancestry([f"suite={PARAMS['suite']}"], ancestry.name),
                                                  ancestry.name))
            assert ancestry.name in PARAMS["ancestries"]


@pytest.mark.parametrize(("grid", "track"), [(PARAMS, "generation"), (PARAMS["classification"], "classification")])
def test_each_track_grid_holds_its_builtins_and_only_installed_methods(grid, track):
    registry = discover()[0]
    assert {n for n, entry in registry.items() if entry.builtin and track in entry.cls.tracks} <= set(grid["methods"])
    not_installed = set(grid["methods"]) - set(registry)
    assert not not_installed, f"params.yaml lists methods that are not installed: {sorted(not_installed)}"
    assert all(track in registry[m].cls.tracks for m in grid["methods"])


def test_every_builtin_method_has_a_config_file_of_the_same_name():
    registry, broken = discover()
    assert not broken
    for name in (n for n, entry in registry.items() if entry.builtin):
        assert (ROOT / "benchmarks" / "method" / f"{name}.yaml").is_file(), name
        assert compose([f"method={name}"]).method["name"] == name


#: config files that need the user's local paths (the paper tier); tests/test_real_paths.py composes them
NEEDS_PATHS = {("suite", "paper"), ("task", "paper_novel")}


@pytest.mark.parametrize("group", ["task", "model", "method", "ancestry", "suite"])
def test_every_config_file_composes_and_validates(group):
    for choice in group_choices(group):
        if (group, choice) in NEEDS_PATHS:
            continue
        vit = group == "model" and not choice.startswith("dit")
        large = ["data=imagefolder", "data.root=.", "data.image_size=224", "data.channels=3"]
        compose([f"{group}={choice}", *(["suite=digits_cls"] if vit else []), *(large if "deit" in choice else [])])


def test_builtin_methods_come_through_the_entry_point_group():
    registry, _ = discover()
    builtin = {"kind", "scratch", "full_finetune", "head_only", "lora", "pissa", "dora", "svdiff", "difffit",
               "heur_lg", "auto_lg", "tleg", "fine"}
    assert builtin <= set(registry)
    assert all(registry[name].builtin for name in builtin)


def test_the_pretrained_seeds_cover_every_ancestry_seed_a_cell_or_a_tuning_run_needs():
    cfg = compose([f"suite={PARAMS['suite']}"])
    pretrained = {int(s) for s in str(PARAMS["ancestry_seeds"]).split(",")}
    assert pretrained == set(range(cfg.suite.ancestry_seeds))
    needed = {int(s) % cfg.suite.ancestry_seeds for s in str(PARAMS["seeds"]).split(",")}
    assert needed | {s % cfg.suite.ancestry_seeds for s in cfg.tuning.seeds} <= pretrained


@pytest.mark.parametrize("suite", [PARAMS["suite"], PARAMS["classification"]["suite"]])
def test_every_published_cell_and_ablation_variant_gets_a_verified_tuned_rate(suite, monkeypatch):
    from kind_bench.methods import compose_cell

    monkeypatch.chdir(ROOT)  # the committed tuning records
    grid = PARAMS if suite == PARAMS["suite"] else PARAMS["classification"]
    rates = {m: compose_cell([f"suite={suite}", f"method={m}"]).transfer.lr for m in grid["methods"]}
    assert all(rate > 0 for rate in rates.values())
    for variant in compose([f"suite={suite}"]).suite.ablation.variants.values():  # the default's rate
        cell = compose_cell([f"suite={suite}", f"method={variant.method}", *variant.overrides])
        assert cell.transfer.lr == rates[variant.method]


def test_every_option_of_the_sections_in_the_base_config_can_be_set_on_the_command_line():
    import dataclasses

    from kind_bench.config import Config

    base = yaml.safe_load((ROOT / "benchmarks/config.yaml").read_text())
    transfer_only = {"pretrain.final_layer"}
    missing = [f"{section.name}.{option.name}" for section in dataclasses.fields(Config)
               if isinstance(base.get(section.name), dict)
               for option in dataclasses.fields(section.default_factory)
               if option.name not in base[section.name]]
    assert set(missing) == transfer_only  # any other would be refused: "config key ... does not exist"
    cfg = compose(["sample.merged=false", "transfer.weight_decay=0.1", "eval.dinov2_arch=vit_base_patch14_dinov2"])
    assert (cfg.sample.merged, cfg.transfer.weight_decay, cfg.eval.dinov2_arch) == (False, 0.1,
                                                                                    "vit_base_patch14_dinov2")


def _imports(module: str, top_level_only: bool) -> set[str]:
    """The ``kind_bench`` modules ``module`` imports (in its body only, or anywhere in it)."""
    import ast

    path = _source(module)
    tree = ast.parse(path.read_text()) if path else ast.Module(body=[], type_ignores=[])
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kind_bench"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if _source(f"{node.module}.{a.name}")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kind_bench")}
    return found


def _source(module: str) -> Path | None:
    for path in (ROOT / f"{module.replace('.', '/')}.py", ROOT / module.replace(".", "/") / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_each_dvc_stage_depends_on_the_code_its_verb_runs():
    """A stage reruns when code it runs changes: its deps cover its verb's module, everything that module
    imports anywhere, and what those import when loaded (function-level imports further down are the
    called module's own concern)."""
    import re

    from kind_bench.cli import STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        if stage.get("always_changed"):
            continue
        module = STAGES[re.search(r"kind-bench (\w+)", stage["cmd"]).group(1)].module
        todo, seen = [module, *_imports(module, top_level_only=False)], set()
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                parts = current.split(".")
                todo += [".".join(parts[:i]) for i in range(1, len(parts))] + list(_imports(current, True))
        deps = [d.rstrip("/") for d in stage.get("deps", []) if isinstance(d, str)]
        files = {str(_source(m).relative_to(ROOT)) for m in seen if _source(m)} - {"kind_bench/__init__.py"}
        missing = sorted(f for f in files if not any(f == d or f.startswith(f"{d}/") for d in deps))
        assert not missing, f"dvc.yaml stage {name} lacks deps on {missing}"
