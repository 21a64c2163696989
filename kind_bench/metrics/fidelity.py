"""Sample quality through torch-fidelity's feature extractors and metric functions, with our registered
extractors (features of a reference are extracted once per :class:`Scorer`, not once per draw).

* ``digits_cnn``: the pipeline's own evaluator CNN (:mod:`kind_bench.metrics.evaluator`). Its metrics are
  named for what they are: ``fd_digits``, ``is_digits``, ``kid_digits``, ``precision_digits``,
  ``recall_digits`` - a Frechet distance on our classifier's features is not FID.
* ``inception-v3-compat``: torch-fidelity's Inception-v3, for real datasets, with weights from a local
  file (``eval.inception_weights``). The metrics are then ``fid``, ``is``, ``kid``, ``precision``,
  ``recall``. torch-fidelity unpickles that file; we load it without unpickling instead (safetensors, or
  ``torch.load(weights_only=True)`` for the original ``.pth``).
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from torch.utils.data import Dataset
from torch_fidelity import register_feature_extractor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import (
    create_feature_extractor,
    get_featuresdict_from_dataset,
    resolve_feature_extractor,
    resolve_feature_layer_for_metric,
)

from kind_bench.config import EvalConfig
from kind_bench.data.sources import FileSet, may_start_workers
from kind_bench.errors import UserError
from kind_bench.io import file_state, load_tensors
from kind_bench.metrics.evaluator import load_classifier

NAMES = {
    "digits_cnn": {"fid": "fd_digits", "isc": "is_digits", "is_gap": "is_gap_digits", "kid": "kid_digits",
                   "precision": "precision_digits", "recall": "recall_digits"},
    "inception-v3-compat": {"fid": "fid", "isc": "is", "is_gap": "is_gap", "kid": "kid", "precision": "precision",
                            "recall": "recall"},
}
SAFE_INCEPTION = "inception-v3-compat-local"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (N, C, H, W) -> uint8 RGB (N, 3, H, W), as torch-fidelity expects."""
    out = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out.expand(-1, 3, -1, -1).contiguous() if out.shape[1] == 1 else out


class ImageTensors(Dataset):
    """A torch-fidelity input: uint8 RGB tensors from [-1, 1] images."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = to_uint8(images.cpu())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class SetImages(Dataset):
    """A torch-fidelity input read from an image set's own Dataset (files are read one at a time)."""

    def __init__(self, images) -> None:  # an ImageSet or FileSet
        self.items = images.dataset()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_uint8(self.items[index][0].unsqueeze(0))[0]


def fidelity_input(images) -> Dataset:
    """torch-fidelity's input for a tensor of [-1, 1] images or an image set (ImageSet, FileSet)."""
    return ImageTensors(images) if torch.is_tensor(images) else SetImages(images)


class _LocalExtractor(FeatureExtractorBase):
    """What our own torch-fidelity extractors share: not compiled; a dummy input of ``INPUT_SIZE`` pixels."""

    INPUT_SIZE = 8

    @staticmethod
    def can_be_compiled():
        return False

    @classmethod
    def get_dummy_input_for_compile(cls):
        return torch.zeros(1, 3, cls.INPUT_SIZE, cls.INPUT_SIZE, dtype=torch.uint8)


