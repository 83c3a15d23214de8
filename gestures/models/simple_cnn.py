"""The lab's SimpleCNN (from scratch), with its kernels scaled to the image size and a
channel multiplier, so that CPU-sized trials (96-112 px) and wider nets are searchable."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gestures.models.base import GestureModel, ModelConfigError, require, require_common
from gestures.preprocess import CENTRED, Preprocessing

LAB_SIZE = 224
LAB_CHANNELS = (12, 8, 4, 2)


@dataclass(frozen=True)
class SimpleCNNConfig:
    conv_dilation: int = 2
    dropout: float = 0.05
    image_size: int = 224
    width: float = 1.0  # channel multiplier: 1 = the lab's 12-8-4-2 channels

    def __post_init__(self) -> None:
        require(isinstance(self.conv_dilation, int) and 1 <= self.conv_dilation <= 8,
                "conv_dilation", self.conv_dilation, "an int in 1..8")
        require_common(self.dropout, self.image_size)
        require(0.25 <= self.width <= 16, "width", self.width, "a float in [0.25, 16]")


class SimpleCNN(GestureModel):
    name = "simple_cnn"

    def __init__(self, config: SimpleCNNConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        d, s = config.conv_dilation, config.image_size / LAB_SIZE
        c1, c2, c3, c4 = (max(1, round(c * config.width)) for c in LAB_CHANNELS)
        # At 224 px: k=26 and pool 4 as in the lab; both shrink with the image so that
        # the feature map keeps roughly the lab's geometry at 112 or 96 px.
        k1, pool1 = max(3, round(26 * s)), max(2, round(4 * s))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, k1), nn.BatchNorm2d(c1), nn.Mish(),
            nn.AvgPool2d(pool1, stride=2), nn.Mish(),
            nn.Conv2d(c1, c2, 3, dilation=d), nn.BatchNorm2d(c2), nn.Mish(),
            nn.MaxPool2d(3), nn.Mish(),
            nn.Conv2d(c2, c3, 2, dilation=d), nn.BatchNorm2d(c3), nn.Mish(),
            nn.Conv2d(c3, c4, 2), nn.AvgPool2d(2), nn.Mish(),
        )
        with torch.no_grad():
            try:
                shape = self.features(torch.zeros(1, 3, config.image_size, config.image_size))
            except RuntimeError as exc:
                raise ModelConfigError(
                    f"conv_dilation={d} is too large for image_size={config.image_size}: the "
                    "feature map shrinks to nothing; lower conv_dilation or raise image_size"
                ) from exc
        e = shape.numel()  # (1, c4, h, w) -> E; 392 = 2*14*14 at 224 px, d=2
        self.feature_size = e
        self.drop = nn.Dropout(config.dropout)
        self.act = nn.Mish()
        self.fc1 = nn.Linear(e, e // 2)
        self.fc2 = nn.Linear(e // 2, e // 4)
        self.fc3 = nn.Linear(e // 4, e // 4)
        self.fc4 = nn.Linear(e // 4, e // 2)
        self.fc5 = nn.Linear(e // 2, num_classes)
        if min(e // 4, e // 2) < 1:
            raise ModelConfigError(f"feature size {e} at image_size={config.image_size}, "
                                   f"conv_dilation={d}, width={config.width} is too small for "
                                   "the head; raise width or image_size")
        for fc in (self.fc1, self.fc2, self.fc3, self.fc4, self.fc5):
            nn.init.xavier_normal_(fc.weight)

    @property
    def preprocessing(self) -> Preprocessing:
        return CENTRED.with_size(self.config.image_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)  # (B, E)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        z = self.drop(features)
        z1 = self.act(self.fc1(z))  # (B, E/2)
        z2 = self.act(self.fc2(self.drop(z1)))  # (B, E/4)
        z3 = self.act(self.fc3(self.drop(z2)))
        z4 = self.act(self.fc4(self.drop(z3)) + z1)  # skip connection back to E/2
        return self.fc5(self.drop(z4))  # (B, num_classes)
