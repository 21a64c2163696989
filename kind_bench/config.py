"""Structured configs and their composition from the Hydra tree in ``benchmarks/``.

Every CLI verb composes one :class:`Config` with :func:`compose`. The YAML files choose values; the
dataclasses here fix the schema, so a wrong type or an unknown key fails at start-up with one line
that names the key, never deep inside a run. Method- and ancestry-specific hyperparameters are
validated against the dataclass that the method itself declares (see :mod:`kind_bench.methods`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kind_bench.errors import UserError, choices_error

CONFIG_DIR_ENV = "KIND_BENCH_CONFIG_DIR"
GROUPS = ("suite", "data", "task", "model", "method", "ancestry")


@dataclass
class CheckConfig:
    """The regression check of a suite: its grid, the committed reference and per-metric tolerances."""

    methods: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    reference: str = "results/reference/ci.json"
    tolerances: dict[str, float] = field(default_factory=dict)


@dataclass
class Variant:
    """One row of the ablation table: a method run with a few overrides (Hydra syntax, never evaluated)."""

    method: str = "kind"
    overrides: list[str] = field(default_factory=list)
    about: str = ""


@dataclass
class AblationConfig:
    """The ablation grid of a suite: every variant on ``tasks`` x ``seeds``, compared with the published
    cells of its method on the same seeds."""

    tasks: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    variants: dict[str, Variant] = field(default_factory=dict)


@dataclass
class SuiteConfig:
    """A named benchmark suite: its ancestry classes, leaderboard file and artifact folders (and, for
    the ``ci`` suite, the regression check run by ``kind-bench check``)."""

    name: str = "digits"
    ancestry_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    ancestry_seeds: int = 3  # a cell of seed s transfers from the ancestry pre-trained with seed s % this
    class_split: str | None = None  # JSON {"pretrain": [folder names], "novel": [folder names]} for data.root
    requires: list[str] = field(default_factory=list)  # keys the user must give (data, VAE, weights, split)
    check: CheckConfig | None = None
    ablation: AblationConfig | None = None


@dataclass
class DataConfig:
    """Where images come from and how the deterministic train/test split is drawn."""

    name: str = "digits"  # digits | imagefolder
    root: str | None = None  # ImageFolder root for `imagefolder`
    image_size: int = 8
    channels: int = 1
    test_fraction: float = 0.3  # of all images: the test reference, touched only for reported numbers
    val_fraction: float = 0.2  # of all images: validation, the only data any choice (lr, budget) looks at
    split_seed: int = 0
    storage: str = "tensor"  # tensor: the prepared file holds the pixels | files: only an index (ImageFolder)
    workers: int = 4  # DataLoader workers reading files (storage=files)
    flip: bool = False  # latent models: train on random horizontal flips (both orientations are cached)
    latents: str = "mean"  # latent models: mean | sample (draw from the VAE's posterior every step)


@dataclass
class TaskConfig:
    """A transfer setting: target classes, their domain, and resource limits."""

    name: str = "novel"
    target_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])
    domain: str = "identity"
    shots: int | None = None  # training images per target class; None = all
    depth_ratio: float = 1.0  # descendant depth / ancestry depth
    split_classes: str | None = None  # "novel": the target classes are the suite's class-split file's novel ones
    root: str | None = None  # an ImageFolder of its own (a domain-shift set); None: the suite's data


@dataclass
class ModelConfig:
    """A backbone size preset: a DiT (diffusers' DiTTransformer2DModel, generation) or a ViT (timm's
    VisionTransformer, classification; ``timm_name`` is the timm architecture whose defaults these fields
    override)."""

    name: str = "dit_tiny"
    arch: str = "dit"  # dit | vit
    hidden_size: int = 64
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 2
    activation: str = "gelu"  # DiT only
    mlp_ratio: float = 4.0  # ViT only (the DiT's is fixed at 4)
    timm_name: str | None = None  # ViT only
    vae_path: str | None = None  # DiT only: a local diffusers AutoencoderKL folder (latent space)


@dataclass
class DiffusionConfig:
    """The DDPM training process (diffusers' DDPMScheduler) and classifier-free-guidance dropout."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    label_dropout: float = 0.1


@dataclass
class TrainConfig:
    """One training phase (pre-training an ancestry, or transfer)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"  # after warm-up: constant | cosine (to zero at the last step)
    grad_clip: float = 1.0
    checkpoint_every: int = 0  # 0 = only the final weights
    snapshots: list[float] = field(default_factory=lambda: [1.0])  # fractions of `steps` to save
    final_layer: bool = True  # transfer: the final layer trains for every parameter-efficient method
    ema: float = 0.0  # decay of an exponential moving average of the trained weights (0: off); it is what is kept
    precision: str = "fp32"  # fp32 | bf16 (autocast)


@dataclass
class SampleConfig:
    """The sampler used by every method (a diffusers scheduler, run with the same settings)."""

    scheduler: str = "ddim"  # ddpm | ddim | dpm
    steps: int = 20
    guidance_scale: float = 2.0
    samples_per_class: int = 200  # per draw, at the final snapshot
    snapshot_samples_per_class: int = 50  # at the earlier snapshots (the early-regime curve)
    batch_size: int = 500
    merged: bool = True  # a KIND model samples each class through its merged dense weights (deploy)
    by_class: bool = True  # one class at a time; false: batches across classes (merged KIND models never)
    precision: str = "fp32"  # fp32 | bf16 (autocast while denoising)


@dataclass
class EvalConfig:
    """Quality metrics: torch-fidelity with a registered feature extractor."""

    feature_extractor: str = "digits_cnn"  # digits_cnn | inception-v3-compat
    inception_weights: str | None = None  # local weights file for inception-v3-compat
    dinov2_weights: str | None = None  # local DINOv2 weights (timm layout): adds fd_dinov2
    dinov2_arch: str = "vit_small_patch14_dinov2"  # the timm DINOv2 architecture of those weights
    kid_subset_size: int = 100
    kid_subsets: int = 50
    isc_splits: int = 1
    prc_neighborhood: int = 3
    grid_seed: int = 0  # the seed whose samples are drawn as a picture per method x task
    draws: int = 3  # independent sampling draws of the final model (their sd is the metric's own noise)
    split: str = "test"  # test (reported numbers) | val (tuning: every choice looks only at validation data)
    reference_limit: int | None = None  # at most this many reference images (a fixed seeded subset); None: all


@dataclass
class TuningConfig:
    """How each method's transfer learning rate is chosen: on validation data, the same budget for all.

    ``lr_source=tuned`` reads the rate chosen by the ``tune`` stage (``results/tuning/<suite>/<method>.json``);
    ``config`` uses ``transfer.lr`` as given. Every method gets ``grid_size`` log-spaced rates per
    ``grids`` entry (its own, else ``default``), trained on ``tasks`` x ``seeds`` for ``transfer.steps``
    and scored on validation ``fd`` (pooled over the tasks by the geometric mean). A choice at the edge of
    the grid extends it by one point on that side, up to ``extend`` times; beyond that it is flagged.
    """

    lr_source: str = "config"  # config | tuned
    metric: str | None = None  # the validation metric that decides; None: the track's primary metric
    tasks: list[str] = field(default_factory=lambda: ["novel", "shift"])
    seeds: list[int] = field(default_factory=lambda: [100])
    grids: dict[str, list[float]] = field(default_factory=lambda: {"default": [1e-3, 3e-3, 1e-2, 3e-2]})
    extend: int = 2
    samples_per_class: int = 100
    budget_methods: list[str] = field(default_factory=lambda: ["kind", "full_finetune"])
    budget_tolerance: float = 0.05  # converged: fd at the budget within this fraction of fd at twice it


@dataclass
class EvaluatorConfig:
    """The small CNN classifier trained on the real train split; its features score samples."""

    feature_dim: int = 16
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0  # its own seed (not the cells' seed): part of what it is


@dataclass
class RuntimeConfig:
    """How cells are spread over CPU cores. Results depend on ``threads`` (float reductions), never on
    ``workers``; both are recorded. On CUDA, cells run one at a time in the main process."""

    workers: int = 2  # processes for a task x seed sweep
    threads: int | None = None  # torch threads per process; None = OMP_NUM_THREADS, else usable cores (// workers)
    tf32: bool = True  # CUDA: TF32 matmuls and convolutions
    compile: bool = False  # torch.compile the model for training
    grad_checkpointing: bool = False  # recompute activations in the backward pass (memory for time)


@dataclass
class PathsConfig:
    """Where DVC-tracked artifacts and git-tracked results go (relative to the working directory)."""

    artifacts: str = "artifacts"
    results: str = "results"


@dataclass
class Config:
    """The whole composed configuration of one CLI call."""

    suite: SuiteConfig = field(default_factory=SuiteConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = field(default_factory=dict)
    ancestry: dict[str, Any] = field(default_factory=dict)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    transfer: TrainConfig = field(default_factory=TrainConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    track: str = "generation"  # generation (DiT, sampled-image metrics) | classification (ViT, top-1)
    seed: int = 0
    quiet: bool = False
    namespace: str | None = None  # where a cell's files go; None: `runs` if published, else `adhoc/<digest>`


def config_dir() -> Path:
    """The Hydra config tree: ``$KIND_BENCH_CONFIG_DIR``, else ``./benchmarks``, else the repo's."""
    if os.environ.get(CONFIG_DIR_ENV):
        path = Path(os.environ[CONFIG_DIR_ENV])
    elif (Path.cwd() / "benchmarks" / "config.yaml").is_file():
        path = Path.cwd() / "benchmarks"
    else:
        path = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (path / "config.yaml").is_file():
        raise UserError(f"config tree {path} has no config.yaml (set {CONFIG_DIR_ENV})")
    return path.resolve()


def group_choices(group: str) -> list[str]:
    """The YAML files available in one config group, e.g. ``group_choices('task')``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _check_group_choices(overrides: list[str]) -> None:
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in GROUPS and value and "," not in value:
            valid = group_choices(key)
            if value not in valid:
                raise choices_error(key, value, valid)


def _one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    first = str(exc).strip().splitlines()[0]
    return f"config key {key}: {first}" if key else first


def compose(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Compose ``benchmarks/config.yaml`` with ``key=value`` overrides into a validated Config."""
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides)
    _check_group_choices(overrides)
    inside_app = GlobalHydra.instance().is_initialized()  # a job of kind_bench.hydra_app: same config tree
    return to_config(_hydra_composed(tuple(overrides), inside_app))


