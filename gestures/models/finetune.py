"""A pretrained backbone trained end to end (or its last stages) with a fresh linear head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gestures.models.backbones import check_weights, feature_shape, get_backbone, list_backbones
from gestures.models.base import GestureModel, require
from gestures.preprocess import Preprocessing


@dataclass(frozen=True)
class FinetuneConfig:
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    trainable_stages: int = -1  # last N stages trained; -1 = all
    dropout: float = 0.2
    image_size: int = 160

    def __post_init__(self) -> None:
        require(self.backbone in list_backbones(), "backbone", self.backbone,
                str(list_backbones()))
        check_weights(self.weights)
        require(isinstance(self.trainable_stages, int) and self.trainable_stages >= -1,
                "trainable_stages", self.trainable_stages, "-1 (all) or an int >= 0")
        require(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a float in [0, 1)")
        require(isinstance(self.image_size, int) and 64 <= self.image_size <= 512,
                "image_size", self.image_size, "an int in 64..512")


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
