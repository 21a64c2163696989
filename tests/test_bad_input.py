"""Bad input, table-driven: one line naming the key (and the choices), exit status 2, nothing written.

Every case runs in a workspace that already holds prepared data, an evaluator and the micro KIND and
vanilla ancestries; ``results/`` must be byte-for-byte the same afterwards. Cases that would train are
caught at start-up, before any training.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kind_bench.cli import main
from kind_bench.methods import compose_cell, discover
from kind_bench.paths import ancestry_weights

from micro import micro


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def folders(root: Path) -> set[str]:
    """Every folder under ``root``, not following links (the shared data and evaluator are links)."""
    return {str(Path(d).relative_to(root)) for d, _, _ in os.walk(root)}


def kind_weights() -> Path:
    return ancestry_weights(compose_cell(micro("method=kind")), "kind")


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def strip_checksum_and_fill(path: Path) -> None:
    """Weights rewritten by someone else: every value 0.5 and no checksum in the header."""
    save_file({k: torch.full_like(v, 0.5) for k, v in load_file(str(path)).items()}, str(path))


def relabel(path: Path) -> None:
    """An intact file (valid checksum) that says it was pre-trained with another config."""
    from kind_bench.io import load_metadata, load_tensors, save_tensors

    meta = {**load_metadata(path), "identity": "another-config/seed-0/0"}
    meta.pop("sha256")
    save_tensors(path, load_tensors(path), meta)


def tamper_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + size].decode()
    data[8 : 8 + size] = header.replace('"F32"', '"F64"', 1).encode()
    path.write_bytes(bytes(data))


def broken_plugin(root: Path, monkeypatch) -> None:
    info = root / "site" / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kind_bench.methods]\nbroken = kb_broken:Broken\n")
    (root / "site" / "kb_broken.py").write_text("raise RuntimeError('this plugin is broken')\n")
    monkeypatch.syspath_prepend(str(root / "site"))
    discover.cache_clear()


def remove_evaluator(root: Path, monkeypatch) -> None:
    (root / "artifacts/evaluator").unlink()


def corrupt_evaluator(root: Path, monkeypatch) -> None:
    target = root / "artifacts/evaluator"
    real = target.resolve()
    target.unlink()
    target.mkdir()
    data = (real / "digits_cnn.safetensors").read_bytes()
    (target / "digits_cnn.safetensors").write_bytes(data[: len(data) // 3])


def other_weights(root: Path, monkeypatch) -> None:
    """A safetensors file that holds some other network's weights."""
    save_file({"fc.weight": torch.zeros(3, 4)}, str(root / "other.safetensors"))


def results_is_a_file(root: Path, monkeypatch) -> None:
    (root / "blocked").write_text("not a folder")


