"""The real-data code paths, on tiny fixtures generated here: a local SD-style VAE and Inception weights."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kind_bench.cli import main
from kind_bench.config import EvalConfig
from kind_bench.errors import UserError
from kind_bench.methods import compose_ancestry
from kind_bench.metrics.fidelity import LocalInceptionV3, quality_metrics
from kind_bench.models.vae import make_codec
from kind_bench.paths import ancestry_weights

from micro import micro


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    from diffusers import AutoencoderKL

    path = tmp_path_factory.mktemp("vae")
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=2, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=8)
    vae.save_pretrained(path, safe_serialization=True)
    return path


def test_vae_codec_maps_images_to_scaled_latents_and_back(tiny_vae):
    codec = make_codec(str(tiny_vae), channels=1, image_size=8, device=torch.device("cpu"))
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (3, 2, 4, 4) and (codec.channels, codec.size) == (2, 4)
    decoded = codec.decode(latents)
    assert decoded.shape == images.shape and decoded.abs().max() <= 1


def test_pretraining_runs_in_a_local_vae_latent_space(in_workspace, tiny_vae):
    overrides = micro(f"model.vae_path={tiny_vae}", "pretrain.steps=2", ancestry=False)
    assert main(["pretrain", "ancestry=vanilla", *overrides]) == 0
    assert ancestry_weights(compose_ancestry(overrides, "vanilla"), "vanilla", seed=0).is_file()


def test_missing_vae_folder_is_bad_input(in_workspace, capsys):
    assert main(["pretrain", "ancestry=vanilla", "model.vae_path=/no/such/vae"]) == 2
    assert "model.vae_path=/no/such/vae: no such directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Randomly initialised Inception-v3 weights with torch-fidelity's layout, as safetensors."""
    with mock.patch.object(nn.Module, "load_state_dict", lambda self, state, strict=True: None), \
         mock.patch("torch_fidelity.feature_extractor_inceptionv3.torch.load", lambda *a, **k: {}):
        model = LocalInceptionV3.__mro__[1]("init", ["2048"], feature_extractor_weights_path="unused")
    path = tmp_path_factory.mktemp("inception") / "pt_inception.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_inception_path_scores_from_local_weights(inception_weights, suffix):
    path = inception_weights
    if suffix == ".pth":  # torch-fidelity's own format, read with weights_only=True (no unpickling)
        path = inception_weights.with_suffix(".pth")
        torch.save(load_file(str(inception_weights)), path)
    cfg = EvalConfig(feature_extractor="inception-v3-compat", inception_weights=str(path),
                     kid_subset_size=5, kid_subsets=2)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1, torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    scores = quality_metrics(a, b, cfg, weights=None, device=torch.device("cpu"))
    assert set(scores) == {"fid", "is", "is_gap", "kid", "precision", "recall"}
    assert all(torch.isfinite(torch.tensor(v)) for v in scores.values())


def test_inception_without_local_weights_is_bad_input():
    cfg = EvalConfig(feature_extractor="inception-v3-compat", inception_weights="/no/weights.pth")
    with pytest.raises(UserError, match="eval.inception_weights=/no/weights.pth: no such file"):
        quality_metrics(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8), cfg, weights=None,
                        device=torch.device("cpu"))
