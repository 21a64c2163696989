"""The real-data code paths, on tiny fixtures generated here: a local SD-style VAE and Inception weights."""

from __future__ import annotations

import json
import math
import shutil
import weakref
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kind_bench.cli import main
from kind_bench.config import EvalConfig, compose
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


def test_pretraining_runs_in_a_local_vae_latent_space_and_names_the_vae_by_its_contents(in_workspace, tiny_vae,
                                                                                        capsys):
    from diffusers import AutoencoderKL

    vae = in_workspace / "vae"  # a copy: its files are replaced below
    shutil.copytree(tiny_vae, vae)
    overrides = micro(f"model.vae_path={vae}", "pretrain.steps=2", "transfer.steps=2", ancestry=False)
    assert main(["pretrain", "ancestry=vanilla", *overrides]) == 0
    assert ancestry_weights(compose_ancestry(overrides, "vanilla"), "vanilla", seed=0).is_file()
    cell = ["method=full_finetune", "task=novel", *overrides]
    assert main(["transfer", *cell, "seed=0"]) == 0
    other = AutoencoderKL.from_pretrained(vae)
    with torch.no_grad():
        other.encoder.conv_in.weight.add_(1.0)
    other.save_pretrained(vae, safe_serialization=True)  # another VAE at the same path
    capsys.readouterr()
    assert main(["transfer", *cell, "seed=0"]) == 2  # the finished cell and its ancestry were in the old latents
    assert "pre-trained with another config, seed or data" in capsys.readouterr().err
    assert main(["transfer", "method=scratch", "task=novel", *overrides, "seed=0"]) == 0
    assert main(["transfer", "method=scratch", "task=novel", *overrides, "seed=0"]) == 0
    assert "up to date" in capsys.readouterr().out
    with torch.no_grad():
        other.encoder.conv_in.weight.add_(1.0)
    other.save_pretrained(vae, safe_serialization=True)
    assert main(["transfer", "method=scratch", "task=novel", *overrides, "seed=0"]) == 0  # no ancestry: retrained
    assert "up to date" not in capsys.readouterr().out


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


def test_inception_path_scores_from_local_weights(inception_weights):
    cfg = EvalConfig(feature_extractor="inception-v3-compat", inception_weights=str(inception_weights),
                     kid_subset_size=5, kid_subsets=2)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1, torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    scores = quality_metrics(a, b, cfg, weights=None, device=torch.device("cpu"))
    assert set(scores) == {"fid", "is", "is_gap", "kid", "precision", "recall"}
    assert all(torch.isfinite(torch.tensor(v)) for v in scores.values())


class Payload:
    """A pickled object: what a weights file must never be able to run."""


def test_local_extractor_weights_are_loaded_once_per_state_of_their_file(inception_weights, tmp_path, monkeypatch):
    from kind_bench.metrics import fidelity

    path = tmp_path / "inception.safetensors"
    shutil.copy(inception_weights, path)
    cfg = EvalConfig(feature_extractor="inception-v3-compat", inception_weights=str(path))
    loads, real = [], fidelity.LocalInceptionV3
    monkeypatch.setattr(fidelity, "LocalInceptionV3", lambda *a, **k: loads.append(a) or real(*a, **k))
    fidelity.check_local_extractors(cfg)
    fidelity.check_local_extractors(cfg)  # the stage's own check, after the start-up one
    assert len(loads) == 1
    save_file({"fc.weight": torch.zeros(3, 4)}, str(path))  # replaced by another network's weights
    with pytest.raises(UserError, match="does not fit torch-fidelity's Inception-v3"):
        fidelity.check_local_extractors(cfg)


def test_inception_pth_weights_load_as_tensors_only(inception_weights, tmp_path):
    state = load_file(str(inception_weights))
    pth = tmp_path / "pt_inception.pth"  # torch-fidelity's own format, read with weights_only=True
    torch.save(state, pth)
    model = LocalInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(pth))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    pickled = tmp_path / "pickled.pth"
    torch.save({"payload": Payload()}, pickled)
    with pytest.raises(UserError, match="is not a readable weights file"):
        LocalInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(pickled))


def test_inception_without_local_weights_is_bad_input():
    cfg = EvalConfig(feature_extractor="inception-v3-compat", inception_weights="/no/weights.pth", kid_subset_size=2)
    with pytest.raises(UserError, match="eval.inception_weights=/no/weights.pth: no such file"):
        quality_metrics(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8), cfg, weights=None,
                        device=torch.device("cpu"))


