"""A pretrained backbone trained end to end (or its last stages) with a fresh linear head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gestures.models.backbones import feature_shape, get_backbone, require_backbone
from gestures.models.base import GestureModel, require, require_common
from gestures.preprocess import Preprocessing


@dataclass(frozen=True)
class FinetuneConfig:
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    trainable_stages: int = -1  # last N stages trained; -1 = all
    dropout: float = 0.2
    image_size: int = 160

    def __post_init__(self) -> None:
        require_backbone(self.backbone, self.weights)
        require_common(self.dropout, self.image_size)
        require(isinstance(self.trainable_stages, int) and self.trainable_stages >= -1,
                "trainable_stages", self.trainable_stages, "-1 (all) or an int >= 0")


class Finetune(GestureModel):
    name = "finetune"

    def __init__(self, config: FinetuneConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        spec = get_backbone(config.backbone)
        self._preprocessing = spec.preprocessing.with_size(config.image_size)
        self.backbone = spec.build(config.weights)
        channels = feature_shape(self.backbone, config.image_size)[0]
        stages = spec.stages(self.backbone)
        n = len(stages) if config.trainable_stages == -1 else config.trainable_stages
        require(n <= len(stages), "trainable_stages", config.trainable_stages,
                f"-1 or 0..{len(stages)} for {config.backbone}")
        self._frozen = nn.ModuleList(stages[: len(stages) - n])
        self._frozen.requires_grad_(False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(config.dropout), nn.Linear(channels, num_classes))

    def train(self, mode: bool = True) -> Finetune:
        super().train(mode)
        self._frozen.eval()  # frozen stages keep their ImageNet BatchNorm statistics
        return self

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, C, h, w)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (B, num_classes)
