"""The model registry: ``create_model(name, **params)``, ``list_models()``.

Every model is a :class:`GestureModel` built from a typed, validated config dataclass;
an unknown name or parameter is an error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gestures.models.backbones import WeightsUnavailable, get_backbone, list_backbones
from gestures.models.base import GestureModel, ModelConfigError, config_fields, lookup
from gestures.models.finetune import Finetune, FinetuneConfig
from gestures.models.simple_cnn import SimpleCNN, SimpleCNNConfig
from gestures.models.transfer_cnn import TransferCNN, TransferCNNConfig

__all__ = ["GestureModel", "ModelConfigError", "WeightsUnavailable", "create_model",
           "get_backbone", "list_backbones", "list_models", "model_config", "model_params"]


@dataclass(frozen=True)
class _Entry:
    config: type
    build: Callable[[Any, int], GestureModel]


_REGISTRY: dict[str, _Entry] = {
    SimpleCNN.name: _Entry(SimpleCNNConfig, SimpleCNN),
    TransferCNN.name: _Entry(TransferCNNConfig, TransferCNN),
    Finetune.name: _Entry(FinetuneConfig, Finetune),
}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_params(name: str) -> list[str]:
    """The parameter names ``create_model(name, ...)`` accepts."""
    return config_fields(lookup(_REGISTRY, name, "model").config)


def model_config(name: str, **params: Any) -> Any:
    """The validated config dataclass for ``name``; unknown parameters list the valid ones."""
    entry = lookup(_REGISTRY, name, "model")
    valid = config_fields(entry.config)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ModelConfigError(f"unknown parameter(s) {unknown} for model {name!r}; "
                               f"valid: {valid}")
    return entry.config(**params)


def create_model(name: str, num_classes: int = 9, **params: Any) -> GestureModel:
    if num_classes < 2:
        raise ModelConfigError(f"num_classes={num_classes} is invalid; need at least 2")
    return lookup(_REGISTRY, name, "model").build(model_config(name, **params), num_classes)