def test_fd_on_dinov2_features_from_local_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    from kind_bench.metrics.fidelity import fd_dinov2

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224)
    path = tmp_path / "dinov2.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    cfg = EvalConfig(dinov2_weights=str(path))
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    assert math.isfinite(fd_dinov2(a, b, cfg, torch.device("cpu"))) and fd_dinov2(a, a, cfg, torch.device("cpu")) < 1e-3
    native = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)  # timm's 518 px layout
    assert native.pos_embed.shape[1] == 1370
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, str(path))
    assert math.isfinite(fd_dinov2(a, b, cfg, torch.device("cpu")))
    with pytest.raises(UserError, match="eval.dinov2_weights=/no/such: no such file"):
        fd_dinov2(a, b, EvalConfig(dinov2_weights="/no/such"), torch.device("cpu"))


def test_dinov2_arch_is_honoured_and_its_native_layout_resampled_as_timm_does(tmp_path):
    import timm
    from safetensors.torch import save_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    from kind_bench.metrics.fidelity import LocalDinoV2, fd_dinov2

    arch = "vit_small_patch14_reg4_dinov2"  # register tokens: its position embedding has no prefix token
    native = timm.create_model(arch, pretrained=False, num_classes=0)  # timm's 518 px layout
    path = tmp_path / "reg4.safetensors"
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, str(path))
    ours = LocalDinoV2("dinov2-local", ["dinov2"], feature_extractor_weights_path=str(path), dinov2_arch=arch)
    reference = timm.create_model(arch, pretrained=False, num_classes=0, img_size=224)
    reference.load_state_dict(checkpoint_filter_fn(native.state_dict(), reference))
    assert all(torch.equal(v, ours.model.state_dict()[k]) for k, v in reference.state_dict().items())
    a = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert math.isfinite(fd_dinov2(a, a.flip(0), EvalConfig(dinov2_weights=str(path), dinov2_arch=arch),
                                   torch.device("cpu")))
    with pytest.raises(UserError, match=f"eval.dinov2_weights={path} does not fit timm's vit_small_patch14_dinov2"):
        fd_dinov2(a, a, EvalConfig(dinov2_weights=str(path)), torch.device("cpu"))
    with pytest.raises(UserError, match="^eval.dinov2_arch=vit_tiny is not one of timm's DINOv2 architectures: "
                                        "vit_base_patch14_dinov2, .*vit_small_patch14_reg4_dinov2$"):
        fd_dinov2(a, a, EvalConfig(dinov2_weights=str(path), dinov2_arch="vit_tiny"), torch.device("cpu"))


@pytest.fixture
def image_folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d", "e", "f"):
        (tmp_path / "root" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / "root" / name / f"{i}.png")
    return tmp_path / "root"


def streamed(image_folder) -> list[str]:
    """The generated ImageFolder as streamed 8 x 8 grey images: classes 0-2 pre-train, 3-5 are the task's."""
    return ["data=imagefolder", f"data.root={image_folder}", "data.image_size=8", "data.channels=1",
            "data.storage=files", "suite.ancestry_classes=[0,1,2]", "task.target_classes=[3,4,5]"]