@functools.lru_cache(maxsize=512)
def _hydra_composed(overrides: tuple[str, ...], inside_app: bool) -> DictConfig:
    """Hydra's composition of the config tree with ``overrides`` (about 0.3 s each; the tree is read once per
    process, so a repeated composition, such as a published config compared with every cell, is reused;
    callers only read it)."""
    from contextlib import nullcontext

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with nullcontext() if inside_app else initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        message = str(exc).strip().splitlines()[0]
        if exc.__cause__ is not None and str(exc.__cause__).strip():
            message += f" ({str(exc.__cause__).strip().splitlines()[0]})"
        unknown = re.match(r"Could not override '([^']+)'", message)
        if unknown and "not in struct" in message:
            message = unknown_key(unknown.group(1))
        raise UserError(message) from None


def unknown_key(key: str) -> str:
    """One line for an override of a key the schema does not have: the valid keys where it went wrong."""
    import difflib

    schema: Any = Config
    parts = key.lstrip("+~").split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the config"
        if not dataclasses.is_dataclass(schema):  # a method's or ancestry's options: its own config file
            return f"config key {key} does not exist: the {where} options are in benchmarks/{where}/<name>.yaml"
        names = [f.name for f in dataclasses.fields(schema)]
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])}?)" if close else ""
            return f"config key {key} does not exist{hint}; {where} has: {', '.join(sorted(names))}"
        schema = {f.name: f.type for f in dataclasses.fields(schema)}[part]
        schema = globals().get(schema, schema) if isinstance(schema, str) else schema
    return f"config key {key} does not exist"


