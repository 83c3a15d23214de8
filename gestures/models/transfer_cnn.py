"""The lab's TransferCNN head over a frozen pretrained backbone's feature maps.

The backbone is part of the module (so a saved model predicts from images), but frozen
and always in eval mode: its output depends only on the image, which is what lets
training run on features cached once on disk (:mod:`gestures.features`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gestures.models.backbones import feature_shape, get_backbone, require_backbone
from gestures.models.base import GestureModel, ModelConfigError, require, require_common
from gestures.preprocess import Preprocessing

HEADS = ("lab", "mlp")


@dataclass(frozen=True)
class TransferCNNConfig:
    # The lab used AlexNet; its ImageNet weights cannot be fetched offline, Lite0's can.
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    # "lab": the lab's transposed-conv head (~300 MMAC/image: 100 img/s on 2 CPU cores);
    # "mlp": pooled features -> MLP, milliseconds an epoch on cached features.
    head: str = "lab"
    hidden: int = 256  # "mlp" head width
    conv_dilation: int = 2
    dropout: float = 0.05
    image_size: int = 224

    def __post_init__(self) -> None:
        require(self.head in HEADS, "head", self.head, str(HEADS))
        require(isinstance(self.hidden, int) and self.hidden >= 8, "hidden", self.hidden,
                "an int >= 8")
        require_backbone(self.backbone, self.weights)
        require_common(self.dropout, self.image_size)
        require(isinstance(self.conv_dilation, int) and 1 <= self.conv_dilation <= 8,
                "conv_dilation", self.conv_dilation, "an int in 1..8")


class TransferCNN(GestureModel):
    name = "transfer_cnn"
    frozen_features = True

    def __init__(self, config: TransferCNNConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        spec = get_backbone(config.backbone)
        self._preprocessing = spec.preprocessing.with_size(config.image_size)
        self.backbone = spec.build(config.weights)
        self.backbone.requires_grad_(False)
        c, h, w = feature_shape(self.backbone, config.image_size)  # (256, 6, 6) for AlexNet
        self.feature_shape = (c, h, w)
        d, p = config.conv_dilation, config.dropout
        if config.head == "mlp":
            self.conv = nn.Sequential(nn.AdaptiveAvgPool2d(1))  # (B, C, 1, 1)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Dropout(p), nn.Linear(c, config.hidden), nn.Mish(),
                nn.Dropout(p), nn.Linear(config.hidden, num_classes))
            return
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(c, 128, 4, dilation=d), nn.Mish(),  # (B, 128, h+3d, w+3d)
            nn.ConvTranspose2d(128, 128, 5), nn.BatchNorm2d(128), nn.MaxPool2d(2), nn.Mish(),
            nn.ConvTranspose2d(128, 128, 5), nn.BatchNorm2d(128), nn.Mish(),
            nn.ConvTranspose2d(128, 128, 4, dilation=2 * d), nn.BatchNorm2d(128),
            nn.MaxPool2d(2), nn.Mish(),
            nn.Conv2d(128, 128, 4, dilation=d), nn.BatchNorm2d(128), nn.Mish(),
            nn.Conv2d(128, 64, 4), nn.Mish(),  # (B, 64, 3, 3) for AlexNet at d=2
        )
        with torch.no_grad():
            try:
                e = self.conv(torch.zeros(1, c, h, w)).numel()  # 576 for AlexNet at d=2
            except RuntimeError as exc:
                raise ModelConfigError(f"conv_dilation={d} does not fit the {c}x{h}x{w} "
                                       f"features of {config.backbone}; try 1..4") from exc
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(e, e // 2), nn.Mish(), nn.Dropout(p),
            nn.Linear(e // 2, e // 4), nn.Mish(), nn.Dropout(p),
            nn.Linear(e // 4, e // 4), nn.Mish(), nn.Dropout(p),
            nn.Linear(e // 4, e // 2), nn.Mish(), nn.Dropout(p),
            nn.Linear(e // 2, num_classes),
        )

    def train(self, mode: bool = True) -> TransferCNN:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics must not drift
        return self

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone(x)  # (B, C, h, w)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(features))

    def head_parameter_count(self) -> int:
        return sum(p.numel() for p in (*self.conv.parameters(), *self.head.parameters()))
