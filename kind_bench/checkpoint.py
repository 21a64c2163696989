"""Resumable training state: model, optimizer, LR schedule, RNG states and step, in one safetensors file.

Written atomically every ``checkpoint_every`` steps. A checkpoint carries the fingerprint of the config
and code that produced it; a restart with the same config and code resumes from it, anything else starts
afresh. With
the same thread count on CPU, a resumed run is bit-identical to an uninterrupted one: every random draw
of the loop comes from the generator whose state is saved here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kind_bench.device import pick_device
from kind_bench.errors import UserError
from kind_bench.identity import EVALUATION_ONLY, identifying
from kind_bench.io import checksum, load_metadata, load_tensors, save_tensors, split_state, state_tensors


def fingerprint(config: dict[str, Any], phase: str, *sources: type | str, resumable: bool = False) -> str:
    """A stable hash of what determines a training run: the config (minus what only shapes evaluation
    or output), the phase, the device type (a CUDA run neither resumes a CPU checkpoint, whose generator
    state it cannot take, nor counts a CPU run as its own), the torch thread count, the number of
    processes, and the code and inputs
    (:func:`code_digest`: pass the method's class and the checksums of the prepared data and the ancestry).
    ``resumable`` leaves the number of processes out: a checkpoint resumes under any world size (the
    batches are the same, see :mod:`kind_bench.distributed`)."""
    from kind_bench.distributed import world

    relevant = identifying(config, drop=EVALUATION_ONLY)
    relevant["runtime"] = {"device": pick_device().type, "threads": torch.get_num_threads(),
                           **({} if resumable else {"world_size": world()[1]})}
    text = json.dumps({"phase": phase, "config": relevant, "code": code_digest(*sources)}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _package_digest() -> str:
    digest = hashlib.sha256()
    for package in ("kind_bench", "baselines"):
        root = Path(importlib.import_module(package).__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def source_digest(cls: type) -> str:
    """SHA-256 of the code that defines ``cls``: every ``.py`` file of its top-level package (a plugin's
    whole package), or its module file when it is not in a package."""
    module = importlib.import_module(cls.__module__.split(".")[0])
    digest = hashlib.sha256()
    if getattr(module, "__path__", None):
        root = Path(next(iter(module.__path__)))
        files = sorted(root.rglob("*.py"))
    else:
        root, files = Path(inspect.getsourcefile(cls) or "").parent, [Path(inspect.getsourcefile(cls) or "")]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def code_digest(*sources: type | str) -> str:
    """SHA-256 of the ``kind_bench`` and ``baselines`` sources, plus extra ``sources``: classes (the code
    of their package, e.g. a plugin method's, :func:`source_digest`) or strings (e.g. a file's checksum)."""
    digest = hashlib.sha256(_package_digest().encode())
    for source in sources:
        digest.update(source.encode() if isinstance(source, str) else source_digest(source).encode())
    return digest.hexdigest()


def has_checkpoint(path: Path, tag: str) -> bool:
    """Whether ``path`` holds a resumable checkpoint for this fingerprint."""
    try:
        return path.is_file() and load_metadata(path, "training checkpoint").get("fingerprint") == tag
    except Exception:  # noqa: BLE001 - a damaged checkpoint is reported when it is loaded
        return path.is_file()


@dataclass
class LoopState:
    """What the training loop needs besides the tensors to continue exactly where it stopped."""

    step: int = 0
    elapsed_s: float = 0.0
    curve: list[list[float]] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
                    generator: torch.Generator, loop: LoopState, tag: str,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write the training state atomically: the parameters that train (the optimizer's), the buffers and
    the optimizer state (the frozen rest is rebuilt from the ancestry and the seed; its checksum is kept),
    the schedules, the generator states and ``extra`` tensors (e.g. the EMA weights)."""
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    stored, frozen = split_state(model, trained)
    tensors, aliases = state_tensors(stored, prefix="model.")
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    optim = optimizer.state_dict()
    for index, values in optim["state"].items():
        for name, value in values.items():
            tensors[f"optim.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.loop"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "fingerprint": tag,
        "frozen_sha256": checksum(frozen),
        "aliases": json.dumps(aliases),
        "param_groups": json.dumps(optim["param_groups"]),
        "schedule": json.dumps(schedule.state_dict()),
        "loop": json.dumps(loop.__dict__),
    }
    save_tensors(path, tensors, meta)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
                    generator: torch.Generator, tag: str, extra: dict[str, torch.Tensor] | None = None
                    ) -> LoopState | None:
    """Restore the training state if ``path`` holds one for this fingerprint; else None (start afresh).
    ``extra`` tensors saved with it are copied into the given ones.

    A damaged file, or a model whose rebuilt frozen part differs from the run's, is a one-line UserError.
    """
    if not path.is_file():
        return None
    meta = load_metadata(path, "training checkpoint")
    if meta.get("fingerprint") != tag:
        return None
    tensors = load_tensors(path, "training checkpoint")
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    for name, source in json.loads(meta["aliases"]).items():
        state[name.removeprefix("model.")] = state[source.removeprefix("model.")]
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    frozen = {k: v for k, v in model.state_dict().items() if k not in state}
    if checksum(frozen) != meta.get("frozen_sha256"):
        raise UserError(f"training checkpoint {path} does not fit the model rebuilt from the ancestry and the seed: "
                        "delete it and rerun")
    for name, tensor in (extra or {}).items():
        tensor.copy_(tensors[f"extra.{name}"].to(tensor.device))
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    optimizer.load_state_dict({"state": optim_state, "param_groups": json.loads(meta["param_groups"])})
    schedule.load_state_dict(json.loads(meta["schedule"]))
    generator.set_state(tensors["rng.loop"])
    torch.set_rng_state(tensors["rng.torch"])
    return LoopState(**json.loads(meta["loop"]))