def to_config(raw: DictConfig) -> Config:
    """Merge a composed DictConfig onto the schema: rejects unknown keys and wrong types."""
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"]) if "hydra" in raw else raw
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise UserError(_one_line(exc)) from None
    require_given(cfg)
    apply_class_split(cfg)
    validate(cfg)
    return cfg


def config_value(values: dict[str, Any], key: str) -> Any:
    """The value of a dotted ``key`` in a config dict (a missing key is bad input naming it)."""
    value: Any = values
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise UserError(f"config key {key} does not exist")
        value = value[part]
    return value


def require_given(cfg: Config) -> None:
    """Every key of ``suite.requires`` is given (a suite's ``???`` in YAML cannot enforce it: OmegaConf's merge
    keeps the value a missing one would replace)."""
    values = as_dict(cfg)
    for key in cfg.suite.requires:
        _require(config_value(values, key) not in (None, "???"),
                 f"{key} is required by suite={cfg.suite.name} (a path of your own: nothing is downloaded)")


def apply_class_split(cfg: Config) -> None:
    """With ``suite.class_split``, the ancestry classes (and a task's ``split_classes``) come from that file,
    whose class names are the ImageFolder's class folders (e.g. the paper's 150 pre-training and 461 novel
    ImageNet superclasses)."""
    if cfg.suite.class_split is None:
        _require(cfg.task.split_classes is None, f"task.split_classes={cfg.task.split_classes} needs suite.class_split")
        return
    import json

    path = Path(cfg.suite.class_split)
    _require(path.is_file(), f"suite.class_split={path}: no such file")
    try:
        split = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"suite.class_split={path} is not JSON ({exc.msg})") from None
    _require(isinstance(split, dict) and {"pretrain", "novel"} <= set(split)
             and all(isinstance(split[k], list) and all(isinstance(c, str) for c in split[k])
                     for k in ("pretrain", "novel")),
             f"suite.class_split={path} must hold the lists of class names 'pretrain' and 'novel'")
    shared = sorted(set(split["pretrain"]) & set(split["novel"]))
    _require(not shared, f"suite.class_split={path} lists {shared[:5]} as both pretrain and novel classes")
    _require(cfg.data.root is not None and Path(cfg.data.root).is_dir(),
             f"suite.class_split needs data.root (an ImageFolder), not {cfg.data.root}")
    folders = sorted(p.name for p in Path(cfg.data.root).iterdir() if p.is_dir())
    unknown = sorted((set(split["pretrain"]) | set(split["novel"])) - set(folders))
    _require(not unknown, f"suite.class_split={path} names classes data.root does not have: {unknown[:5]}")
    cfg.suite.ancestry_classes = [folders.index(name) for name in split["pretrain"]]
    if cfg.task.split_classes is not None:
        _require(cfg.task.root is None, f"task.split_classes={cfg.task.split_classes} names classes of data.root, "
                 f"not of task.root={cfg.task.root}: give that task its task.target_classes")
        if cfg.task.split_classes not in ("novel", "pretrain"):
            raise choices_error("task.split_classes", cfg.task.split_classes, ("novel", "pretrain"))
        cfg.task.target_classes = [folders.index(name) for name in split[cfg.task.split_classes]]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