Setup = Callable[[Path, object], None]
KIND = micro("method=kind")
FULL = micro("method=full_finetune", ancestry=False)
CASES: list[tuple[str, list[str], str, Setup | None]] = [
    ("unknown method", ["transfer", "method=nope"], "method='nope' is not one of: auto_lg, difffit", None),
    ("unknown task", ["transfer", "task=nope"],
     "task='nope' is not one of: depth2, depth4, fewshot, novel, paper_novel, shift, shift2, small", None),
    ("unknown model", ["pretrain", "model=dit_xxl"],
     "model='dit_xxl' is not one of: deit_base, deit_small, deit_tiny, dit_b2, dit_l2, dit_micro", None),
    ("negative steps", ["transfer", "transfer.steps=-5"], "transfer.steps=-5 must be a positive integer", None),
    ("negative warm-up", ["transfer", *FULL, "transfer.warmup_steps=-5"], "transfer.warmup_steps=-5 must be >= 0",
     None),
    ("infinite learning rate", ["run", *FULL, "transfer.lr=inf"], "transfer.lr=inf must be a finite number > 0",
     None),
    ("infinite guidance", ["run", *FULL, "sample.guidance_scale=inf"],
     "sample.guidance_scale=inf must be a finite number >= 1", None),
    ("heads that do not divide the width", ["run", *FULL, "model.num_heads=3"],
     "model.hidden_size=16 is not divisible by model.num_heads=3", None),
    ("empty sampling batch", ["run", *FULL, "sample.batch_size=0"], "sample.batch_size=0 must be positive", None),
    ("one diffusion timestep", ["run", *FULL, "diffusion.num_train_timesteps=1"],
     "diffusion.num_train_timesteps=1 must be >= 2", None),
    ("image size the source does not have", ["run", *FULL, "data.image_size=16"],
     "data.image_size=16, data.channels=1: the digits source is 8x8", None),
    ("repeated target classes", ["run", *FULL, "task.target_classes=[5,5,6,7,8]"],
     "task.target_classes=[5, 5, 6, 7, 8] lists [5] more than once", None),
    ("string for a number", ["pretrain", "pretrain.lr=fast"], "config key pretrain.lr: Value 'fast'", None),
    ("missing ImageFolder", ["data", "data=imagefolder", "data.root=/no/such/dir"],
     "data.root=/no/such/dir: no such directory", None),
    ("unquoted path with a space", ["data", "data=imagefolder", "data.root=/tmp/my", "images"],
     "argument 'images' is not key=value (quote a value with spaces", None),
    ("a name that leaves the workspace", ["run", *FULL, "task.name=../../../../x"],
     "task.name='../../../../x' is not a safe name", None),
    ("empty class list", ["transfer", "task.target_classes=[]"], "task.target_classes is empty", None),
    ("tailors beyond the rank", ["pretrain", "ancestry=kind", "ancestry.n_tailors=64", "evaluator.epochs=8"],
     "ancestry.n_tailors=64 must be in [1, 32)", None),
    ("a method option its own check rejects", ["run", *micro("method=fine", ancestry=False),
                                               "method.sigma_fraction=2"],
     "method.fine: sigma_fraction=2.0 must be in (0, 1]", None),
    ("truncated checkpoint", ["transfer", *KIND], "is truncated or corrupted", lambda r, mp: corrupt(kind_weights())),
    ("altered checkpoint bytes", ["transfer", *KIND], "checksum mismatch", lambda r, mp: flip_a_byte(kind_weights())),
    ("weights without a checksum", ["transfer", *KIND], "no checksum in its header",
     lambda r, mp: strip_checksum_and_fill(kind_weights())),
    ("tampered header", ["transfer", *KIND], "is truncated or corrupted", lambda r, mp: tamper_header(kind_weights())),
    ("an ancestry of another config", ["run", *KIND], "was pre-trained with another config, seed or data",
     lambda r, mp: relabel(kind_weights())),
    ("missing evaluator before floor", ["floor", "quiet=true"],
     "evaluator weights artifacts/evaluator/digits_cnn.safetensors not found", remove_evaluator),
    ("missing evaluator before training", ["run", *FULL],
     "evaluator weights artifacts/evaluator/digits_cnn.safetensors not found", remove_evaluator),
    ("corrupted evaluator", ["floor", "quiet=true"], "evaluator weights artifacts/evaluator/digits_cnn.safetensors",
     corrupt_evaluator),
    ("results that cannot be written", ["run", *FULL, "paths.results=blocked/results"],
     "blocked/results is not writable", results_is_a_file),
    ("plugin that raises at import", ["transfer", "method=broken"],
     "method='broken' failed to import: RuntimeError: this plugin is broken", broken_plugin),
    ("unknown sweep key", ["transfer", "model=dit_tiny,dit_s2"], "only task, seed may list several values", None),
    ("unknown sampler", ["evaluate", "sample.scheduler=euler"],
     "sample.scheduler='euler' is not one of: ddim, ddpm, dpm", None),
    ("unknown verb", ["frobnicate"], "verb 'frobnicate' is not one of", None),
    ("an evaluator trained with other settings", ["run", *FULL, "evaluator.epochs=9"],
     "were trained with other evaluator.* settings or data than this call's", None),
    ("a KID subset larger than a draw", ["run", *FULL, "eval.kid_subset_size=31"],
     "eval.kid_subset_size=31 exceeds the smallest draw (30 samples", None),
    ("a KID subset larger than the reference", ["run", *FULL, "task.target_classes=[5]",
                                                "sample.samples_per_class=60", "sample.snapshot_samples_per_class=60",
                                                "eval.kid_subset_size=56"],
     "eval.kid_subset_size=56 exceeds the 55 test images of task novel: lower it", None),
    ("PRC neighbours beyond the reference", ["run", *FULL, "task.target_classes=[5]", "eval.kid_subset_size=6",
                                              "sample.samples_per_class=60", "sample.snapshot_samples_per_class=60",
                                              "eval.prc_neighborhood=55"],
     "eval.prc_neighborhood=55 needs more than 55 test images of task novel, not 55", None),
    ("PRC neighbours beyond a draw", ["run", *FULL, "eval.prc_neighborhood=30"],
     "eval.prc_neighborhood=30 needs a draw of more than 30 samples, not 30", None),
    ("a misspelt key", ["run", *FULL, "transfer.stepz=3"],
     "config key transfer.stepz does not exist (did you mean transfer.steps?); transfer has: batch_size", None),
    ("a class the data does not have", ["run", *FULL, "task.target_classes=[5,6,42]"], "42", None),
    ("a LoRA rank of zero", ["run", *micro("method=lora", ancestry=False), "method.rank=0"],
     "method.lora: rank=0 must be >= 1", None),
    ("LoRA on no layer", ["run", *micro("method=lora", ancestry=False), "method.targets=[]"],
     "method.lora: targets=[] adapts nothing", None),
    ("Inception scoring without its weights", ["run", *FULL, "eval.feature_extractor=inception-v3-compat"],
     "eval.inception_weights=None: no such file (inception-v3-compat needs local weights", None),
    ("a missing Inception weights file", ["run", *FULL, "eval.inception_weights=/no/such.pth"],
     "eval.inception_weights=/no/such.pth: no such file", None),
    ("a missing DINOv2 weights file", ["pretrain", "ancestry=vanilla", "eval.dinov2_weights=/no/such.safetensors"],
     "eval.dinov2_weights=/no/such.safetensors: no such file", None),
    ("Inception weights of another network", ["run", *FULL, "eval.feature_extractor=inception-v3-compat",
                                               "eval.inception_weights=other.safetensors"],
     "eval.inception_weights=other.safetensors does not fit torch-fidelity's Inception-v3", other_weights),
    ("DINOv2 weights of another network", ["run", *FULL, "eval.dinov2_weights=other.safetensors"],
     "eval.dinov2_weights=other.safetensors does not fit timm's vit_small_patch14_dinov2", other_weights),
    ("an unknown DINOv2 architecture", ["run", *FULL, "eval.dinov2_weights=other.safetensors",
                                        "eval.dinov2_arch=vit_tiny"],
     "eval.dinov2_arch=vit_tiny is not one of timm's DINOv2 architectures: vit_base_patch14_dinov2", other_weights),
    ("flips in pixel space", ["run", *FULL, "data.flip=true"],
     "data.flip=True and data.latents=mean apply to a latent model (model.vae_path)", None),
    ("an untrained evaluator", ["evaluator", "evaluator.epochs=-1"], "evaluator.epochs=-1 must be >= 1", None),
    ("a negative evaluator rate", ["evaluator", "evaluator.lr=-5"], "evaluator.lr=-5.0 must be positive", None),
    ("an unknown tuning metric", ["tune", *FULL, "tuning.metric=nope"],
     "tuning.metric='nope' is not one of: class_accuracy, ece, fd_digits", None),
    ("no tuning task", ["tune", *FULL, "tuning.tasks=[]"], "tuning.tasks=[] needs at least one task", None),
    ("a negative tuning seed", ["tune", *FULL, "tuning.seeds=[-3]"], "tuning.seeds=[-3] must be one or more", None),
]


