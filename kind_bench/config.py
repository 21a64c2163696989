"""Structured configs and their composition from the Hydra tree in ``benchmarks/``.

Every CLI verb composes one :class:`Config` with :func:`compose`. The YAML files choose values; the
dataclasses here fix the schema, so a wrong type or an unknown key fails at start-up with one line
that names the key, never deep inside a run. Method- and ancestry-specific hyperparameters are
validated against the dataclass that the method itself declares (see :mod:`kind_bench.methods`).
"""

from __future__ import annotations

import dataclasses
import os
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
class SuiteConfig:
    """A named benchmark suite: its ancestry classes, leaderboard file and artifact folders (and, for
    the ``ci`` suite, the regression check run by ``kind-bench check``)."""

    name: str = "digits"
    ancestry_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    check: CheckConfig | None = None


@dataclass
class DataConfig:
    """Where images come from and how the deterministic train/test split is drawn."""

    name: str = "digits"  # digits | imagefolder
    root: str | None = None  # ImageFolder root for `imagefolder`
    image_size: int = 8
    channels: int = 1
    test_fraction: float = 0.3
    split_seed: int = 0


@dataclass
class TaskConfig:
    """A transfer setting: target classes, their domain, and resource limits."""

    name: str = "novel"
    target_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])
    domain: str = "identity"
    shots: int | None = None  # training images per target class; None = all
    depth_ratio: float = 1.0  # descendant depth / ancestry depth


@dataclass
class ModelConfig:
    """A DiT size preset (diffusers' DiTTransformer2DModel)."""

    name: str = "dit_tiny"
    hidden_size: int = 64
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 2
    activation: str = "gelu"
    vae_path: str | None = None  # local diffusers AutoencoderKL folder: run the DiT in its latent space


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
    grad_clip: float = 1.0
    checkpoint_every: int = 0  # 0 = only the final weights
    snapshots: list[float] = field(default_factory=lambda: [1.0])  # fractions of `steps` to save


@dataclass
class SampleConfig:
    """The sampler used by every method (a diffusers scheduler, run with the same settings)."""

    scheduler: str = "ddim"  # ddim | dpm
    steps: int = 20
    guidance_scale: float = 2.0
    samples_per_class: int = 50
    batch_size: int = 500


@dataclass
class EvalConfig:
    """Quality metrics: torch-fidelity with a registered feature extractor."""

    feature_extractor: str = "digits_cnn"  # digits_cnn | inception-v3-compat
    inception_weights: str | None = None  # local weights file for inception-v3-compat
    kid_subset_size: int = 100
    kid_subsets: int = 50
    isc_splits: int = 1
    prc_neighborhood: int = 3
    grid_seed: int = 0  # the seed whose samples are drawn as a picture per method x task


@dataclass
class EvaluatorConfig:
    """The small CNN classifier trained on the real train split; its features score samples."""

    feature_dim: int = 16
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3


@dataclass
class RuntimeConfig:
    """How cells are spread over CPU cores. Results depend on ``threads`` (float reductions), never on
    ``workers``; both are recorded. On CUDA, cells run one at a time in the main process."""

    workers: int = 2  # processes for a task x seed sweep
    threads: int | None = None  # torch threads per process; None = usable cores (// workers for cells)


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
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    quiet: bool = False


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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides)
    _check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            raw = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = str(exc).strip().splitlines()[0]
        if exc.__cause__ is not None and str(exc.__cause__).strip():
            message += f" ({str(exc.__cause__).strip().splitlines()[0]})"
        raise UserError(message) from None
    return to_config(raw)


def to_config(raw: DictConfig) -> Config:
    """Merge a composed DictConfig onto the schema: rejects unknown keys and wrong types."""
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"]) if "hydra" in raw else raw
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise UserError(_one_line(exc)) from None
    validate(cfg)
    return cfg


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    for phase in ("pretrain", "transfer"):
        train: TrainConfig = getattr(cfg, phase)
        _require(train.steps > 0, f"{phase}.steps={train.steps} must be a positive integer")
        _require(train.batch_size > 0, f"{phase}.batch_size={train.batch_size} must be positive")
        _require(train.lr > 0, f"{phase}.lr={train.lr} must be positive")
        _require(train.checkpoint_every >= 0, f"{phase}.checkpoint_every must be >= 0")
        _require(
            bool(train.snapshots) and all(0 < f <= 1 for f in train.snapshots) and 1.0 in train.snapshots,
            f"{phase}.snapshots={train.snapshots} must be fractions in (0, 1] and include 1.0",
        )
    _require(bool(cfg.task.target_classes), "task.target_classes is empty: list at least one class")
    _require(bool(cfg.suite.ancestry_classes), "suite.ancestry_classes is empty: list at least one class")
    _require(
        not set(cfg.task.target_classes) & set(cfg.suite.ancestry_classes) or cfg.task.domain != "identity",
        "task.target_classes overlaps suite.ancestry_classes in the same domain: that is not a transfer",
    )
    _require(cfg.task.shots is None or cfg.task.shots > 0, f"task.shots={cfg.task.shots} must be positive")
    _require(0 < cfg.task.depth_ratio <= 1, f"task.depth_ratio={cfg.task.depth_ratio} must be in (0, 1]")
    _require(0 < cfg.data.test_fraction < 1, f"data.test_fraction={cfg.data.test_fraction} must be in (0, 1)")
    _require(0 <= cfg.diffusion.label_dropout < 1, "diffusion.label_dropout must be in [0, 1)")
    _require(cfg.sample.steps > 0, f"sample.steps={cfg.sample.steps} must be positive")
    _require(cfg.sample.samples_per_class > 0, "sample.samples_per_class must be positive")
    _require(cfg.sample.guidance_scale >= 1, "sample.guidance_scale must be >= 1 (1 disables guidance)")
    if cfg.sample.scheduler not in ("ddim", "dpm"):
        raise choices_error("sample.scheduler", cfg.sample.scheduler, ("ddim", "dpm"))
    if cfg.data.name not in ("digits", "imagefolder"):
        raise choices_error("data.name", cfg.data.name, ("digits", "imagefolder"))
    if cfg.data.name == "imagefolder":
        _require(cfg.data.root is not None, "data.root is required for data=imagefolder")
        _require(Path(cfg.data.root).is_dir(), f"data.root={cfg.data.root}: no such directory")
    if cfg.eval.feature_extractor not in ("digits_cnn", "inception-v3-compat"):
        raise choices_error("eval.feature_extractor", cfg.eval.feature_extractor, ("digits_cnn", "inception-v3-compat"))
    _require(cfg.runtime.workers >= 1, f"runtime.workers={cfg.runtime.workers} must be >= 1")
    _require(cfg.runtime.threads is None or cfg.runtime.threads >= 1, "runtime.threads must be >= 1 (or null)")
    if cfg.model.vae_path is not None:
        _require(Path(cfg.model.vae_path).is_dir(), f"model.vae_path={cfg.model.vae_path}: no such directory")


def torch_threads(runtime: RuntimeConfig, per_cell: bool) -> int:
    """Torch threads per process: explicit, else the usable cores, shared among the workers for verbs
    that run cells (so a cell gets the same thread count whether it runs alone or in a sweep)."""
    if runtime.threads is not None:
        return runtime.threads
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


def as_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (recorded in every result)."""
    return dataclasses.asdict(cfg)
