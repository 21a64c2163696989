"""The evaluation network: a small CNN digit classifier trained by the pipeline itself.

Inception weights cannot be downloaded here, so sample quality on the embedded digits is measured in
the feature space of this classifier, trained in its own stage on the real train split (all classes,
in every task domain so that shifted tasks are scored in-distribution). Its ``feature_dim``-wide
bottleneck feeds the Frechet distance, KID and precision/recall; its logits feed the Inception-style
score and ``class_accuracy``. The bottleneck is narrow on purpose: a Frechet distance needs a covariance
estimate, which is only stable when the sample count is well above the feature dimension. Features are
standardised with the train split's per-dimension mean and std (stored with the weights), so that the
distances have a readable scale; this changes no ranking.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from kind_bench.io import load_metadata, load_tensors, save_tensors


class DigitsCNN(nn.Module):
    """conv-conv-bottleneck-classifier; ``forward`` returns (features, logits)."""

    def __init__(self, channels: int = 1, num_classes: int = 10, feature_dim: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(64 * 16, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.hparams = {"channels": channels, "num_classes": num_classes, "feature_dim": feature_dim}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> (standardised bottleneck features, class logits)."""
        features = self.body(images)
        return (features - self.feature_mean) / self.feature_std, self.head(features)


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, feature_dim: int, epochs: int, batch_size: int, lr: float, seed: int
) -> DigitsCNN:
    """Train the CNN with cross-entropy (seeded; full passes over shuffled data)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN(images.shape[1], int(labels.max()) + 1, feature_dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(images[index])[1], labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        features = model.body(images)
        model.feature_mean.copy_(features.mean(0))
        model.feature_std.copy_(features.std(0).clamp_min(1e-6))
    return model


@torch.no_grad()
def accuracy(model: DigitsCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on (images, labels)."""
    return float((model(images)[1].argmax(1) == labels).float().mean())


def save_classifier(path, model: DigitsCNN, identity: str) -> None:
    """Safetensors weights with the architecture's hyperparameters and what trained it (``identity``, see
    :func:`kind_bench.stages.common.evaluator_identity`) in the header."""
    save_tensors(path, model.state_dict(), metadata={"hparams": json.dumps(model.hparams), "identity": identity})


def load_classifier(path, device: torch.device | str = "cpu") -> DigitsCNN:
    """Load the evaluator; a missing or corrupted file is a one-line UserError."""
    state = load_tensors(path, "evaluator weights", hint="`dvc repro evaluator` (or `kind-bench evaluator`)")
    model = DigitsCNN(**json.loads(load_metadata(path)["hparams"]))
    model.load_state_dict(state)
    return model.to(device).eval()
