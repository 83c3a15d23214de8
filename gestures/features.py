"""Frozen-backbone features, computed once per (data content, backbone, weights,
preprocessing) and shared through the on-disk cache; and the one place that turns a
data set + split into the :class:`~gestures.train.Inputs` a model trains on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from gestures.cache import ImageArray, cached_array, decoded_images, default_cache_dir, hash_json
from gestures.data import DataSet
from gestures.models import GestureModel
from gestures.models.backbones import weights_id
from gestures.train import Inputs, resolve_device

FEATURES_VERSION = 1


def feature_key(model: GestureModel, images: ImageArray) -> str:
    cfg = model.config
    return hash_json({"images": images.key, "backbone": cfg.backbone,
                      "weights": weights_id(cfg.weights),
                      "preprocessing": model.preprocessing.to_dict(),
                      "version": FEATURES_VERSION})


def cached_features(model: GestureModel, images: ImageArray, cache_dir: Path | None = None,
                    batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """(N, C, H, W) float16 backbone features of every image, memory-mapped."""
    assert model.frozen_features, f"{model.name} trains its backbone; features cannot be cached"
    path = (cache_dir or default_cache_dir()) / "features" / f"{feature_key(model, images)}.npy"
    shape = (len(images.paths), *model.feature_shape)
    dev = resolve_device(device)

    def fill(out: np.ndarray) -> None:
        model.to(dev).eval()
        with torch.no_grad():
            for start in range(0, len(out), batch_size):
                x = torch.from_numpy(np.array(images.images[start:start + batch_size]))
                x = model.preprocessing(x.to(dev))  # (B, 3, S, S)
                out[start:start + len(x)] = model.forward_features(x).cpu().half().numpy()

    return cached_array(path, shape, np.float16, fill)


def build_inputs(model: GestureModel, data: DataSet, splits: Mapping[str, Sequence[str]],
                 cache_dir: Path | None = None, device: str = "auto") -> dict[str, Inputs]:
    """Inputs per split name: decoded images at the model's size, or, for a model with a
    frozen backbone, its cached features (so an epoch only runs the head)."""
    images = decoded_images(data, model.preprocessing.image_size, cache_dir)
    if model.frozen_features:
        x, kind = cached_features(model, images, cache_dir, device=device), "features"
    else:
        x, kind = images.images, "images"
    out = {}
    for name, paths in splits.items():
        idx = images.indices(list(paths))
        out[name] = Inputs.from_arrays(x[idx], images.labels[idx], kind)  # type: ignore[arg-type]
    return out