def test_a_streamed_imagefolder_trains_a_latent_model_from_a_cache_encoded_once(tmp_path, image_folder, tiny_vae,
                                                                                  monkeypatch):
    from kind_bench.models.vae import VaeCodec

    monkeypatch.chdir(tmp_path)
    calls = []
    real = VaeCodec.moments
    monkeypatch.setattr(VaeCodec, "moments", lambda self, x: calls.append(len(x)) or real(self, x))
    overrides = [*streamed(image_folder), "data.workers=0", "data.flip=true", "data.latents=sample",
                 f"model.vae_path={tiny_vae}",
                 *micro(ancestry=False), "pretrain.steps=3", "eval.feature_extractor=inception-v3-compat"]
    assert main(["data", *overrides]) == 0
    prepared = next((tmp_path / "artifacts/data").glob("*.safetensors"))
    assert "images" not in load_file(str(prepared))  # an index, not the pixels
    from kind_bench import distributed
    from kind_bench.config import compose
    from kind_bench.data import load_prepared
    from kind_bench.data.latents import encode_cached
    from kind_bench.models.vae import make_codec

    cfg = compose(overrides)
    codec = make_codec(str(tiny_vae), 1, 8, torch.device("cpu"))
    train = load_prepared(cfg).train
    monkeypatch.setattr(distributed, "is_main", lambda: False)  # another rank, before the cache exists
    other_rank = encode_cached(cfg, train, codec, torch.device("cpu"))
    assert not (tmp_path / "artifacts/latents").exists() and sum(calls) == 2 * len(train)  # encoded, not written
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(VaeCodec, "moments", lambda self, x: calls.append(len(x)) or real(self, x))
    first = encode_cached(cfg, train, codec, torch.device("cpu"))
    encoded = sum(calls)
    assert encoded == 2 * len(train)  # each image and its mirror image, once
    assert torch.equal(other_rank.mean, first.mean) and torch.equal(other_rank.std, first.std)
    assert first.mean.shape[:2] == (len(train), 2) and (first.std > 0).all()
    again = encode_cached(cfg, train, codec, torch.device("cpu"))
    assert sum(calls) == encoded and torch.equal(again.mean, first.mean)  # reused, not re-encoded
    draws = first.draw(torch.arange(4), torch.Generator().manual_seed(0))
    assert draws.shape == (4, 2, 4, 4) and not torch.equal(draws, first.mean[:4, 0] * codec.scale)
    pixels = torch.stack([train.dataset()[i][0] for i in range(2)])
    for side, view in enumerate((pixels, pixels.flip(-1))):  # orientation 1 is the mirror image
        mean, std = codec.moments(view)
        torch.testing.assert_close(first.mean[:2, side], mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(first.std[:2, side], std, atol=1e-5, rtol=1e-4)
    from kind_bench.data.latents import cache_dir

    folder = cache_dir(cfg, train, flip=True)
    other_images = train.subset(torch.arange(len(train)).roll(1))  # the same number of images, another order
    assert cache_dir(cfg, other_images, flip=True) != folder
    other_vae = tmp_path / "other-vae"
    shutil.copytree(tiny_vae, other_vae)
    config = other_vae / "config.json"
    config.write_text(config.read_text().replace('"scaling_factor": 0.18215', '"scaling_factor": 0.2'))
    assert cache_dir(compose([*overrides, f"model.vae_path={other_vae}"]), train, flip=True) != folder
    from kind_bench.data import latents
    from kind_bench.io import save_tensors

    monkeypatch.setattr(latents, "ENCODE_BATCH", 2)
    monkeypatch.setattr(latents, "SHARD", 2)  # a cache of several shards
    rolled = encode_cached(cfg, other_images, codec, torch.device("cpu"))
    torch.testing.assert_close(rolled.mean, first.mean.roll(1, 0), atol=1e-5, rtol=1e-4)
    read, held = [], []
    real_load = latents.load_tensors

    def load_shard(*args, **kwargs):
        held.append(sum(ref() is not None for ref in read))  # shards still in memory when the next is read
        shard = real_load(*args, **kwargs)
        read.append(weakref.ref(shard["mean"]))
        return shard

    monkeypatch.setattr(latents, "load_tensors", load_shard)
    reloaded = encode_cached(cfg, other_images, codec, torch.device("cpu"))
    assert len(read) >= 3 and max(held) == 0  # copied shard by shard, not all loaded and then concatenated
    assert torch.equal(reloaded.mean, rolled.mean) and torch.equal(reloaded.std, rolled.std)
    monkeypatch.setattr(latents, "load_tensors", real_load)
    rolled_folder = cache_dir(cfg, other_images, flip=True)
    rolled_manifest = rolled_folder / "manifest.json"
    complete = rolled_manifest.read_text()
    for shards, message in ((len(read) - 1, "holds .* of its"), (0, "has no shards")):
        rolled_manifest.write_text(complete.replace(f'"shards": {len(read)}', f'"shards": {shards}'))
        with pytest.raises(UserError, match=message):
            encode_cached(cfg, other_images, codec, torch.device("cpu"))
    rolled_manifest.write_text(complete)
    first_shard = rolled_folder / "shard-00000.safetensors"
    moments = real_load(first_shard)
    save_tensors(first_shard, {"mean": moments["mean"], "std": moments["std"][..., :-1]})  # a std of another shape
    with pytest.raises(UserError, match="shard 0 does not fit its manifest"):
        encode_cached(cfg, other_images, codec, torch.device("cpu"))
    manifest = json.loads((folder / "manifest.json").read_text())
    fewer = train.subset(torch.arange(len(train) - 1))
    monkeypatch.setattr("kind_bench.data.latents.cache_dir", lambda *args: folder)  # a cache of other images
    with pytest.raises(UserError, match=f"holds {manifest['images']} x 2 posteriors for {len(fewer)} images"):
        encode_cached(cfg, fewer, codec, torch.device("cpu"))
    with pytest.raises(UserError, match="streams from files"):
        _ = train.images


def test_a_posterior_draw_is_the_scaled_mean_or_a_sample_around_it_of_one_orientation_per_image():
    from kind_bench.data.latents import PosteriorSet

    mean = torch.stack([torch.full((500, 2, 3, 3), 1.0), torch.full((500, 2, 3, 3), -1.0)], 1)  # orientations
    mean = mean + torch.arange(500.0).view(500, 1, 1, 1, 1)
    std = torch.full_like(mean, 0.5)
    index, generator = torch.arange(500), torch.Generator().manual_seed(0)
    plain = PosteriorSet(mean, std, scale=0.2, sample=False).draw(index, generator) / 0.2
    side = (plain[:, 0, 0, 0] - torch.arange(500.0)).round()  # +1: orientation 0, -1: orientation 1
    assert set(side.tolist()) == {1.0, -1.0} and 150 < (side > 0).sum() < 350
    torch.testing.assert_close(plain, mean[index, (side < 0).long()])  # the mean of one orientation, scaled
    same = mean[:, :1].expand_as(mean)  # both orientations alike: the draw's noise alone is left
    noise = (PosteriorSet(same, std, scale=0.2, sample=True).draw(index, generator) / 0.2 - same[:, 0]) / 0.5
    assert abs(noise.mean()) < 0.05 and 0.95 < noise.std() < 1.05  # N(0, 1) around the scaled mean


def _read_in_a_daemonic_process(dataset, queue) -> None:
    from kind_bench.data.sources import file_loader

    queue.put(sum(len(x) for (x,) in file_loader(dataset, 2, workers=2)))


def test_files_are_read_inside_a_daemonic_process_such_as_a_sweeps_pool():
    import multiprocessing

    from torch.utils.data import TensorDataset

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_a_daemonic_process, args=(TensorDataset(torch.arange(5.0)), queue),
                            daemon=True)
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5) == 5  # no worker processes there: this one reads


