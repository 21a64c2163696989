"""``python -m kind_bench.perf``: KIND's speed against its dense reference, measured side by side.

Prints three ratios on the default model (``kind-bench`` config, overridable with ``key=value``), each
next to its FLOP floor (the ratio of the two sides' FLOPs, from torch's flop counter; for one gated layer
it is 1 + N_T (in + out) / (in out)), and their targets:

1. KIND pre-training step / vanilla DiT step (all parameters train in both): target <= 1.1 x its floor;
2. KIND transfer step / full fine-tune step (each with its own trainable set): target <= 1.0;
3. merged-KIND sampling / dense sampling (one class, classifier-free guidance): target <= 1.02.

Steps use the training optimizer (fused AdamW) and each phase's batch size and precision
(``pretrain.*`` for the ancestry's classes, ``transfer.*`` for the task's; ``sample.precision``), on
CUDA when a GPU is visible (timed after ``torch.cuda.synchronize``, TF32 as ``runtime.tf32`` says, as in
training). The two sides of each ratio alternate
within one process,
and each ratio is the median over rounds (``--rounds``, 15 by default), printed with its quartiles, so
that drift on a shared machine cancels and what is left of it shows. Each target is ``met`` when the upper
quartile is within it, ``missed`` when the lower quartile is above it, and ``on the line`` otherwise.
Absolute times are printed too. ``--json PATH`` also writes the table.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from kind_bench.config import Config, TrainConfig, compose, torch_threads
from kind_bench.device import autocast, device_name
from kind_bench.diffusion import diffusion_loss, noise_scheduler, sample
from kind_bench.errors import UserError
from kind_bench.io import write_json
from kind_bench.kind.decompose import deploy
from kind_bench.methods import NoOptions, Vanilla, make_ancestry, method_class
from kind_bench.metrics.cost import count_flops
from kind_bench.models import null_label
from kind_bench.models.vae import PixelCodec, VaeCodec
from kind_bench.stages.common import make_target, setup
from kind_bench.train import set_trainable


def model_input(codec: PixelCodec | VaeCodec) -> tuple[int, int, int]:
    """What the DiT sees, (channels, size, size): the images, or the VAE's latents."""
    return codec.channels, codec.size, codec.size


