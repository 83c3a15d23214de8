"""Preprocessing, defined once and carried by every model and checkpoint.

Images reach a model as uint8 (B, S, S, 3) batches already resized by the decoder
(:func:`gestures.data.load_image`); calling a :class:`Preprocessing` on them gives the
float (B, 3, S, S) tensor the network expects. Training inserts augmentation
(:func:`augment`) between the layout change and :meth:`Preprocessing.normalize`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, float, float]  # on the 0..255 pixel scale
    std: tuple[float, float, float]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) 0..255 float -> (B, 3, S, S) float32 normalised."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x.float() - mean) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded (B, S, S, 3) uint8 images -> (B, 3, S, S) network input, no augmentation."""
        return self.normalize(images.permute(0, 3, 1, 2).float())

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]))  # type: ignore[arg-type]

    def with_size(self, image_size: int) -> Preprocessing:
        return Preprocessing(image_size, self.mean, self.std)


IMAGENET = Preprocessing(224, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
# The EfficientNet-Lite TF weights were trained on (x - 127) / 128.
TF_LITE = Preprocessing(224, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
# From-scratch models: centred to [-1, 1]; the first BatchNorm absorbs the rest.
CENTRED = Preprocessing(224, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation. Horizontal flip is off by default: a mirrored hand is the
    other hand, and some letters are asymmetric, so flipping is the user's explicit choice."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop, area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float = 0.3  # brightness/contrast/saturation +- this fraction
    hflip: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale {self.crop_scale} must satisfy 0 < low <= high <= 1")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter {self.color_jitter} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator,
            ) -> torch.Tensor:
    """Random resized crop (+ optional flip) and colour jitter, independently per image.

    (B, 3, S, S) float 0..255 -> (B, 3, S, S) float 0..255. One batched ``grid_sample``
    instead of a per-image Python loop keeps this cheap next to the forward pass.
    """
    if not config.enabled:
        return images
    b, device = images.shape[0], images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator).mul_(hi - lo).add_(lo).to(device)

    area = uniform(*config.crop_scale)
    log_ratio = uniform(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]))
    ratio = log_ratio.exp()
    # Crop width/height as fractions of the image side, clamped to fit inside it.
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (uniform(0.0, 1.0) * (1 - w) + w / 2) * 2 - 1
    cy = (uniform(0.0, 1.0) * (1 - h) + h / 2) * 2 - 1
    sx = w
    if config.hflip:
        sx = torch.where(uniform(0.0, 1.0) < 0.5, -w, w)
    theta = torch.zeros(b, 2, 3, device=device)  # (B, 2, 3) affine from output to input
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                      align_corners=False)
    if config.color_jitter > 0:
        j = config.color_jitter
        brightness = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        contrast = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        saturation = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        x = x * brightness
        grey = x.mean(dim=1, keepdim=True)  # (B, 1, S, S)
        x = (x - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(
            dim=(2, 3), keepdim=True)
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * saturation + grey
    return x.clamp_(0.0, 255.0)