ACTIVATIONS = ("gelu", "gelu-approximate", "geglu", "geglu-approximate", "silu")
NATIVE_SIZES = {"digits": (8, 1)}  # sources with a fixed image size and channel count


def check_name(key: str, value: str) -> str:
    """A name that becomes part of a path: letters, digits, ``_ . -``, no leading dot, no ``..``."""
    if not (isinstance(value, str) and SAFE_NAME.fullmatch(value) and ".." not in value):
        raise UserError(f"{key}={value!r} is not a safe name: use letters, digits, '_', '.', '-' "
                        "(not starting with '.', no '..', at most 80 characters)")
    return value


def _finite(key: str, value: float, low: float | None = None, strict: bool = True) -> None:
    ok = math.isfinite(value) and (low is None or (value > low if strict else value >= low))
    bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
    _require(ok, f"{key}={value} must be a finite number{bound}")


def _distinct(key: str, values: list[int]) -> None:
    _require(bool(values), f"{key} is empty: list at least one class")
    repeated = sorted({v for v in values if values.count(v) > 1})
    _require(not repeated, f"{key}={values} lists {repeated} more than once")
    _require(all(v >= 0 for v in values), f"{key}={values} must be non-negative class ids")


def _validate_train(phase: str, train: TrainConfig) -> None:
    _require(train.steps > 0, f"{phase}.steps={train.steps} must be a positive integer")
    _require(train.batch_size > 0, f"{phase}.batch_size={train.batch_size} must be positive")
    _finite(f"{phase}.lr", train.lr, 0)
    _finite(f"{phase}.weight_decay", train.weight_decay, 0, strict=False)
    _finite(f"{phase}.grad_clip", train.grad_clip, 0, strict=False)
    _require(train.warmup_steps >= 0, f"{phase}.warmup_steps={train.warmup_steps} must be >= 0")
    if train.schedule not in ("constant", "cosine"):
        raise choices_error(f"{phase}.schedule", train.schedule, ("constant", "cosine"))
    if train.precision not in ("fp32", "bf16"):
        raise choices_error(f"{phase}.precision", train.precision, ("bf16", "fp32"))
    _require(0 <= train.ema < 1, f"{phase}.ema={train.ema} must be in [0, 1) (0 turns it off)")
    _require(train.checkpoint_every >= 0, f"{phase}.checkpoint_every must be >= 0")
    _require(
        bool(train.snapshots) and all(0 < f <= 1 for f in train.snapshots) and 1.0 in train.snapshots,
        f"{phase}.snapshots={train.snapshots} must be fractions in (0, 1] and include 1.0",
    )


