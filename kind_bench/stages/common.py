"""What several stages share: the device, the codec, the target spec, loading an ancestry, preflight."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from kind_bench.config import Config, as_dict
from kind_bench.device import pick_device, use_tf32
from kind_bench.errors import UserError
from kind_bench.identity import ancestry_identity, digest, is_canonical_ancestry
from kind_bench.io import load_metadata, load_module, load_tensors
from kind_bench.methods import Target, make_ancestry
from kind_bench.models import weights_follow
from kind_bench.models.vae import PixelCodec, VaeCodec, make_codec
from kind_bench.paths import ancestry_seed, ancestry_weights, evaluator_weights


def setup(cfg: Config) -> tuple[torch.device, PixelCodec | VaeCodec]:
    """The device (CUDA when present, with TF32 as ``runtime.tf32`` says) and the pixel or latent codec."""
    device = pick_device()
    use_tf32(device, cfg.runtime.tf32)
    return device, make_codec(cfg.model.vae_path, cfg.data.channels, cfg.data.image_size, device)


def descendant_depth(cfg: Config) -> int:
    """The target model's depth: the ancestry's depth scaled by the task's ``depth_ratio``."""
    return max(1, round(cfg.model.depth * cfg.task.depth_ratio))


def make_target(cfg: Config, codec: PixelCodec | VaeCodec, num_classes: int, depth: int) -> Target:
    """The spec a model is built to."""
    return Target(num_classes=num_classes, depth=depth, model=cfg.model, in_channels=codec.channels,
                  sample_size=codec.size)


def pretrain_hint(cfg: Config, name: str) -> str:
    """The command that produces a missing ancestry seed."""
    if is_canonical_ancestry(cfg, name):
        return f"`dvc repro pretrain@{name}` (or `kind-bench pretrain ancestry={name} seed={ancestry_seed(cfg)}`)"
    return f"`kind-bench pretrain ancestry={name} seed={ancestry_seed(cfg)}` with this call's other overrides"


def check_ancestry(cfg: Config, name: str) -> str:
    """The checksum of the ancestry file a cell transfers from, after checking that it is intact (its
    checksum) and was pre-trained with this config, seed and data; else a one-line error before any work."""
    from kind_bench.data import load_prepared

    path, what = ancestry_weights(cfg, name), f"ancestry checkpoint ({name})"
    load_tensors(path, what, hint=pretrain_hint(cfg, name))
    meta = load_metadata(path, what)
    from kind_bench.data.latents import training_sources

    sources = training_sources(cfg, str(load_prepared(cfg).record["data_sha256"]))
    expected = ancestry_identity(as_dict(cfg), ancestry_seed(cfg), sources)
    if meta.get("identity") != expected:
        raise UserError(f"{what} {path} was pre-trained with another config, seed or data than this call's: rerun "
                        f"{pretrain_hint(cfg, name)}")
    return meta["sha256"]


def load_ancestry(cfg: Config, name: str, codec: PixelCodec | VaeCodec, device: torch.device
                  ) -> tuple[nn.Module, str]:
    """Rebuild the pre-trained ancestry a cell transfers from; returns it and its file's checksum."""
    ancestry = make_ancestry(cfg, name)
    target = make_target(cfg, codec, len(cfg.suite.ancestry_classes), cfg.model.depth)
    with weights_follow():
        model = ancestry.build(target)
    meta = load_module(ancestry_weights(cfg, name), model, what=f"ancestry checkpoint ({name})",
                       hint=pretrain_hint(cfg, name))
    return model.to(device).eval(), meta["sha256"]


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (model initialisation draws from it)."""
    torch.manual_seed(seed)


def ensure_writable(folder: str | Path) -> None:
    """Fail now, with one line, if ``folder`` cannot be created or written (not after hours of training)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{path} is not writable ({exc.strerror}): fix its permissions or set paths.*") from None


def evaluator_identity(cfg: Config, data_sha256: str) -> str:
    """What decides the evaluator's weights: its settings (its seed among them) and the prepared data (whose
    checksum covers the data config). Results carry the ``evaluator`` section of their config; this makes
    it true."""
    return f"{digest({'evaluator': as_dict(cfg)['evaluator']})}/{data_sha256[:16]}"


def require_evaluator(cfg: Config) -> None:
    """Scoring needs its feature extractor's weights: the digits evaluator's, trained with this config's
    evaluator settings on this data, or local Inception weights: say so before any training."""
    if cfg.track != "generation":
        return
    from kind_bench.metrics.fidelity import check_local_extractors

    check_local_extractors(cfg.eval)
    if cfg.eval.feature_extractor != "digits_cnn":
        return
    path = evaluator_weights(cfg)
    if not path.is_file():
        raise UserError(f"evaluator weights {path} not found: run `dvc repro evaluator` (or `kind-bench evaluator`)")
    from kind_bench.data import load_prepared

    expected = evaluator_identity(cfg, str(load_prepared(cfg).record["data_sha256"]))
    if load_metadata(path, "evaluator weights").get("identity") != expected:
        raise UserError(f"evaluator weights {path} were trained with other evaluator.* settings or data than this "
                        "call's: rerun `kind-bench evaluator` with this config (dvc repro evaluator)")
