"""The lab's sanity check: a model and the training loop must be able to memorise a few
hands (100% training accuracy) within a couple of hundred iterations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gestures.data import DataSet, hand_sort_key
from gestures.features import build_inputs
from gestures.models import create_model
from gestures.train import EpochStats, StopTraining, TrainConfig, fit

# Per family: CPU-friendly parameters that still exercise the real architecture.
OVERFIT_PARAMS: dict[str, dict[str, Any]] = {
    "simple_cnn": {"image_size": 112, "dropout": 0.0},
    "transfer_cnn": {"dropout": 0.0},
    "finetune": {"image_size": 128, "dropout": 0.0, "trainable_stages": 2},
}


@dataclass
class OverfitResult:
    passed: bool
    steps: int
    images: int
    hands: list[str]
    history: list[EpochStats] = field(default_factory=list)


def few_hands(data: DataSet, n_images: int) -> DataSet:
    """The first hands (in id order) until at least ``n_images`` images are taken."""
    by_hand: dict[str, list[str]] = {}
    for s in data.samples:
        by_hand.setdefault(str(s.hand), []).append(s.path)
    chosen: list[str] = []
    for hand in sorted(by_hand, key=hand_sort_key):
        if len(chosen) >= n_images:
            break
        chosen += by_hand[hand]
    return data.subset(chosen)


def overfit(data: DataSet, model: str = "simple_cnn", n_images: int = 64, max_steps: int = 200,
            lr: float = 3e-3, params: dict[str, Any] | None = None, seed: int = 0,
            cache_dir: Path | None = None) -> OverfitResult:
    """Full-batch AdamW on a few hands, no augmentation; passes at 100% train accuracy."""
    subset = few_hands(data, n_images)
    torch.manual_seed(seed)  # the initial weights, like fit() seeds the batches
    net = create_model(model, num_classes=len(data.classes),
                       **{**OVERFIT_PARAMS.get(model, {}), **(params or {})})
    inputs = build_inputs(net, subset, {"train": subset.paths()}, cache_dir)["train"]
    # One epoch is one full-batch step; validation on the train set measures memorisation.
    config = TrainConfig(epochs=max_steps, batch_size=len(inputs), optimizer="adamw", lr=lr,
                         weight_decay=0.0, schedule="constant", seed=seed)

    def stop_when_memorised(stats: EpochStats) -> None:
        if stats.val_acc >= 1.0:
            raise StopTraining(f"100% training accuracy after {stats.steps} steps")

    result = fit(net, inputs, None, config, callbacks=[stop_when_memorised])
    last = result.history[-1]
    return OverfitResult(last.val_acc >= 1.0, last.steps, len(inputs),
                         sorted({str(s.hand) for s in subset.samples}), result.history)
