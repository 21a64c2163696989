"""Atomic, pickle-free file I/O: safetensors for tensors, JSON for records.

Every writer goes through a temporary file in the destination folder and ``os.replace``, so an
interrupted process leaves either the old file or the new one, never half of one. Every reader turns a
missing, truncated or corrupted file into a :class:`UserError` that names the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kind_bench.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the mode a new file gets from open() under the process umask (mkstemp alone would make it 0600)
FILE_MODE = 0o666 & ~_umask()


@contextmanager
def no_folders_left_on_refusal(path: Path) -> Iterator[None]:
    """On a :class:`UserError` inside the block, remove the folders on the way to ``path`` (``path``
    included) that did not exist before it and are empty: bad input found late leaves nothing behind."""
    created = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        yield
    except UserError:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (mode per umask).
    Only rank 0 of a multi-process run writes (anything else is a bug, and is refused)."""
    from kind_bench.distributed import is_main

    if not is_main():
        raise RuntimeError(f"only rank 0 writes files, not this rank ({path})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, with sorted keys so that diffs stay reviewable."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON, or fail with one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found: run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is corrupted ({exc.msg if hasattr(exc, 'msg') else exc}); "
                        "delete it and rerun the stage that produces it") from None


def file_state(path: str | Path) -> tuple[int, int]:
    """A file's size and modification time (ns): what tells a cached check or hash of it to redo itself."""
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a flat dict of tensors as safetensors, atomically, with a checksum in the header."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**(metadata or {}), "sha256": checksum(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _damaged(path: Path, what: str, detail: str) -> UserError:
    return UserError(f"{what} {path} is truncated or corrupted ({detail}); "
                     "delete it and rerun the stage that produces it (dvc repro)")


def load_tensors(path: str | Path, what: str = "weights file", hint: str = "the stage that produces it (dvc repro)",
                 foreign: bool = False) -> dict[str, torch.Tensor]:
    """Load safetensors; a missing, truncated or altered file is a one-line UserError naming it.

    safetensors itself catches a broken header or a short file; the checksum that every file we write
    carries catches changed bytes, and a file of ours without one is refused. ``foreign`` files (weights
    made elsewhere, e.g. Inception) carry no checksum. ``hint`` says what produces a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found: run {hint}")
    try:
        tensors = load_file(str(path))
        expected = load_metadata(path, what).get("sha256")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise _damaged(path, what, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) \
            from None
    if expected is None and not foreign:
        raise _damaged(path, what, "no checksum in its header")
    if expected is not None and checksum(tensors) != expected:
        raise _damaged(path, what, "checksum mismatch")
    return tensors


def load_metadata(path: str | Path, what: str = "weights file") -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged header
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _damaged(Path(path), what, detail) from None


def state_tensors(state: dict[str, torch.Tensor], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split a state dict into unique tensors and ``{alias: name}`` for tensors stored twice (shared
    weights), since safetensors refuses to store one tensor under two names."""
    seen: dict[tuple, str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride()) if tensor.numel() else (id(tensor),)
        if key in seen:
            aliases[prefix + name] = seen[key]
        else:
            seen[key] = prefix + name
            unique[prefix + name] = tensor
    return unique, aliases


def split_state(module: torch.nn.Module, params: list[torch.nn.Parameter] | None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(stored, frozen): with ``params``, what a descendant's files store (those parameters and every
    buffer) and the rest, which is rebuilt from the ancestry and the seed; without, the whole state."""
    state = module.state_dict(keep_vars=True)
    if params is None:
        return {k: v.detach() for k, v in state.items()}, {}
    keep = {id(p) for p in params}
    buffers = {name for name, _ in module.named_buffers()}
    stored = {k: v.detach() for k, v in state.items() if id(v) in keep or k in buffers}
    return stored, {k: v.detach() for k, v in state.items() if k not in stored}


def save_module(path: str | Path, module: torch.nn.Module, metadata: dict[str, str] | None = None,
                params: list[torch.nn.Parameter] | None = None) -> None:
    """Save a module's state (only ``params`` and the buffers when given: disk proportional to what trains,
    with a checksum of the frozen rest so that a rebuild that differs is caught); tensors shared between
    modules (FINE, TLEG) are stored once."""
    stored, frozen = split_state(module, params)
    unique, aliases = state_tensors(stored)
    meta = dict(metadata or {})
    if aliases:
        meta["aliases"] = json.dumps(aliases, sort_keys=True)
    if params is not None:
        meta["frozen_sha256"] = checksum(frozen)
    save_tensors(path, unique, meta)


def load_module(path: str | Path, module: torch.nn.Module, what: str = "checkpoint",
                hint: str = "the stage that produces it (dvc repro)") -> dict[str, str]:
    """Load weights saved by :func:`save_module` into ``module`` (every stored key must fit; a file of
    trained parameters only also needs the module's frozen rest to match its checksum); returns the
    file's metadata."""
    state = load_tensors(path, what, hint)
    meta = load_metadata(path, what)
    for name, source in json.loads(meta.get("aliases", "{}")).items():
        state[name] = state[source]
    partial = "frozen_sha256" in meta
    try:
        result = module.load_state_dict(state, strict=not partial)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{what} {path} does not fit the model this config builds ({first}); "
                        "was it produced with another config? rerun its stage") from None
    if partial:
        frozen = {k: v for k, v in module.state_dict().items() if k not in state}
        if result.unexpected_keys or checksum(frozen) != meta["frozen_sha256"]:
            raise UserError(f"{what} {path} stores trained parameters only, and the rest of the model rebuilt from "
                            "the ancestry and the seed differs from the run's: rerun its cell")
    return meta