def validate(cfg: Config) -> None:
    """Range and consistency checks that types alone cannot express; all run before any work starts."""
    for key, name in (("suite.name", cfg.suite.name), ("task.name", cfg.task.name), ("model.name", cfg.model.name)):
        check_name(key, name)
    if cfg.namespace is not None:
        for part in cfg.namespace.split("/"):
            check_name("namespace", part)
    for phase in ("pretrain", "transfer"):
        _validate_train(phase, getattr(cfg, phase))
    _distinct("task.target_classes", cfg.task.target_classes)
    _distinct("suite.ancestry_classes", cfg.suite.ancestry_classes)
    _require(  # a task root of its own (a domain-shift ImageFolder) numbers its classes independently
        not set(cfg.task.target_classes) & set(cfg.suite.ancestry_classes) or cfg.task.domain != "identity"
        or cfg.task.root is not None,
        "task.target_classes overlaps suite.ancestry_classes in the same domain: that is not a transfer",
    )
    _require(cfg.suite.ancestry_seeds >= 1, f"suite.ancestry_seeds={cfg.suite.ancestry_seeds} must be >= 1")
    _require(cfg.seed >= 0, f"seed={cfg.seed} must be >= 0")
    _require(cfg.task.shots is None or cfg.task.shots > 0, f"task.shots={cfg.task.shots} must be positive")
    _require(0 < cfg.task.depth_ratio <= 1, f"task.depth_ratio={cfg.task.depth_ratio} must be in (0, 1]")
    _require(cfg.task.root is None or Path(cfg.task.root).is_dir(), f"task.root={cfg.task.root}: no such directory")
    _validate_data(cfg.data)
    _validate_model(cfg)
    _require(0 <= cfg.diffusion.label_dropout < 1, "diffusion.label_dropout must be in [0, 1)")
    if cfg.diffusion.beta_schedule not in BETA_SCHEDULES:
        raise choices_error("diffusion.beta_schedule", cfg.diffusion.beta_schedule, BETA_SCHEDULES)
    _validate_sampling(cfg)
    _validate_tuning(cfg.tuning)
    _validate_evaluator(cfg.evaluator)
    _require(cfg.eval.grid_seed >= 0, f"eval.grid_seed={cfg.eval.grid_seed} must be >= 0")
    _require(cfg.runtime.workers >= 1, f"runtime.workers={cfg.runtime.workers} must be >= 1")
    _require(cfg.runtime.threads is None or cfg.runtime.threads >= 1, "runtime.threads must be >= 1 (or null)")


