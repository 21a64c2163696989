"""The method interface, ancestries, and the registry fed by the ``kind_bench.methods`` entry points.

A method decides three things and nothing else: which ancestry it needs, how the descendant is built
from it, and which parameters train. Training, sampling and metrics are shared, so every method is
measured the same way. Built-in methods are registered through the same entry-point group that outside
packages use (see ``pyproject.toml``), so every run exercises the plugin path.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from itertools import pairwise
from typing import Any, ClassVar

from torch import nn

from kind_bench.config import Config, ModelConfig, compose, config_dir, validate_section
from kind_bench.errors import UserError, choices_error

ENTRY_POINT_GROUP = "kind_bench.methods"


@dataclass
class NoOptions:
    """For methods and ancestries without hyperparameters."""


@dataclass(frozen=True)
class Target:
    """What a descendant must fit: the target task's class count and the model it should have (its
    ``model.arch`` says the track's backbone)."""

    num_classes: int
    depth: int
    model: ModelConfig
    in_channels: int
    sample_size: int


@dataclass
class Descendant:
    """A built descendant and how many of its parameters were initialised from the ancestry."""

    model: nn.Module
    transferred: int


@dataclass
class Phase:
    """One part of a transfer: up to ``until`` (a fraction of the steps) exactly ``params`` train."""

    until: float
    params: list[nn.Parameter]


def unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """``params`` without repeats (a tensor shared by two modules is one parameter), in first-seen order."""
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


class Ancestry:
    """A model family pre-trained once on the ancestry classes and shared by every method using it."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any) -> None:
        self.options = options

    def build(self, target: Target) -> nn.Module:
        """A freshly initialised model of this family, to be pre-trained on the ancestry classes."""
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters updated during pre-training (default: all)."""
        return list(model.parameters())


class Vanilla(Ancestry):
    """A plain dense backbone (DiT or ViT)."""

    name = "vanilla"
    description = "dense backbone pre-trained on the ancestry classes"

    def build(self, target: Target) -> nn.Module:
        from kind_bench.models import build_backbone

        return build_backbone(target)


