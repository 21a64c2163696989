"""What a run *is*: config digests, the published ("canonical") config of a cell, and its namespace.

A cell of the published grid is run with the config that ``suite``, ``method``, ``task`` and ``seed``
compose to (plus, under ``tuning.lr_source=tuned``, the learning rate the ``tune`` stage chose). Its files
live in the ``runs`` namespace, the only one the leaderboard reads. A run with any other config (an
ad-hoc ``transfer.steps=3``, say) lands in ``adhoc/<digest>`` instead, so it can never replace a
published cell by accident; the tuning and ablation stages name their namespaces explicitly, and
``namespace=runs`` is the explicit way to publish a config of one's own (the leaderboard still refuses to
pool seeds whose configs differ). Training artifacts and
results are namespaced separately: a run that changes only how a model is sampled or scored reuses the
published training and writes its results apart.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from kind_bench.config import Config, as_dict, config_value
from kind_bench.errors import UserError

#: never part of a run's identity: they change where files go or what is printed, never a number
#: (``runtime`` changes float rounding only; it is recorded in every result instead; ``tuning`` decides a
#: run only through the ``transfer.lr`` it resolved to, which is part of the identity)
UNIDENTIFYING = ("quiet", "runtime", "paths", "namespace", "tuning")
#: sections that only shape a trained model's evaluation
EVALUATION_ONLY = ("sample", "eval")
#: sections that decide a pre-trained ancestry
ANCESTRY_SECTIONS = ("data", "model", "ancestry", "pretrain", "diffusion")
PUBLISHED = "runs"


#: parts of the suite section that describe other stages (the CI check, the ablation grid), not a run
SUITE_STAGES = ("check", "ablation")
#: the suite's list of keys the user gives: their values are part of a run, the list itself is not
SUITE_UNIDENTIFYING = (*SUITE_STAGES, "requires")


#: keys that set only how fast data is read, never a number: identified as their defaults (rather than
#: left out, so that every digest made before this rule stays valid)
READ_SPEED_ONLY = {"data": ("workers",)}


@functools.cache
def _defaults() -> dict[str, Any]:
    return as_dict(Config())


def identifying(config: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The part of a config dict that decides a run's numbers (without :data:`UNIDENTIFYING` and ``drop``;
    :data:`READ_SPEED_ONLY` at their defaults)."""
    kept = {k: v for k, v in config.items() if k not in UNIDENTIFYING + drop}
    for section, keys in READ_SPEED_ONLY.items():
        if isinstance(kept.get(section), dict):
            defaults = _defaults()[section]
            kept[section] = {**kept[section], **{k: defaults[k] for k in keys if k in kept[section]}}
    if isinstance(kept.get("suite"), dict):
        kept["suite"] = {k: v for k, v in kept["suite"].items() if k not in SUITE_UNIDENTIFYING}
    return kept


def digest(config: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    """A short SHA-256 of :func:`identifying` ``(config, drop)``."""
    return hashlib.sha256(json.dumps(identifying(config, drop), sort_keys=True, default=str).encode()).hexdigest()[:12]


def ancestry_digest(config: dict[str, Any]) -> str:
    """The digest of what an ancestry depends on (the seed is not in it: each seed is its own file)."""
    suite = config["suite"]
    kept = {k: config[k] for k in ANCESTRY_SECTIONS}
    kept["ancestry_classes"] = suite["ancestry_classes"]
    return digest(kept)


def ancestry_identity(config: dict[str, Any], seed: int, sources: list[str]) -> str:
    """What an ancestry file must record to be used: its config digest, pre-training seed and what it trained
    from (:func:`kind_bench.data.latents.training_sources`: the data checksum, and the VAE's in a latent space).

    (Code is DVC's business: a code change reruns the pretrain stages that depend on it.)
    """
    data, *vae = sources
    return "/".join([ancestry_digest(config), f"seed-{seed}", data[:16], *(v.replace(" ", "-")[:20] for v in vae)])


def seedless_digest(config: dict[str, Any]) -> str:
    """The digest that every seed of one (method, task) row must share to be pooled."""
    return digest(config, drop=("seed",))


@functools.cache
def _canonical_cell(suite: str, method: str, task: str, seed: int, given: tuple[str, ...]) -> dict[str, Any]:
    from kind_bench.methods import compose_cell

    return as_dict(compose_cell([f"suite={suite}", f"method={method}", f"task={task}", f"seed={seed}", *given]))


@functools.cache
def _canonical_ancestry(suite: str, name: str, given: tuple[str, ...]) -> dict[str, Any] | None:
    """The published ancestry's config, or None when it does not compose with the given data (cached too:
    a failed composition is as slow as a successful one, and an ancestry's does not depend on tuning)."""
    from kind_bench.methods import compose_ancestry

    try:
        return as_dict(compose_ancestry([f"suite={suite}", *given], name))
    except UserError:
        return None


def user_given(cfg: Config) -> tuple[str, ...]:
    """Overrides for the keys the suite leaves to the user (``suite.requires``: the data root, the VAE, local
    weights), with this config's values: the published config of ``suite=paper`` is the suite with them."""
    values = as_dict(cfg)
    return tuple(f"{key}={json.dumps(config_value(values, key))}" for key in cfg.suite.requires)


def canonical(cfg: Config) -> dict[str, Any]:
    """The published config of the cell that ``cfg`` describes."""
    return _canonical_cell(cfg.suite.name, str(cfg.method["name"]), cfg.task.name, cfg.seed, user_given(cfg))


def is_canonical_ancestry(cfg: Config, name: str) -> bool:
    """Whether ``cfg`` would pre-train the published ``name`` ancestry (not when the published config does not
    compose with this call's data, e.g. a KID subset larger than its few classes draw: then it is a variant)."""
    published = _canonical_ancestry(cfg.suite.name, name, user_given(cfg))
    return published is not None and ancestry_digest(as_dict(cfg)) == ancestry_digest(published)


def namespace(cfg: Config, training: bool = False) -> str:
    """``runs`` for the published config of a cell, the explicit ``cfg.namespace``, else ``adhoc/<digest>``.

    With ``training``, only what decides the trained weights is compared (evaluation settings are not).
    """
    if cfg.namespace is not None:
        return cfg.namespace
    drop = (EVALUATION_ONLY if training else ()) + ("task", "seed")  # the cell id names those
    mine = as_dict(cfg)
    try:
        published = canonical(cfg)
    except UserError:  # e.g. the published config needs a tuned rate that does not exist yet
        published = None
    if published is not None and digest(mine, drop) == digest(published, drop):
        return PUBLISHED
    return f"adhoc/{digest(mine, drop)}"