def _validate_data(data: DataConfig) -> None:
    if data.name not in ("digits", "imagefolder"):
        raise choices_error("data.name", data.name, ("digits", "imagefolder"))
    for key in ("test_fraction", "val_fraction"):
        _require(0 < getattr(data, key) < 1, f"data.{key}={getattr(data, key)} must be in (0, 1)")
    _require(data.test_fraction + data.val_fraction < 1,
             f"data.test_fraction + data.val_fraction = {data.test_fraction + data.val_fraction} leaves no "
             "training images: their sum must be < 1")
    _require(data.image_size > 0 and data.channels in (1, 3),
             f"data.image_size={data.image_size} must be positive and data.channels={data.channels} 1 or 3")
    if data.name in NATIVE_SIZES:
        size, channels = NATIVE_SIZES[data.name]
        _require((data.image_size, data.channels) == (size, channels),
                 f"data.image_size={data.image_size}, data.channels={data.channels}: the {data.name} source is "
                 f"{size}x{size} with {channels} channel(s); set data.image_size={size} data.channels={channels}")
    if data.storage not in ("tensor", "files"):
        raise choices_error("data.storage", data.storage, ("files", "tensor"))
    if data.latents not in ("mean", "sample"):
        raise choices_error("data.latents", data.latents, ("mean", "sample"))
    _require(data.storage == "tensor" or data.name == "imagefolder", "data.storage=files is for data=imagefolder")
    _require(data.workers >= 0, f"data.workers={data.workers} must be >= 0")
    if data.name == "imagefolder":
        _require(data.root is not None and data.root != "???", "data.root is required for data=imagefolder")
        _require(Path(data.root).is_dir(), f"data.root={data.root}: no such directory")


TRACK_ARCH = {"generation": "dit", "classification": "vit"}


def _validate_model(cfg: Config) -> None:
    model = cfg.model
    if cfg.track not in TRACK_ARCH:
        raise choices_error("track", cfg.track, tuple(TRACK_ARCH))
    _require(model.arch == TRACK_ARCH[cfg.track],
             f"model={model.name} is a {model.arch} backbone; the {cfg.track} track needs a {TRACK_ARCH[cfg.track]} "
             f"(pick a model whose arch is {TRACK_ARCH[cfg.track]})")
    _require(model.arch == "dit" or model.vae_path is None, "model.vae_path is for the DiT (generation) only")
    _require(model.depth >= 1 and model.hidden_size >= 1 and model.num_heads >= 1 and model.patch_size >= 1,
             "model.depth, model.hidden_size, model.num_heads and model.patch_size must be positive")
    _require(model.hidden_size % model.num_heads == 0,
             f"model.hidden_size={model.hidden_size} is not divisible by model.num_heads={model.num_heads}")
    if model.activation not in ACTIVATIONS:
        raise choices_error("model.activation", model.activation, ACTIVATIONS)
    _finite("model.mlp_ratio", model.mlp_ratio, 0)
    if model.vae_path is not None:
        _require(Path(model.vae_path).is_dir(), f"model.vae_path={model.vae_path}: no such directory")
    else:
        _require(cfg.data.image_size % model.patch_size == 0,
                 f"model.patch_size={model.patch_size} does not divide data.image_size={cfg.data.image_size}")
        _require(not cfg.data.flip and cfg.data.latents == "mean",
                 f"data.flip={cfg.data.flip} and data.latents={cfg.data.latents} apply to a latent model "
                 "(model.vae_path): in pixel space use data.flip=false data.latents=mean")


