"""``python -m kind_bench.gpu_check`` (``make gpu-check``): the paper tier in miniature, on one CUDA GPU,
in minutes, with nothing downloaded.

It generates an ImageFolder of 64x64 RGB images (8 classes, each a coloured pattern under noise: 4 pre-train
and 4 novel), then runs the suite's own stages on it in a scratch workspace: the evaluator (a CNN trained
on the same images scores the samples, so the FD is ``fd_digits``-style, not FID), the vanilla and KIND
ancestries on DiT-S/2 (bf16), three transfers (KIND, full fine-tuning, LoRA) scored on 2,000 samples each,
and the leaderboard; then ``kind_bench.perf`` at DiT-S/2. As in ``suite=paper`` the DiT runs on 32x32x4
latents of a local VAE (a random one, :func:`make_vae`), the images streamed from their files and encoded
once with their mirror images into the latent cache, drawn from the posterior, and EMA weights are sampled
with DDPM (only the evaluator CNN reads the small image set into memory); unlike it, nothing is compiled.
It writes ``results/gpu/``: ``summary.json``
(throughput in images per second, peak memory, the perf ratios) and the small leaderboard. ``--smoke``
runs the same pipeline at a toy size on the CPU (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

CLASSES = 8


def make_images(root: Path, size: int, per_class: int, seed: int = 0) -> None:
    """An ImageFolder of ``CLASSES`` learnable classes: a class-coloured stripe pattern plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    grid = np.arange(size)
    for c in range(CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.uniform(0.2, 1.0, size=3)
        stripes = (np.sin(grid[:, None] * (c + 1) * np.pi / size + grid[None, :] * (c % 3) * np.pi / size) + 1) / 2
        for i in range(per_class):
            image = stripes[..., None] * colour + rng.normal(0, 0.1, size=(size, size, 3))
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")


def make_vae(path: Path) -> None:
    """A randomly initialised diffusers ``AutoencoderKL`` saved as safetensors: the SD-VAE's interface (4
    latent channels, a posterior, a scaling factor) with a 2x downsampling and next to no cost. Its latents
    are random features of the images, so the samples it decodes score poorly on any extractor: the check
    measures speed and exercises the latent path, not sample quality."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):  # the same VAE every time, the caller's RNG untouched
        torch.manual_seed(0)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=8)
    vae.save_pretrained(path, safe_serialization=True)


def image_size(smoke: bool) -> int:
    """The generated images' side: 64 (32 x 32 x 4 latents, the token count of DiT at 256 px), 16 for smoke."""
    return 16 if smoke else 64


def overrides(data: Path, vae: Path, smoke: bool) -> list[str]:
    """The mini paper tier's config (or its toy size for ``smoke``)."""
    common = ["data=imagefolder", f"data.root={data}", f"data.image_size={image_size(smoke)}", "data.channels=3",
              "suite.ancestry_classes=[0,1,2,3]", "task.target_classes=[4,5,6,7]", "tuning.lr_source=config",
              "quiet=true", "namespace=runs", "runtime.workers=1", "eval.draws=1", "evaluator.epochs=5",
              # suite=paper's protocol: images streamed from their files, latents drawn from a cached VAE
              # posterior of each image and its mirror image, EMA weights sampled with DDPM (our decay and step
              # count for runs this short: 0.99 and 50, not 0.9999 and 250)
              "data.storage=files", f"model.vae_path={vae}", "data.flip=true", "data.latents=sample",
              "pretrain.ema=0.99", "transfer.ema=0.99", "sample.scheduler=ddpm"]
    if smoke:  # files read by worker processes, as on the GPU (one here: the CPU test's cores are few)
        return [*common, "model=dit_micro", "data.workers=1", "pretrain.steps=4", "transfer.steps=4",
                "transfer.warmup_steps=1", "pretrain.warmup_steps=1", "sample.steps=2", "sample.samples_per_class=4",
                "sample.snapshot_samples_per_class=2", "eval.kid_subset_size=4", "eval.kid_subsets=2",
                "ancestry.n_tailors=4", "ancestry.tailors_per_class=2"]
    return [*common, "model=dit_s2", "pretrain.steps=400", "pretrain.batch_size=64", "pretrain.lr=3e-4",
            "transfer.steps=200", "transfer.batch_size=64", "transfer.lr=3e-4", "pretrain.precision=bf16",
            "transfer.precision=bf16", "sample.precision=bf16", "sample.steps=50", "sample.samples_per_class=500",
            "sample.snapshot_samples_per_class=50", "ancestry.n_tailors=96", "ancestry.tailors_per_class=48"]


def run(out: Path, smoke: bool = False) -> dict:
    """Run the mini tier in a scratch workspace; write and return the summary."""
    from kind_bench.cli import main as cli
    from kind_bench.perf import main as perf

    if not smoke and not torch.cuda.is_available():
        raise SystemExit("kind_bench.gpu_check: no CUDA GPU here (use --smoke for the CPU toy size)")
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="kind-bench-gpu-"))
    cwd = os.getcwd()
    try:
        os.chdir(workspace)
        make_images(workspace / "images", image_size(smoke), 40 if smoke else 256)
        make_vae(workspace / "vae")
        base = overrides(workspace / "images", workspace / "vae", smoke)
        kind_only = [o for o in base if not o.startswith("ancestry.")]
        steps = [["data", *kind_only], ["evaluator", *kind_only], ["pretrain", "ancestry=vanilla", *kind_only],
                 ["pretrain", "ancestry=kind", *base]]
        steps += [["run", f"method={m}", *(base if m == "kind" else kind_only)] for m in ("kind", "full_finetune",
                                                                                           "lora")]
        for argv in steps:
            if cli(argv) != 0:
                raise SystemExit(f"kind_bench.gpu_check: `kind-bench {' '.join(argv[:2])}` failed")
        if cli(["leaderboard"]) != 0:
            raise SystemExit("kind_bench.gpu_check: the leaderboard failed")
        cells, protocol = {}, {}
        for path in sorted((workspace / "results/runs/digits").glob("*/*.json")):
            record = json.loads(path.read_text())
            info = record["train_info"]
            if record["run_info"]["status"] == "success" and "train_time_s" in info:
                cells[path.stem] = {"images_per_s": info["steps"] * _batch(record) / info["train_time_s"],
                                    "peak_memory_mb": info["peak_memory_mb"], **record["metrics"]}
                protocol = _protocol(record["run_info"]["config"])
        model = "dit_micro" if smoke else "dit_s2"
        shape = [o for o in base if o.startswith(("data=", "data.root=", "data.image_size=", "data.channels=",
                                                  "model.vae_path=", "pretrain.precision=", "transfer.precision=",
                                                  "sample.precision="))]
        perf_args = [f"model={model}", *shape, "--json", str(out / "perf.json")]  # the tier's latents, precision
        if smoke:  # a few short rounds: the toy size checks that the ratios are produced, not their values
            perf_args += ["--rounds", "3", "--repeats", "1", "transfer.batch_size=8", "sample.samples_per_class=4",
                          "eval.kid_subset_size=4",
                          "ancestry.n_tailors=4", "ancestry.tailors_per_class=2"]
        else:
            perf_args += ["transfer.batch_size=64", "sample.samples_per_class=64", "ancestry.n_tailors=96",
                          "ancestry.tailors_per_class=48"]
        if perf(perf_args) != 0:
            raise SystemExit("kind_bench.gpu_check: `python -m kind_bench.perf` failed")
        for name in ("digits.csv", "digits.md"):
            shutil.copy(workspace / "results/leaderboard" / name, out / name.replace("digits", "leaderboard"))
        summary = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)",
                   "model": model, "protocol": protocol, "cells": cells,
                   "perf": json.loads((out / "perf.json").read_text())}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary
    finally:
        os.chdir(cwd)
        shutil.rmtree(workspace, ignore_errors=True)


def _batch(record: dict) -> int:
    return int(record["run_info"]["config"]["transfer"]["batch_size"])


def _protocol(config: dict) -> dict[str, object]:
    """What a cell's recorded config says it ran: the paper tier's protocol keys."""
    data = config["data"]
    return {"vae": config["model"]["vae_path"] is not None, "storage": data["storage"], "flip": data["flip"],
            "latents": data["latents"], "ema": config["transfer"]["ema"], "sampler": config["sample"]["scheduler"]}


def main(argv: list[str] | None = None) -> int:
    """``python -m kind_bench.gpu_check [--smoke] [--out results/gpu]``."""
    from kind_bench.errors import UserError
    from kind_bench.perf import pop_option

    args = list(argv if argv is not None else sys.argv[1:])
    try:
        out = Path(pop_option(args, "--out") or "results/gpu")
    except UserError as exc:
        print(f"kind_bench.gpu_check: error: {exc}", file=sys.stderr)
        return 2
    summary = run(out, smoke="--smoke" in args)
    for cell, numbers in summary["cells"].items():
        print(f"{cell}: {numbers['images_per_s']:.0f} images/s, peak {numbers['peak_memory_mb']:.0f} MiB")
    print(f"gpu_check: {out}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