def test_files_are_read_and_scored_by_worker_processes_where_data_workers_allow_as_in_this_one(
        tmp_path, image_folder, workspace, monkeypatch):
    import dataclasses

    from kind_bench.config import compose
    from kind_bench.data import load_prepared
    from kind_bench.data.sources import FileSet, in_memory
    from kind_bench.metrics import fidelity

    monkeypatch.chdir(tmp_path)
    overrides = [*streamed(image_folder), "data.workers=2"]
    assert main(["data", *overrides]) == 0
    files = load_prepared(compose(overrides)).train
    pixels = torch.stack([files.dataset()[i][0] for i in range(len(files))])
    whole = in_memory(files, workers=2)  # what the digits-style evaluator trains on
    assert torch.equal(whole.images, pixels) and torch.equal(whole.labels, files.labels)
    in_process = []  # torch-fidelity's save_cpu_ram: True reads in this process, False starts its workers
    real = fidelity.get_featuresdict_from_dataset
    monkeypatch.setattr(fidelity, "get_featuresdict_from_dataset", lambda *a: in_process.append(a[4]) or real(*a))
    weights = workspace / "artifacts/evaluator/digits_cnn.safetensors"
    space = fidelity.FeatureSpace({"cuda": False, "batch_size": 16, "save_cpu_ram": True, "verbose": False,
                                   **fidelity._extractor(EvalConfig(), weights)}, ("fid",))
    by_workers, from_tensor = space.features(files), space.features(pixels)
    no_workers = FileSet(dataclasses.replace(files.cfg, workers=0), files.paths, files.labels, files.source_sha256)
    in_this_process = space.features(no_workers)
    assert in_process == [False, True, True]
    for features in (by_workers, in_this_process):
        assert features.keys() == from_tensor.keys()
        assert all(torch.equal(features[k], from_tensor[k]) for k in features)