def _validate_sampling(cfg: Config) -> None:
    sample, ev = cfg.sample, cfg.eval
    _require(cfg.diffusion.num_train_timesteps >= max(2, sample.steps),
             f"diffusion.num_train_timesteps={cfg.diffusion.num_train_timesteps} must be >= 2 and >= "
             f"sample.steps={sample.steps}")
    _require(sample.steps > 0, f"sample.steps={sample.steps} must be positive")
    for key in ("samples_per_class", "snapshot_samples_per_class", "batch_size"):
        _require(getattr(sample, key) > 0, f"sample.{key}={getattr(sample, key)} must be positive")
    _finite("sample.guidance_scale", sample.guidance_scale, 1, strict=False)
    if sample.precision not in ("fp32", "bf16"):
        raise choices_error("sample.precision", sample.precision, ("bf16", "fp32"))
    if sample.scheduler not in ("ddpm", "ddim", "dpm"):
        raise choices_error("sample.scheduler", sample.scheduler, ("ddim", "ddpm", "dpm"))
    if ev.feature_extractor not in ("digits_cnn", "inception-v3-compat"):
        raise choices_error("eval.feature_extractor", ev.feature_extractor, ("digits_cnn", "inception-v3-compat"))
    if ev.split not in ("test", "val"):
        raise choices_error("eval.split", ev.split, ("test", "val"))
    for key in ("inception_weights", "dinov2_weights"):  # local files only: a missing one is known before any work
        path = getattr(ev, key)
        _require(path is None or Path(path).is_file(), f"eval.{key}={path}: no such file")
    for key in ("kid_subset_size", "kid_subsets", "isc_splits", "prc_neighborhood", "draws"):
        _require(getattr(ev, key) >= 1, f"eval.{key}={getattr(ev, key)} must be >= 1")
    _require(ev.reference_limit is None or ev.reference_limit >= max(2, ev.kid_subset_size),
             f"eval.reference_limit={ev.reference_limit} must be >= eval.kid_subset_size={ev.kid_subset_size} "
             "(and >= 2), or null for every reference image")
    smallest = min(sample.samples_per_class, sample.snapshot_samples_per_class) * len(cfg.task.target_classes)
    _require(cfg.track == "classification" or ev.kid_subset_size <= smallest,
             f"eval.kid_subset_size={ev.kid_subset_size} exceeds the smallest draw ({smallest} samples: "
             "sample.snapshot_samples_per_class x the task's classes): lower it or sample more")
    _require(cfg.track == "classification" or ev.prc_neighborhood < smallest,
             f"eval.prc_neighborhood={ev.prc_neighborhood} needs a draw of more than {ev.prc_neighborhood} samples, "
             f"not {smallest} (sample.snapshot_samples_per_class x the task's classes): lower it or sample more")