class DigitsFeatureExtractor(_LocalExtractor):
    """torch-fidelity adapter for the evaluator CNN: features 'features' (bottleneck) and 'logits'."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.cnn = load_classifier(feature_extractor_weights_path)
        self.channels = self.cnn.hparams["channels"]

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    def forward(self, x):
        images = x[:, : self.channels].float() / 127.5 - 1.0
        features, logits = self.cnn(images.to(next(self.cnn.parameters()).device))
        found = {"features": features, "logits": logits}
        return tuple(found[name] for name in self.features_list)


def _read_inception_state(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        return load_tensors(path, "Inception weights", foreign=True)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file is bad input
        raise UserError(f"eval.inception_weights={path} is not a readable weights file ({exc})") from None


class LocalInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 with weights read from a local file, never unpickled."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        if not feature_extractor_weights_path or not Path(feature_extractor_weights_path).is_file():
            raise UserError(f"eval.inception_weights={feature_extractor_weights_path}: no such file "
                            "(inception-v3-compat needs local weights; nothing is downloaded)")
        state = _read_inception_state(str(feature_extractor_weights_path))
        try:
            with mock.patch("torch_fidelity.feature_extractor_inceptionv3.torch.load", lambda *a, **k: state):
                super().__init__(name, features_list, feature_extractor_weights_path=feature_extractor_weights_path,
                                 **kwargs)
        except RuntimeError as exc:
            raise UserError(f"eval.inception_weights={feature_extractor_weights_path} does not fit torch-fidelity's "
                            f"Inception-v3 ({str(exc).splitlines()[0]})") from None


class LocalDinoV2(_LocalExtractor):
    """DINOv2 features from local weights of timm's ``dinov2_arch`` (timm's layout, at any input size: the
    position embedding is resampled to 224 px as timm does; torch-fidelity's own DINOv2 extractor only
    downloads through torch.hub): images resized bicubically to 224, ImageNet-normalised, CLS token. Its
    resizing differs from torch-fidelity's, so values are comparable with each other, not with
    torch-fidelity's FD_DINOv2."""

    INPUT_SIZE = 224

    def __init__(self, name, features_list, feature_extractor_weights_path=None,
                 dinov2_arch="vit_small_patch14_dinov2", **kwargs):
        super().__init__(name, features_list)
        import timm

        if dinov2_arch not in timm.list_models("*dinov2*"):
            raise UserError(f"eval.dinov2_arch={dinov2_arch} is not one of timm's DINOv2 architectures: "
                            f"{', '.join(timm.list_models('*dinov2*'))}")
        if not feature_extractor_weights_path or not Path(feature_extractor_weights_path).is_file():
            raise UserError(f"eval.dinov2_weights={feature_extractor_weights_path}: no such file (fd_dinov2 needs "
                            "local weights; nothing is downloaded)")
        from timm.layers import resample_abs_pos_embed

        self.model = timm.create_model(dinov2_arch, pretrained=False, num_classes=0, img_size=self.INPUT_SIZE)
        state = load_tensors(feature_extractor_weights_path, "DINOv2 weights", foreign=True)
        pos = state.get("pos_embed")
        try:
            if pos is not None and pos.shape != self.model.pos_embed.shape:  # timm's own layout is at 518 px
                prefix = 0 if self.model.no_embed_class else self.model.num_prefix_tokens  # as timm's loader
                state["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(self.model.patch_embed.grid_size),
                                                            num_prefix_tokens=prefix)
            self.model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"eval.dinov2_weights={feature_extractor_weights_path} does not fit timm's "
                            f"{dinov2_arch} ({str(exc).splitlines()[0]})") from None
        self.model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @staticmethod
    def get_provided_features_list():
        return ("dinov2",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "dinov2"

    def forward(self, x):
        x = torch.nn.functional.interpolate(x.float() / 255.0, size=(224, 224), mode="bicubic", align_corners=False)
        return (self.model((x - self.mean) / self.std),)


DINOV2 = "dinov2-local"


def fd_dinov2(generated: torch.Tensor, reference: torch.Tensor, cfg: EvalConfig, device: torch.device) -> float:
    """The Frechet distance of DINOv2 features (dgm-eval's recommended replacement for Inception's)."""
    return FeatureSpace.dinov2(cfg, device).frechet(generated, reference)


def _register() -> None:
    for name, cls in (("digits_cnn", DigitsFeatureExtractor), (SAFE_INCEPTION, LocalInceptionV3),
                      (DINOV2, LocalDinoV2)):
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, cls)


_register()


def _extractor(cfg: EvalConfig, weights: str | Path | None) -> dict[str, object]:
    if cfg.feature_extractor == "digits_cnn":
        return {"feature_extractor": "digits_cnn", "feature_extractor_weights_path": str(weights) if weights else None}
    return {"feature_extractor": SAFE_INCEPTION, "feature_extractor_weights_path": cfg.inception_weights}