def test_the_evaluator_stage_refuses_streamed_files_too_large_to_read_into_memory(
        tmp_path, image_folder, monkeypatch, capsys):
    from kind_bench.stages import evaluator

    monkeypatch.chdir(tmp_path)
    overrides = [*streamed(image_folder), "data.workers=0", "evaluator.epochs=1"]
    assert main(["data", *overrides]) == 0
    monkeypatch.setattr(evaluator, "MEMORY_LIMIT", 1000)  # bytes: smaller than these 48 images of 8 x 8
    assert main(["evaluator", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reads all 48 images into memory" in err and "inception-v3-compat" in err
    assert not (tmp_path / "artifacts/evaluator").exists()  # (a small streamed set trains it: test_gpu_check)


def test_streamed_files_are_identified_by_their_pixels_not_only_their_names(tmp_path, image_folder, monkeypatch):
    import numpy as np
    from PIL import Image

    from kind_bench.config import compose
    from kind_bench.data import load_prepared

    monkeypatch.chdir(tmp_path)
    overrides = streamed(image_folder)
    cfg = compose(overrides)
    assert main(["data", *overrides]) == 0
    before = load_prepared(cfg)
    rng = np.random.default_rng(1)  # the same names and labels, other pixels
    for path in sorted(image_folder.rglob("*.png")):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(path)
    assert main(["data", *overrides]) == 0
    after = load_prepared(cfg)
    assert after.train.paths == before.train.paths
    assert after.record["data_sha256"] != before.record["data_sha256"]  # ancestries and fingerprints notice
    assert after.train.identity() != before.train.identity()  # and so do the latent caches


def test_the_paper_suite_composes_from_local_paths_and_a_class_split_file(tmp_path, image_folder, tiny_vae):
    import json

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"pretrain": ["a", "c", "e"], "novel": ["b", "d", "f"]}))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")
    tiny = "eval.kid_subset_size=4"  # 1 to 3 classes here: the paper's KID subsets of 1,000 need its 461
    cfg = compose(["suite=paper", f"data.root={image_folder}", f"model.vae_path={tiny_vae}",
                   f"suite.class_split={split}", f"eval.inception_weights={weights}", tiny])
    assert cfg.suite.ancestry_classes == [0, 2, 4] and cfg.task.target_classes == [1, 3, 5]
    assert (cfg.model.name, cfg.sample.scheduler, cfg.sample.steps, cfg.sample.guidance_scale) == ("dit_b2", "ddpm",
                                                                                                   250, 1.5)
    assert (cfg.pretrain.ema, cfg.pretrain.lr, cfg.pretrain.batch_size, cfg.diffusion.beta_schedule) == (
        0.9999, 1e-4, 256, "linear")
    assert cfg.data.storage == "files" and cfg.data.flip and cfg.data.latents == "sample"
    common = ["suite=paper", f"data.root={image_folder}", f"model.vae_path={tiny_vae}", f"suite.class_split={split}",
              f"eval.inception_weights={weights}", tiny]
    for contents, message in (({"pretrain": ["a", "zebra"], "novel": ["b"]}, "names classes data.root does not "
                                                                              "have: \\['zebra'\\]"),
                              ({"pretrain": ["a", "b"], "novel": ["b", "c"]}, "lists \\['b'\\] as both"),
                              ({"pretrain": "abc", "novel": ["d"]}, "must hold the lists of class names")):
        split.write_text(json.dumps(contents))
        with pytest.raises(UserError, match=message):
            compose(common)
    split.write_text(json.dumps({"pretrain": ["a", "c", "e"], "novel": ["b", "d", "f"]}))
    shift = image_folder.parent / "shift"  # a domain-shift ImageFolder of its own: one class, numbered 0
    (shift / "only").mkdir(parents=True)
    assert compose([*common, f"task.root={shift}", "task.split_classes=null", "task.target_classes=[0]"]
                   ).task.target_classes == [0]
    with pytest.raises(UserError, match="names classes of data.root, not of task.root"):
        compose([*common, f"task.root={shift}"])  # paper_novel's split_classes=novel would index data.root