def _validate_tuning(tuning: TuningConfig) -> None:
    if tuning.lr_source not in ("config", "tuned"):
        raise choices_error("tuning.lr_source", tuning.lr_source, ("config", "tuned"))
    _require("default" in tuning.grids, "tuning.grids needs a 'default' grid")
    for name, grid in tuning.grids.items():
        _require(len(grid) >= 2 and all(math.isfinite(v) and v > 0 for v in grid) and grid == sorted(set(grid)),
                 f"tuning.grids.{name}={grid} must be >= 2 increasing positive learning rates")
    _require(tuning.extend >= 0 and tuning.samples_per_class > 0, "tuning.extend >= 0, samples_per_class > 0")
    _require(0 < tuning.budget_tolerance < 1, f"tuning.budget_tolerance={tuning.budget_tolerance} must be in (0, 1)")
    _require(len(tuning.tasks) > 0, "tuning.tasks=[] needs at least one task to tune on")
    _require(len(tuning.seeds) > 0 and all(seed >= 0 for seed in tuning.seeds),
             f"tuning.seeds={tuning.seeds} must be one or more seeds >= 0")
    if tuning.metric is not None:
        from kind_bench.metrics import DIRECTION, SIGNED

        tunable = sorted(m for m, direction in DIRECTION.items() if direction and m not in SIGNED)
        if tuning.metric not in tunable:
            raise choices_error("tuning.metric", tuning.metric, tunable)


def _validate_evaluator(evaluator: EvaluatorConfig) -> None:
    for key in ("feature_dim", "epochs", "batch_size"):
        _require(getattr(evaluator, key) >= 1, f"evaluator.{key}={getattr(evaluator, key)} must be >= 1")
    _require(evaluator.seed >= 0, f"evaluator.seed={evaluator.seed} must be >= 0")
    _require(math.isfinite(evaluator.lr) and evaluator.lr > 0, f"evaluator.lr={evaluator.lr} must be positive")


def torch_threads(runtime: RuntimeConfig, per_cell: bool) -> int:
    """Torch threads per process: ``runtime.threads``, else ``OMP_NUM_THREADS`` (how a launcher that runs
    processes side by side, e.g. ``torchrun`` or ``OMP_NUM_THREADS=1 dvc queue start -j 8``, shares the
    cores), else the usable cores, shared among the workers for verbs that run cells (so a cell gets the
    same thread count whether it runs alone or in a sweep)."""
    if runtime.threads is not None:
        return runtime.threads
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) >= 1:
        return int(from_env)
    return max(1, len(os.sched_getaffinity(0)) // (runtime.workers if per_cell else 1))


def validate_section(section: dict[str, Any], schema: type, key: str) -> Any:
    """Validate a method's or ancestry's hyperparameters against its own dataclass schema."""
    values = {k: v for k, v in section.items() if k != "name"}
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as exc:
        inner = getattr(exc, "full_key", None)
        msg = str(exc).strip().splitlines()[0]
        raise UserError(f"config key {key}.{inner}: {msg}" if inner else f"{key}: {msg}") from None
    except (ValueError, TypeError) as exc:  # raised by the schema's own __post_init__ checks
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{key}.{section.get('name', '?')}: {first}") from None


def as_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (recorded in every result)."""
    return dataclasses.asdict(cfg)


def with_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A config recorded by an earlier version, with every field added to the schema since then set to its
    default (the method's and ancestry's options too, when they are registered). The schema's rule: a new
    field's default is the behaviour from before the field existed, so a record stays comparable with a
    call that leaves the field at its default, and with no other."""
    from kind_bench.methods import ancestry_class, method_class

    def merge(default: Any, value: Any) -> Any:
        if isinstance(default, dict) and isinstance(value, dict):
            return {**default, **{k: merge(default.get(k), v) for k, v in value.items()}}
        return value

    defaults = as_dict(Config())
    for group, lookup in (("method", method_class), ("ancestry", ancestry_class)):
        name = (recorded.get(group) or {}).get("name")
        with contextlib.suppress(UserError):  # not registered here: compared as recorded
            defaults[group] = {"name": name, **dataclasses.asdict(lookup(name).Options())} if name else {}
    return merge(defaults, recorded)
