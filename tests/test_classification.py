"""The classification track: timm ViT backbones, every method's defining property on the ViT, the metrics,
and the track end to end (leaderboard, descendant-size table, findings)."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn

from kind_bench.cli import main
from kind_bench.config import ModelConfig, compose
from kind_bench.methods import NoOptions, Target, Vanilla, method_class, training_phases
from kind_bench.models import blocks, build_backbone, label_parameters
from kind_bench.tracks import calibration_error, classification_metrics, predict

MODEL = ModelConfig(name="vit_test", arch="vit", hidden_size=16, depth=4, num_heads=2, patch_size=2, mlp_ratio=2.0,
                    timm_name="vit_tiny_patch16_224")
TARGET = Target(num_classes=3, depth=4, model=MODEL, in_channels=1, sample_size=8)
IMAGES = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def randomised(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def method(name: str, **options):
    cls = method_class(name)
    return cls(cls.Options(**options))


@pytest.fixture(scope="module")
def vanilla() -> nn.Module:
    torch.manual_seed(0)
    return randomised(Vanilla(NoOptions()).build(Target(5, 4, MODEL, 1, 8)))


def trainable(m, model: nn.Module) -> set[str]:
    chosen = {id(p) for p in training_phases(m, model, final_layer=True)[-1].params}
    return {n for n, p in model.named_parameters() if id(p) in chosen}


def features(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(IMAGES)


def test_the_backbone_is_timms_vision_transformer_and_deit_presets_instantiate():
    from timm.models.vision_transformer import VisionTransformer

    model = build_backbone(TARGET)
    assert isinstance(model, VisionTransformer) and len(model.blocks) == 4 and model.head.out_features == 3
    assert model(IMAGES).shape == (6, 3)
    for name, width in (("deit_tiny", 192), ("deit_small", 384)):
        cfg = compose(["suite=digits_cls", f"model={name}", "data=imagefolder", "data.root=.", "data.image_size=224",
                       "data.channels=3"])
        deit = build_backbone(Target(10, cfg.model.depth, cfg.model, 3, 224))
        assert deit.embed_dim == width and len(deit.blocks) == 12 and deit.patch_embed.patch_size == (16, 16)


@pytest.mark.parametrize("name", ["full_finetune", "lora", "pissa", "dora", "svdiff", "difffit", "head_only",
                                  "linear_probe"])
def test_methods_that_keep_the_ancestry_start_as_its_features_with_a_fresh_head(vanilla, name):
    m = method(name)
    model = m.build(copy.deepcopy(vanilla), TARGET).model
    torch.testing.assert_close(features(model), features(vanilla), atol=1e-5, rtol=1e-5)
    assert model.head.out_features == 3


def test_what_each_parameter_efficient_method_trains_on_the_vit(vanilla):
    def names(name):
        m = method(name)
        return trainable(m, m.build(copy.deepcopy(vanilla), TARGET).model)

    assert names("linear_probe") == {"head.weight", "head.bias"}
    assert names("head_only") == {"head.weight", "head.bias", "norm.weight", "norm.bias"}
    lora = names("lora")
    assert {n.split(".lora_")[0].split("blocks.0.")[-1] for n in lora if "blocks.0." in n} == {
        "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}
    difffit = names("difffit")
    assert any(n.endswith(".gamma") for n in difffit) and any("norm1.weight" in n for n in difffit)
    assert not any(n.endswith(".weight") and ("qkv" in n or "fc1" in n) for n in difffit)
    assert names("full_finetune") == {n for n, _ in vanilla.named_parameters()}


def test_svdiff_shifts_the_singular_values_of_the_fused_qkv(vanilla):
    m = method("svdiff")
    model = m.build(copy.deepcopy(vanilla), TARGET).model
    qkv = model.blocks[0].attn.qkv
    torch.testing.assert_close(qkv.weight(), vanilla.blocks[0].attn.qkv.weight, atol=1e-5, rtol=1e-5)
    assert qkv.delta.shape == (16,)


@pytest.mark.parametrize(("name", "pairs"), [("heur_lg", {3: 3}), ("auto_lg", {0: 0, 1: 1})])
def test_block_learngenes_inherit_exactly_their_vit_blocks(vanilla, name, pairs):
    model = method(name).build(vanilla, TARGET).model
    for dst, src in pairs.items():
        for key, value in model.blocks[dst].state_dict().items():
            assert torch.equal(value, vanilla.blocks[src].state_dict()[key]), key
    assert not torch.equal(model.blocks[2].attn.qkv.weight, vanilla.blocks[2].attn.qkv.weight)


def test_tleg_expands_every_linear_and_every_norm_of_a_vit_block():
    torch.manual_seed(0)
    ancestry = randomised(method_class("tleg").ancestry(NoOptions()).build(Target(5, 4, MODEL, 1, 8)))
    assert {"norm1", "norm2", "attn__qkv", "mlp__fc1"} <= set(ancestry.tleg_pairs)
    for depth in (2, 3):
        model = method("tleg").build(ancestry, Target(3, depth, MODEL, 1, 8)).model
        for index, block in enumerate(model.blocks):
            pair = ancestry.tleg_pairs["norm1"]
            torch.testing.assert_close(block.norm1.weight, pair.a["weight"] + index / depth * pair.b["weight"])
            pair = ancestry.tleg_pairs["attn__qkv"]
            torch.testing.assert_close(block.attn.qkv.weight, pair.a["weight"] + index / depth * pair.b["weight"])


def test_fine_shares_u_v_per_matrix_type_of_the_vit_and_sigma_per_block():
    torch.manual_seed(0)
    ancestry = randomised(method_class("fine").ancestry(NoOptions()).build(Target(5, 4, MODEL, 1, 8)))
    assert set(ancestry.fine_bases) == {"q", "out", "fc1", "fc2"}  # q names the fused qkv
    model = method("fine").build(ancestry, Target(3, 2, MODEL, 1, 8)).model
    layers = [b.attn.qkv for b in model.blocks]
    assert all(layer.basis is model.fine_bases["q"] for layer in layers)
    assert torch.equal(model.fine_bases["q"].U, ancestry.fine_bases["q"].U)
    assert not torch.equal(layers[0].sigma, layers[1].sigma)


@pytest.fixture(scope="module")
def kind_ancestry() -> nn.Module:
    torch.manual_seed(0)
    cls = method_class("kind").ancestry
    return randomised(cls(cls.Options(n_tailors=4, tailors_per_class=2)).build(Target(5, 4, MODEL, 1, 8)))


def test_kind_on_a_classifier_inherits_learngenes_and_opens_every_fresh_tailor(kind_ancestry):
    from kind_bench.kind.decompose import kind_layers

    m = method("kind")
    model = m.build(kind_ancestry, TARGET).model
    assert model.kind_gate.open_all
    for (_, mine), (_, theirs) in zip(kind_layers(model), kind_layers(kind_ancestry), strict=True):
        assert torch.equal(mine.U_G, theirs.U_G) and not torch.equal(mine.U_T, theirs.U_T)
    names = trainable(m, model)
    assert all(n.endswith(("U_T", "sigma_T", "V_T")) or n.startswith(("head.", "norm.")) for n in names)
    out = model(IMAGES)  # no label needed at test time
    assert out.shape == (6, 3)
    one = model(IMAGES[:1])
    torch.testing.assert_close(one, out[:1], atol=1e-5, rtol=1e-5)  # a sample does not depend on the batch


def test_kind_ablation_forms_learngenes_only_all_tailors_kept_and_predicted_gate(kind_ancestry):
    from kind_bench.kind.decompose import kind_layers

    only = method("kind", tailors=0).build(kind_ancestry, TARGET)
    pairs = list(zip(kind_layers(only.model), kind_layers(kind_ancestry), strict=True))
    assert all(mine.n_tailors == 0 for (_, mine), _ in pairs)
    for (_, mine), (_, theirs) in pairs:  # learngenes only: still the ancestry's learngenes
        for name in ("U_G", "sigma_G", "V_G"):
            assert torch.equal(getattr(mine, name), getattr(theirs, name)), name
    genes = sum(getattr(layer, n).numel() for _, layer in kind_layers(kind_ancestry) for n in ("U_G", "sigma_G", "V_G"))
    assert only.transferred >= genes
    kept = method("kind", inherit_tailors=True).build(kind_ancestry, TARGET).model
    assert all(torch.equal(a.U_T, b.U_T) for (_, a), (_, b) in zip(kind_layers(kept), kind_layers(kind_ancestry),
                                                                      strict=True))
    gated = method("kind", gate="predicted").build(kind_ancestry, TARGET).model
    assert gated.kind_gate.mode == "predicted"
    logits = predict(gated, IMAGES)
    with torch.no_grad(), gated.kind_gate.labels(logits.argmax(1)):
        torch.testing.assert_close(gated(IMAGES), logits)  # the second pass is gated by the first's guess


def test_a_label_gated_kind_classifier_never_sees_the_label_it_is_trained_on(kind_ancestry):
    """Training routes by the model's own prediction: the gate must not open with the true label, or the
    ancestry learns to read the label off its tailors (it then fits the training set and is at chance)."""
    from kind_bench.tracks import ClassificationObjective

    model = copy.deepcopy(kind_ancestry)
    gate = model.kind_gate
    opened: list[torch.Tensor] = []
    original = type(gate).labels

    def recording(self, labels):
        opened.append(labels.clone())
        return original(self, labels)

    objective = ClassificationObjective()
    seen = []
    for labels in (torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 3, 2, 1, 0, 4])):
        opened.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(gate), "labels", recording)
            loss = objective(model, IMAGES, labels, torch.Generator())
        assert torch.isfinite(loss)
        seen.append([t.tolist() for t in opened])
    assert seen[0] == seen[1]  # what opened the gate did not depend on the labels
    assert seen[0][0] == [gate.num_classes] * len(IMAGES)  # first pass: learngenes only


def test_classification_metrics_by_hand():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]]))
    labels = torch.tensor([0, 1, 1, 0])
    metrics = classification_metrics(logits, labels)
    assert metrics["top1"] == 0.75
    assert metrics["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4)
    # bins of width 1/15: 0.9 (correct), 0.6 (wrong), 0.7 (correct), 0.8 (correct) each alone
    assert metrics["ece"] == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    assert metrics["eval_noise_sd"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0


def test_the_classification_track_end_to_end(in_workspace):
    tiny = ["suite=digits_cls", "model.hidden_size=16", "model.depth=3", "pretrain.steps=10", "transfer.steps=6",
            "transfer.warmup_steps=2", "tuning.lr_source=config", "transfer.lr=3e-3", "runtime.workers=1",
            "quiet=true", "namespace=runs"]
    for ancestry in ("vanilla", "kind"):
        assert main(["pretrain", f"ancestry={ancestry}", "seed=0,1", *tiny,
                     *(["ancestry.n_tailors=4", "ancestry.tailors_per_class=2"] if ancestry == "kind" else [])]) == 0
    for name in ("kind", "linear_probe", "scratch", "heur_lg"):
        extra = ["ancestry.n_tailors=4", "ancestry.tailors_per_class=2"] if name == "kind" else []
        assert main(["run", f"method={name}", "task=novel,depth2", "seed=0,1", *tiny, *extra]) == 0
    assert main(["leaderboard", "suite=digits_cls"]) == 0
    table = pd.read_csv(in_workspace / "results/leaderboard/digits_cls.csv", keep_default_na=False, na_values=[""])
    rows = table.set_index(["task", "method"])
    assert rows.loc[("novel", "kind"), "status"] == "success" and 0 <= rows.loc[("novel", "kind"), "top1"] <= 1
    assert rows.loc[("depth2", "linear_probe"), "status"] == "n/a"
    assert {"top1", "nll", "ece", "eval_noise_sd"} <= set(table.columns)
    board = (in_workspace / "results/leaderboard/digits_cls.md").read_text()
    assert "top1 ↑ per task" in board and "top1 ↓" not in board and "binomial standard error" in board
    sizes = pd.read_csv(in_workspace / "results/leaderboard/digits_cls_sizes.csv")
    assert set(sizes.method) == {"kind", "scratch", "heur_lg"} and set(sizes.depth) == {1, 3}
    assert (in_workspace / "results/leaderboard/digits_cls_sizes.png").stat().st_size > 1000
    findings = (in_workspace / "results/leaderboard/digits_cls_findings.md").read_text()
    assert "KIND on a classifier is our adaptation" in findings and "at depth 1 (depth2)" in findings
    kind = ["ancestry=kind", "ancestry.n_tailors=4", "ancestry.tailors_per_class=2", "suite.ablation.tasks=[novel]",
            "suite.ablation.seeds=[0,1]"]
    assert main(["ablate", *tiny, *kind]) == 0
    ablations = pd.read_csv(in_workspace / "results/ablations/digits_cls.csv")
    assert set(ablations.variant) == {"learngenes_only", "all_tailors_kept", "predicted_gate"}
    assert ablations.delta.notna().all()  # each paired with the published KIND cells on seeds 0, 1
    for out in ("artifacts/digits_cls/ancestry-variants", "artifacts/digits_cls/ablations",
                "results/ablations/digits_cls", "results/ablations/digits_cls.md"):  # ablate_cls's DVC outs
        assert (in_workspace / out).exists(), out
    label = label_parameters(build_backbone(TARGET))
    assert [p.shape for p in label] == [(3, 16), (3,)]
    assert len(blocks(build_backbone(TARGET))) == 4