def train_step(model: nn.Module, params: list[nn.Parameter], cfg: Config, phase: TrainConfig,
               num_classes: int, shape: tuple[int, int, int]) -> Callable[[], None]:
    """One optimiser step of the shared diffusion loss on a fixed random batch of the phase's size
    (``cfg.pretrain`` or ``cfg.transfer``: its ``batch_size`` and ``precision``) of inputs of ``shape`` over
    ``num_classes`` labels, on the model's device."""
    set_trainable(model, params)
    model.train()
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    scheduler = noise_scheduler(cfg.diffusion)
    generator = torch.Generator(device=device).manual_seed(0)
    n = phase.batch_size
    x = torch.randn(n, *shape, generator=generator, device=device)
    y = torch.randint(0, num_classes, (n,), generator=generator, device=device)
    null = null_label(model)

    def step() -> None:
        with autocast(device, phase.precision):
            loss = diffusion_loss(model, x, y, scheduler, null, cfg.diffusion.label_dropout, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sampling(model: nn.Module, cfg: Config, shape: tuple[int, int, int]) -> Callable[[], None]:
    """Sample ``samples_per_class`` inputs of ``shape`` for class 0 with the configured sampler."""
    scheduler = noise_scheduler(cfg.diffusion)
    device = next(model.parameters()).device
    labels = torch.zeros(cfg.sample.samples_per_class, dtype=torch.long, device=device)

    def run() -> None:
        null = len(cfg.task.target_classes)
        with autocast(device, cfg.sample.precision):
            sample(model, labels, torch.zeros(len(labels), *shape, device=device), scheduler, cfg.sample, null,
                   torch.Generator(device=device).manual_seed(0))

    return run


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ratio(kind: Callable[[], None], dense: Callable[[], None], repeats: int, rounds: int) -> dict[str, float]:
    """The KIND/dense time ratio (median and quartiles over ``rounds``, the two sides alternating each
    round), each side's median time in ms, and the FLOP floor."""
    floor = count_flops(kind) / max(1, count_flops(dense))
    for fn in (kind, dense):
        fn()  # warm-up
    ratios, kind_ms, dense_ms = [], [], []
    for _ in range(rounds):
        times = []
        for fn in (kind, dense):
            _synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            _synchronize()
            times.append((time.perf_counter() - start) / repeats * 1000)
        kind_ms.append(times[0])
        dense_ms.append(times[1])
        ratios.append(times[0] / times[1])
    q1, median, q3 = statistics.quantiles(ratios, n=4) if rounds > 1 else ratios * 3  # one round: no spread
    return {"ratio": median, "ratio_q1": q1, "ratio_q3": q3, "floor": floor,
            "kind_ms": statistics.median(kind_ms), "dense_ms": statistics.median(dense_ms)}


#: each ratio's target: (bound, whether the bound is a multiple of the ratio's FLOP floor)
TARGETS = {"pretrain step (KIND / vanilla)": (1.1, True), "transfer step (KIND / full fine-tune)": (1.0, False),
           "sampling (merged KIND / dense)": (1.02, False)}


def target_text(name: str) -> str:
    """The target of ratio ``name`` as printed, e.g. ``<= 1.1 x floor``."""
    bound, of_floor = TARGETS[name]
    return f"<= {bound} x floor" if of_floor else f"<= {bound}"


def verdict(name: str, row: dict[str, float]) -> str:
    """``met`` when the ratio's upper quartile is within its target, ``missed`` when its lower quartile is
    above it, else ``on the line`` (the rounds do not separate the ratio from the target)."""
    bound, of_floor = TARGETS[name]
    limit = bound * row["floor"] if of_floor else bound
    if row["ratio_q3"] <= limit:
        return "met"
    return "missed" if row["ratio_q1"] > limit else "on the line"


def measure(cfg: Config, device: torch.device, codec: PixelCodec | VaeCodec, repeats: int = 5,
            rounds: int = 15) -> dict[str, dict[str, float]]:
    """The three ratios of the module docstring, on what the DiT sees: ``codec``'s images or latents."""
    torch.manual_seed(0)
    shape = model_input(codec)
    ancestry_classes, target_classes = len(cfg.suite.ancestry_classes), len(cfg.task.target_classes)
    ancestry = make_target(cfg, codec, ancestry_classes, cfg.model.depth)
    target = make_target(cfg, codec, target_classes, cfg.model.depth)
    kind_model = make_ancestry(cfg, "kind").build(ancestry).to(device)
    dense_model = Vanilla(NoOptions()).build(ancestry).to(device)
    results = {"pretrain step (KIND / vanilla)": ratio(
        train_step(kind_model, list(kind_model.parameters()), cfg, cfg.pretrain, ancestry_classes, shape),
        train_step(dense_model, list(dense_model.parameters()), cfg, cfg.pretrain, ancestry_classes, shape),
        repeats, rounds)}

    kind_method = method_class("kind")(method_class("kind").Options())
    full = method_class("full_finetune")(method_class("full_finetune").Options())
    kind_child = kind_method.build(kind_model, target).model.to(device)
    dense_child = full.build(dense_model, target).model.to(device)
    results["transfer step (KIND / full fine-tune)"] = ratio(
        train_step(kind_child, kind_method.trainable_parameters(kind_child), cfg, cfg.transfer, target_classes,
                   shape),
        train_step(dense_child, full.trainable_parameters(dense_child), cfg, cfg.transfer, target_classes, shape),
        repeats, rounds)

    kind_child.eval(), dense_child.eval()
    merged = deploy(kind_child, 0, guidance=cfg.sample.guidance_scale > 1)
    results["sampling (merged KIND / dense)"] = ratio(
        sampling(merged, cfg, shape), sampling(dense_child, cfg, shape), max(1, repeats // 5), rounds)
    return results


def precisions(cfg: Config) -> dict[str, str]:
    """The precision each measured phase runs in."""
    return {"pretrain": cfg.pretrain.precision, "transfer": cfg.transfer.precision, "sample": cfg.sample.precision}


def batch_sizes(cfg: Config) -> dict[str, int]:
    """The batch size each measured training phase runs at."""
    return {"pretrain": cfg.pretrain.batch_size, "transfer": cfg.transfer.batch_size}


def pop_option(args: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` from ``args``; the value, or None when absent (the modules' own ``--flag VALUE``
    options; everything else is a config override)."""
    if name not in args:
        return None
    at = args.index(name)
    if at + 1 == len(args):
        raise UserError(f"{name} needs a value")
    value = args[at + 1]
    del args[at : at + 2]
    return value


def main(argv: list[str] | None = None) -> int:
    """Print the ratios for the default config (``key=value`` overrides allowed; ``--json PATH`` writes
    them; ``--rounds N`` and ``--repeats N`` change how long each side is timed, 15 and 5 by default)."""
    args = list(argv if argv is not None else sys.argv[1:])
    try:
        out = pop_option(args, "--json")
        rounds, repeats = (pop_option(args, name) or default for name, default in (("--rounds", "15"),
                                                                                      ("--repeats", "5")))
        if not (rounds.isdigit() and repeats.isdigit() and int(rounds) >= 1 and int(repeats) >= 1):
            raise UserError(f"--rounds={rounds} and --repeats={repeats} must be whole numbers >= 1")
        cfg = compose(["ancestry=kind", *args])
        device, codec = setup(cfg)  # as training runs: TF32 as runtime.tf32 says, the VAE's latents if any
    except UserError as exc:
        print(f"kind_bench.perf: error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(torch_threads(cfg.runtime, per_cell=False))
    print(f"model={cfg.model.name} (hidden {cfg.model.hidden_size}, depth {cfg.model.depth}), "
          f"batch {batch_sizes(cfg)}, {device_name(device)}, precision {precisions(cfg)}, "
          f"{torch.get_num_threads()} threads, "
          f"sampler {cfg.sample.scheduler} x{cfg.sample.steps}, guidance {cfg.sample.guidance_scale}")
    rows = {}
    for name, row in measure(cfg, device, codec, repeats=int(repeats), rounds=int(rounds)).items():
        rows[name] = {**row, "target": target_text(name), "verdict": verdict(name, row)}
        print(f"{name:40s} ratio {row['ratio']:5.3f} (quartiles {row['ratio_q1']:5.3f}-{row['ratio_q3']:5.3f})  "
              f"floor {row['floor']:5.3f}  target {target_text(name):16s} {rows[name]['verdict']:11s} "
              f"({row['kind_ms']:8.2f} ms vs {row['dense_ms']:8.2f} ms)")
    if out:
        write_json(out, {"model": cfg.model.name, "device": device_name(device),
                         "precision": precisions(cfg), "batch_size": batch_sizes(cfg),
                         "threads": torch.get_num_threads(),
                         "input": list(model_input(codec)), "ratios": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