class FeatureSpace:
    """One torch-fidelity feature extractor and the options of its metrics: features are extracted once per
    image set (a reference is featurised once, not once per draw) and every metric is computed from them
    with torch-fidelity's own ``*_featuresdict_to_metric`` functions, as ``calculate_metrics`` would."""

    def __init__(self, options: dict[str, object], metrics: tuple[str, ...]) -> None:
        self.options = options
        self.layers = {m: resolve_feature_layer_for_metric(m, **options) for m in metrics}
        self.extractor = create_feature_extractor(resolve_feature_extractor(**options),
                                                  sorted(set(self.layers.values())), **options)

    @classmethod
    def dinov2(cls, cfg: EvalConfig, device: torch.device) -> FeatureSpace:
        """DINOv2 features from ``eval.dinov2_weights`` of ``eval.dinov2_arch`` (Frechet distance only)."""
        return cls({"cuda": device.type == "cuda", "feature_extractor": DINOV2, "verbose": False,
                    "feature_extractor_weights_path": cfg.dinov2_weights, "dinov2_arch": cfg.dinov2_arch,
                    "batch_size": 64, "save_cpu_ram": True}, ("fid",))

    def features(self, images) -> dict[str, torch.Tensor]:
        """The features of a tensor of [-1, 1] images or an image set. Files (a FileSet) are decoded by
        torch-fidelity's worker processes (it starts min(4, 2 x CPUs)) where ``data.workers`` allows workers at all
        (:func:`may_start_workers`); tensors, and files where it does not, in this process."""
        o = self.options
        workers = isinstance(images, FileSet) and may_start_workers(images.cfg.workers)
        return get_featuresdict_from_dataset(fidelity_input(images), self.extractor, o["batch_size"], o["cuda"],
                                             o["save_cpu_ram"] and not workers, o["verbose"])

    def frechet(self, a, b) -> float:
        """The Frechet distance between two image sets (or their features)."""
        stats = [fid_featuresdict_to_statistics(x if isinstance(x, dict) else self.features(x), self.layers["fid"])
                 for x in (a, b)]
        return float(fid_statistics_to_metric(*stats, False)["frechet_inception_distance"])

    def inception_score(self, features: dict[str, torch.Tensor]) -> float:
        """The Inception-style score of a feature set."""
        return float(isc_featuresdict_to_metric(features, self.layers["isc"], **self.options)["inception_score_mean"])


def scored_reference_size(n: int, cfg: EvalConfig) -> int:
    """How many of ``n`` reference images a :class:`Scorer` scores against (``eval.reference_limit``: a fixed
    seeded subset of that size)."""
    return n if cfg.reference_limit is None else min(n, cfg.reference_limit)


def check_scorable(kid_subset_size: int, prc_neighborhood: int, available: int, what: str) -> None:
    """Refuse a set too small to score: smaller than a KID subset (shrinking the subset quietly would change
    the estimate's noise behind the config's back), or not larger than PRC's k nearest neighbours
    (torch-fidelity fails there, after the training)."""
    if kid_subset_size > available:
        raise UserError(f"eval.kid_subset_size={kid_subset_size} exceeds the {available} {what}: lower it "
                        "(or score more)")
    if prc_neighborhood >= available:
        raise UserError(f"eval.prc_neighborhood={prc_neighborhood} needs more than {prc_neighborhood} {what}, "
                        f"not {available}: lower it (or score more)")