@pytest.fixture(scope="module")
def ancestries(workspace, micro_ancestries) -> Path:
    """Micro KIND and vanilla ancestries next to the session's data and evaluator."""
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        shutil.copytree(micro_ancestries, workspace / "artifacts/digits", dirs_exist_ok=True)
        assert main(["pretrain", "ancestry=kind", *micro()]) == 0
    finally:
        os.chdir(cwd)
    return workspace / "artifacts/digits"


@pytest.mark.parametrize(("argv", "message", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, message, setup, ancestries, in_workspace,
                                                          monkeypatch, capsys):
    root = in_workspace
    shutil.copytree(ancestries, root / "artifacts/digits")
    (root / "results").mkdir()
    (root / "results" / "keep.json").write_text("{}")
    if setup is not None:
        setup(root, monkeypatch)
    before, made = tree(root / "results"), folders(root)

    try:
        code = main(argv)
    finally:
        discover.cache_clear()
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kind-bench: error: "), err
    assert message in err, err
    assert tree(root / "results") == before
    assert not (root / "artifacts/digits/runs").exists()  # nothing trained
    assert folders(root) == made  # not even an empty folder left behind


def test_a_second_run_of_a_busy_cell_is_refused_with_the_holder(ancestries, in_workspace, capsys):
    from kind_bench.lock import exclusive
    from kind_bench.paths import cell_of, lock_path

    shutil.copytree(ancestries, in_workspace / "artifacts/digits")
    cfg = compose_cell(FULL)
    lock = lock_path(cfg, cell_of(cfg))
    with exclusive(lock, "test"):
        assert main(["run", *FULL]) == 2
    err = capsys.readouterr().err
    assert f"cell full_finetune-novel-0 is being run by process {os.getpid()}" in err and err.count("\n") == 1
    assert not lock.exists()
    assert json.loads(json.dumps(main(["run", *FULL]))) == 0  # free again
