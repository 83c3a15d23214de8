"""Self-describing model files: weights, model name + params, class names, preprocessing.

Files are plain ``torch.save`` dicts of tensors, strings and numbers, read back with
``weights_only=True``: opening a model file never runs code from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gestures.models import GestureModel, create_model
from gestures.preprocess import Preprocessing

FORMAT = "gesture-hpo/model/v1"


class ArtifactError(ValueError):
    """A model file is missing, not ours, or from an incompatible version."""


@dataclass
class SavedModel:
    model: GestureModel
    classes: list[str]
    preprocessing: Preprocessing
    extra: dict[str, Any]
    params: dict[str, Any]  # as trained, e.g. weights="imagenet" (the module was rebuilt
    # with weights="random" and then given every weight from the file)


def atomic_torch_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def model_record(model: GestureModel, classes: list[str], extra: dict[str, Any] | None = None,
                 ) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": model.name,
        "params": model.params(),
        "classes": list(classes),
        "preprocessing": model.preprocessing.to_dict(),
        # Frozen backbones are included: the file must predict from images on its own.
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }


def save_model(path: Path, model: GestureModel, classes: list[str],
               extra: dict[str, Any] | None = None) -> None:
    atomic_torch_save(model_record(model, classes, extra), Path(path))


def load_model(path: Path, device: str | torch.device = "cpu") -> SavedModel:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path} is not a readable model file ({type(exc).__name__}: "
                            f"{exc})") from exc
    found = record.get("format") if isinstance(record, dict) else type(record).__name__
    if found != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT} model file (found {found!r})")
    params = dict(record["params"])
    if "weights" in params:
        params["weights"] = "random"  # every weight is in the file; skip loading pretrained
    model = create_model(record["model"], num_classes=len(record["classes"]), **params)
    model.load_state_dict(record["state_dict"])
    model.to(device).eval()
    return SavedModel(model, list(record["classes"]),
                      Preprocessing.from_dict(record["preprocessing"]), dict(record["extra"]),
                      dict(record["params"]))