class Scorer:
    """Scores sample sets against one fixed reference, featurised once (its IS too): FD, IS, ``is_gap``
    (|IS - IS of the reference|; IS alone has no better direction here, see README), KID and
    precision/recall on the configured extractor, FD on DINOv2 with ``eval.dinov2_weights``, and, on the
    digits evaluator, ``class_accuracy``. KID is averaged over subsets of ``kid_subset_size``
    (``eval.kid_subset_size`` unless given); a reference or a draw too small to score is refused
    (:func:`check_scorable`)."""

    def __init__(self, reference, cfg: EvalConfig, weights: str | Path | None, device: torch.device,
                 kid_subset_size: int | None = None) -> None:
        if scored_reference_size(len(reference), cfg) < len(reference):  # a fixed seeded subset
            keep = torch.randperm(len(reference), generator=torch.Generator().manual_seed(0))[:cfg.reference_limit]
            reference = reference[keep.sort().values] if torch.is_tensor(reference) else \
                reference.subset(keep.sort().values)
        self.cfg, self.weights, self.n_reference = cfg, weights, len(reference)
        self.kid_subset_size = cfg.kid_subset_size if kid_subset_size is None else kid_subset_size
        check_scorable(self.kid_subset_size, cfg.prc_neighborhood, self.n_reference, "reference images scored")
        self.space = FeatureSpace({"cuda": device.type == "cuda", "isc_splits": cfg.isc_splits,
                                   "kid_subsets": cfg.kid_subsets, "prc_neighborhood": cfg.prc_neighborhood,
                                   "batch_size": 256, "save_cpu_ram": True, "verbose": False,
                                   **_extractor(cfg, weights)}, ("isc", "fid", "kid", "prc"))
        self.reference = self.space.features(reference)
        self.reference_is = self.space.inception_score(self.reference)
        self.device, self._reference, self._dinov2 = device, reference, None  # DINOv2: on the first call

    def quality(self, generated) -> dict[str, float]:
        """The torch-fidelity metrics of ``generated`` against the reference."""
        check_scorable(self.kid_subset_size, self.cfg.prc_neighborhood, len(generated), "generated images in the draw")
        features, names, space = self.space.features(generated), NAMES[self.cfg.feature_extractor], self.space
        kid = kid_featuresdict_to_metric(features, self.reference, space.layers["kid"], **space.options,
                                         kid_subset_size=self.kid_subset_size)
        prc = prc_featuresdict_to_metric(features, self.reference, space.layers["prc"], **space.options)
        score = space.inception_score(features)
        return {names["fid"]: space.frechet(features, self.reference), names["isc"]: score,
                names["is_gap"]: abs(score - self.reference_is),
                names["kid"]: float(kid["kernel_inception_distance_mean"]),
                names["precision"]: float(prc["precision"]), names["recall"]: float(prc["recall"])}

    def __call__(self, generated, source_ids: torch.Tensor) -> dict[str, float]:
        """Every metric of ``generated`` (a tensor or an image set); ``source_ids``: each image's class in
        the source data (for ``class_accuracy`` on tensors)."""
        metrics = self.quality(generated)
        if self.cfg.dinov2_weights:
            if self._dinov2 is None:
                space = FeatureSpace.dinov2(self.cfg, self.device)
                self._dinov2 = (space, space.features(self._reference))
            space, reference = self._dinov2
            metrics["fd_dinov2"] = space.frechet(space.features(generated), reference)
        if self.cfg.feature_extractor == "digits_cnn" and torch.is_tensor(generated):
            metrics["class_accuracy"] = class_accuracy(generated, source_ids, self.weights)
        return metrics


_LOADED_EXTRACTORS: set[tuple] = set()  # the local weight files (and states) a check has loaded in this process


def check_local_extractors(cfg: EvalConfig) -> None:
    """Load the local Inception and DINOv2 weights that ``cfg`` scores with (on the CPU, then dropped): a file
    that does not load is bad input before any training, not at the first scoring after it. Each file is
    loaded once per state (size, mtime) and process: the start-up check and the stage both ask."""
    if cfg.feature_extractor == "inception-v3-compat":
        key = ("inception", *_weights_state(cfg.inception_weights))
        if key not in _LOADED_EXTRACTORS:
            LocalInceptionV3(SAFE_INCEPTION, ["2048"], feature_extractor_weights_path=cfg.inception_weights)
            _LOADED_EXTRACTORS.add(key)
    if cfg.dinov2_weights:
        key = ("dinov2", cfg.dinov2_arch, *_weights_state(cfg.dinov2_weights))
        if key not in _LOADED_EXTRACTORS:
            FeatureSpace.dinov2(cfg, torch.device("cpu"))
            _LOADED_EXTRACTORS.add(key)


def _weights_state(path: str | None) -> tuple:
    if not path or not Path(path).is_file():  # the load refuses it, naming the key
        return (path,)
    return str(Path(path).resolve()), *file_state(path)


def quality_metrics(generated: torch.Tensor, reference: torch.Tensor, cfg: EvalConfig, weights: str | Path | None,
                    device: torch.device) -> dict[str, float]:
    """:meth:`Scorer.quality` of ``generated`` against ``reference``, for one comparison."""
    return Scorer(reference, cfg, weights, device).quality(generated)


@torch.no_grad()
def class_accuracy(generated: torch.Tensor, labels: torch.Tensor, weights: str | Path) -> float:
    """Top-1 agreement of the evaluator classifier with the conditioning labels (source class ids)."""
    cnn = load_classifier(weights)
    return float((cnn(generated.cpu())[1].argmax(1) == labels.cpu()).float().mean())