class Method:
    """Base class of every transfer method (built-in or plugin)."""

    name: ClassVar[str]  # == registry key == benchmarks/method/<name>.yaml == result-file prefix
    description: ClassVar[str]
    paper: ClassVar[str] = ""
    ancestry: ClassVar[type[Ancestry] | None] = None
    Options: ClassVar[type] = NoOptions
    #: the tracks it can build for: generation (DiT) and/or classification (ViT)
    tracks: ClassVar[tuple[str, ...]] = ("generation",)
    #: every parameter trains, so the suite's final-layer option (``transfer.final_layer``) does not apply
    trains_everything: ClassVar[bool] = False
    #: False for a method whose definition fixes its head (a linear probe): the option does not apply either
    final_layer_option: ClassVar[bool] = True
    #: what the generated findings compare it as: kind | peft | learngene | baseline (anything else: not compared)
    family: ClassVar[str] = "other"

    def __init__(self, options: Any) -> None:
        self.options = options

    def phases(self, model: nn.Module) -> list[Phase]:
        """What trains when; by default :meth:`trainable_parameters` for the whole transfer."""
        return [Phase(1.0, self.trainable_parameters(model))]

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        """Why this method cannot build ``target`` (recorded as n/a), or None if it can."""
        if target.depth != ancestry_depth:
            return "cannot change depth: the descendant keeps the ancestry's architecture"
        return None

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        """The descendant for the target task, initialised from ``ancestry`` (None if no ancestry)."""
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters that train at transfer."""
        raise NotImplementedError


def training_phases(method: Method, model: nn.Module, final_layer: bool) -> list[Phase]:
    """The method's phases with the suite's final-layer option applied and repeats removed.

    One option (``transfer.final_layer``) decides for every parameter-efficient method, KIND included,
    whether the final layer trains, so that no method wins or loses by its head alone; a method that
    trains everything (``trains_everything``) is unaffected.
    """
    from kind_bench.models import final_layer_parameters

    head = final_layer_parameters(model)
    phases = []
    for phase in method.phases(model):
        params = unique(phase.params)
        if method.final_layer_option and not method.trains_everything:
            params = unique(params + head) if final_layer else [p for p in params if all(p is not h for h in head)]
        phases.append(Phase(phase.until, params))
    if not phases or phases[-1].until != 1.0 or any(a.until >= b.until for a, b in pairwise(phases)):
        raise ValueError(f"method {method.name}: phases must end at increasing fractions, the last at 1.0")
    return phases


@dataclass(frozen=True)
class Registered:
    """One registry entry: the class and where it came from."""

    cls: type[Method]
    source: str  # the entry point's value, "module:attr"
    distribution: str
    builtin: bool
    version: str | None = None


def _is_builtin(entry: EntryPoint) -> bool:
    return entry.value.split(":")[0].split(".")[0] in ("kind_bench", "baselines")


@cache
def discover() -> tuple[dict[str, Registered], dict[str, str]]:
    """Load every entry point of the group: (registry, {name: import error}).

    A plugin that fails to import is reported by name and skipped; the others still load. Two entry
    points with the same name are a UserError naming both sources.
    """
    registry: dict[str, Registered] = {}
    broken: dict[str, str] = {}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = entry.dist.name if entry.dist else "?"
        if entry.name in registry or entry.name in broken:
            first = registry[entry.name].source if entry.name in registry else "(broken plugin)"
            raise UserError(f"method {entry.name!r} is registered twice: {first} and {entry.value} ({dist})")
        try:
            cls = entry.load()
        except Exception as exc:  # noqa: BLE001 - report any plugin failure by name
            broken[entry.name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            broken[entry.name] = f"{entry.value} is not a kind_bench.methods.Method subclass"
            continue
        if getattr(cls, "name", None) != entry.name:
            declared = getattr(cls, "name", None)
            broken[entry.name] = f"{entry.value} has name {declared!r}, but its entry point says {entry.name!r}"
            continue
        registry[entry.name] = Registered(cls, entry.value, dist, _is_builtin(entry),
                                          entry.dist.version if entry.dist else None)
    return registry, broken


def method_class(name: str) -> type[Method]:
    """The registered method class for ``name``, or a UserError listing the valid names."""
    registry, broken = discover()
    if name in broken:
        raise UserError(f"method={name!r} failed to import: {broken[name]}")
    if name not in registry:
        raise choices_error("method", name, tuple(registry))
    return registry[name].cls


def ancestry_class(name: str) -> type[Ancestry]:
    """The ancestry class named ``name``, among those that registered methods need."""
    found: dict[str, type[Ancestry]] = {}
    for entry in discover()[0].values():
        anc = entry.cls.ancestry
        if anc is not None:
            if anc.name in found and found[anc.name] is not anc:
                raise UserError(f"ancestry {anc.name!r} is defined twice: {found[anc.name]} and {anc}")
            found[anc.name] = anc
    if name not in found:
        raise choices_error("ancestry", name, tuple(found))
    return found[name]


def make_method(cfg: Config) -> Method:
    """Instantiate the configured method with its validated options."""
    name = cfg.method.get("name")
    cls = method_class(str(name))
    return cls(validate_section(cfg.method, cls.Options, "method"))


def distribution_of(name: str) -> dict[str, str | None]:
    """Which installed distribution (and version) provides method ``name``: recorded in every result."""
    entry = discover()[0].get(name)
    if entry is None:
        return {"distribution": None, "version": None}
    return {"distribution": entry.distribution, "version": entry.version, "entry_point": entry.source}


def make_ancestry(cfg: Config, name: str) -> Ancestry:
    """Instantiate an ancestry with the options in ``cfg.ancestry`` (which must be that ancestry's)."""
    cls = ancestry_class(name)
    if cfg.ancestry.get("name") != name:
        raise UserError(f"ancestry={cfg.ancestry.get('name')!r} does not match the ancestry {name!r} this needs")
    return cls(validate_section(cfg.ancestry, cls.Options, "ancestry"))


def _group_defaults(group: str, name: str, options: type) -> list[str]:
    """Overrides that select ``name`` in ``group``: its YAML file if the config tree has one, else the
    defaults of its options dataclass (so an installed plugin runs without adding files here)."""
    if (config_dir() / group / f"{name}.yaml").is_file():
        return [f"{group}={name}"]
    fields = [f"+{group}.{f.name}={json.dumps(getattr(options(), f.name))}" for f in dataclasses.fields(options)]
    return [f"~{group}", f"+{group}.name={name}", *fields]


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def compose_ancestry(overrides: list[str], name: str) -> Config:
    """Compose the config that pre-trains the ancestry ``name`` (its YAML file, else its options' defaults)."""
    cls = ancestry_class(name)
    rest = [o for o in overrides if _key(o) != "ancestry"]
    return compose([*_group_defaults("ancestry", cls.name, cls.Options), *rest])


def compose_cell(overrides: list[str], resolve_lr: bool = True) -> Config:
    """Compose the config of one (method, task, seed) cell: the ``method`` group set to the chosen
    method, the ``ancestry`` group to the ancestry that method declares, and, under
    ``tuning.lr_source=tuned``, ``transfer.lr`` to the rate the ``tune`` stage chose (unless given)."""
    chosen = [o.split("=", 1)[1] for o in overrides if _key(o) == "method"]
    cls = method_class(chosen[-1] if chosen else str(compose([]).method.get("name")))
    rest = [o for o in overrides if _key(o) != "method"]
    selected = _group_defaults("method", cls.name, cls.Options)
    if cls.ancestry is not None:
        explicit = [o.split("=", 1)[1] for o in rest if _key(o) == "ancestry"]
        if explicit and explicit[-1] != cls.ancestry.name:
            raise UserError(f"method={cls.name} needs ancestry={cls.ancestry.name}, not {explicit[-1]}")
        rest = [o for o in rest if _key(o) != "ancestry"]
        selected += _group_defaults("ancestry", cls.ancestry.name, cls.ancestry.Options)
    cfg = compose([*selected, *rest])
    if cfg.track not in cls.tracks:
        raise UserError(f"method={cls.name} supports the {' and '.join(cls.tracks)} track(s), not track={cfg.track}")
    if resolve_lr and cfg.tuning.lr_source == "tuned" and not any(_key(o) == "transfer.lr" for o in rest):
        from kind_bench.tuning import chosen_lr

        cfg.transfer.lr = chosen_lr(cfg, cls.name)
    make_method(cfg)  # validates the method's options now, before any work
    return cfg
