"""What every model in the registry is: a module with a typed config, class names'
count, its preprocessing, and a features/head split (so a frozen backbone's features
can be cached and only the head trained on them)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from gestures.preprocess import Preprocessing

T = TypeVar("T")


class ModelConfigError(ValueError):
    """A model name or parameter is invalid; the message lists the valid ones."""


def require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ModelConfigError(f"{name}={value!r} is invalid; allowed: {allowed}")


def require_common(dropout: float, image_size: int) -> None:
    """The parameters every family shares."""
    require(0.0 <= dropout < 1.0, "dropout", dropout, "a float in [0, 1)")
    require(isinstance(image_size, int) and 64 <= image_size <= 512, "image_size", image_size,
            "an int in 64..512")


def lookup(registry: dict[str, T], name: str, kind: str) -> T:
    """``registry[name]``, or an error that lists the valid names."""
    if name not in registry:
        raise ModelConfigError(f"unknown {kind} {name!r}; available: {sorted(registry)}")
    return registry[name]


class GestureModel(nn.Module):
    """``forward(images) == forward_head(forward_features(images))``; images are the
    normalised (B, 3, S, S) output of ``self.preprocessing``."""

    name: ClassVar[str]
    # True: forward_features is a frozen, deterministic function of the image, so its
    # output can be cached on disk and training only needs forward_head.
    frozen_features: ClassVar[bool] = False

    def __init__(self, config: Any, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes

    @property
    def preprocessing(self) -> Preprocessing:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def params(self) -> dict[str, Any]:
        return asdict(self.config)


def config_fields(config_cls: type) -> list[str]:
    return [f.name for f in fields(config_cls)]