def test_the_paper_suite_refuses_a_missing_path_and_publishes_the_suite_with_the_users_paths(tmp_path, tiny_vae):
    import json

    from kind_bench.identity import is_canonical_ancestry, namespace
    from kind_bench.methods import compose_ancestry, compose_cell
    from kind_bench.paths import ancestry_dir

    root = tmp_path / "classes"  # the paper's KID subsets of 1,000 need 250 novel classes of 4 snapshot samples
    names = [f"c{i:03d}" for i in range(260)]
    for name in names:
        (root / name).mkdir(parents=True)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"pretrain": names[:10], "novel": names[10:]}))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")
    given = {"data.root": root, "suite.class_split": split, "model.vae_path": tiny_vae,
             "eval.inception_weights": weights}
    paths = [f"{key}={value}" for key, value in given.items()]
    for key in given:  # a suite's ??? cannot enforce these: each is refused by name when left out
        with pytest.raises(UserError, match=f"^{key} is required by suite=paper"):
            compose(["suite=paper", *[p for p in paths if not p.startswith(f"{key}=")]])
    cell = compose_cell(["suite=paper", "method=kind", "task=paper_novel", "seed=0", *paths])
    ancestry = compose_ancestry(["suite=paper", *paths], "kind")
    assert namespace(cell) == namespace(cell, training=True) == "runs"  # the published cell, in the user's paths
    assert is_canonical_ancestry(ancestry, "kind") and ancestry_dir(ancestry, "kind").parts[-2:] == ("ancestry", "kind")
    shorter = compose_ancestry(["suite=paper", *paths, "pretrain.steps=10"], "kind")
    assert not is_canonical_ancestry(shorter, "kind") and "ancestry-variants" in ancestry_dir(shorter, "kind").parts
    assert namespace(compose_cell(["suite=paper", "method=kind", "task=paper_novel", "seed=0", *paths,
                                   "transfer.steps=10"])).startswith("adhoc/")


def test_a_task_with_a_root_of_its_own_trains_on_that_root(tmp_path, image_folder, monkeypatch):
    from kind_bench.config import compose
    from kind_bench.data import load_prepared

    monkeypatch.chdir(tmp_path)
    shift = tmp_path / "shift"
    shutil.copytree(image_folder, shift)
    base = ["data=imagefolder", f"data.root={image_folder}", "data.image_size=8", "data.channels=1",
            "suite.ancestry_classes=[0,1,2]", "task.target_classes=[3,4,5]"]
    assert main(["data", *base, f"task.root={shift}"]) == 0
    cfg = compose([*base, f"task.root={shift}"])
    own, suite = load_prepared(cfg, task=True), load_prepared(cfg)
    assert own.record["root"] == str(shift) and suite.record["root"] == str(image_folder)


def test_the_paper_tier_runs_end_to_end_at_toy_size(tmp_path, image_folder, tiny_vae, inception_weights, monkeypatch):
    """suite=paper's own code paths (a class split, a VAE, streamed files, Inception, DDPM, EMA, bf16 off),
    at a toy size: data, a KIND ancestry, a transfer with its evaluation, and the recombination curve."""
    import json

    monkeypatch.chdir(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"pretrain": ["a", "c", "e"], "novel": ["b", "d", "f"]}))
    toy = ["suite=paper", f"data.root={image_folder}", f"suite.class_split={split}", f"model.vae_path={tiny_vae}",
           f"eval.inception_weights={inception_weights}", "model=dit_micro", f"model.vae_path={tiny_vae}",
           "data.image_size=8", "data.channels=1", "data.workers=0", "pretrain.steps=4", "transfer.steps=4",
           "pretrain.batch_size=8", "transfer.batch_size=8", "pretrain.checkpoint_every=0",
           "transfer.checkpoint_every=0", "pretrain.precision=fp32", "transfer.precision=fp32",
           "sample.precision=fp32", "sample.steps=2", "sample.samples_per_class=3", "pretrain.snapshots=[1.0]",
           "transfer.snapshots=[1.0]",
           "sample.snapshot_samples_per_class=3", "eval.kid_subset_size=2", "eval.kid_subsets=2", "eval.isc_splits=1",
           "eval.prc_neighborhood=1", "runtime.compile=false", "quiet=true"]
    kind = [*toy, "ancestry.n_tailors=4", "ancestry.tailors_per_class=2"]
    assert main(["data", *toy]) == 0
    assert main(["pretrain", "ancestry=kind", *kind]) == 0
    assert main(["run", "method=kind", "task=paper_novel", "seed=0", *kind]) == 0
    (record,) = (tmp_path / "results/adhoc/paper/kind").glob("*/kind-paper_novel-0.json")
    assert json.loads(record.read_text())["run_info"]["status"] == "success"
    from kind_bench.data import FileSet
    from kind_bench.stages import recombine

    references = []

    class Stub:  # the recombination's scorer, without Inception's 2048-d FD (covered above): what it is given
        def __init__(self, reference, *args, **kwargs) -> None:
            references.append(reference)

        def __call__(self, images, source_ids) -> dict[str, float]:
            return {"fid": 0.0}

    monkeypatch.setattr(recombine, "Scorer", Stub)
    assert main(["recombine", "ancestry=kind", *kind]) == 0
    assert len(references) == 3 and all(isinstance(r, FileSet) for r in references)  # the streamed test set
