"""Evaluate and predict with a saved model, exactly as it was trained to see images.

Images are decoded with the training decoder (EXIF applied, RGB, resized to the model's
size) and normalised by the preprocessing saved in the model file. Unreadable files are
reported and skipped; the rest are still scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gestures.artifact import SavedModel
from gestures.data import DataError, DataSet, UnreadableImage, load_image


@dataclass
class Scored:
    """Class probabilities for the images that could be read, and why the others could not."""

    paths: list[str]
    probs: np.ndarray  # (N, num_classes) float32, rows in ``paths`` order
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason


def score(saved: SavedModel, root: Path, paths: Sequence[str], batch_size: int = 64) -> Scored:
    """Probabilities for ``root / path`` for each path; unreadable files are listed, not fatal."""
    size = saved.preprocessing.image_size
    model = saved.model.eval()
    device = next(model.parameters()).device
    ok: list[str] = []
    unreadable: dict[str, str] = {}
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            x = saved.preprocessing(torch.from_numpy(np.stack(batch)).to(device))
            with torch.no_grad():
                chunks.append(model(x).float().softmax(1).cpu().numpy())  # (B, classes)
            batch.clear()

    for path in paths:
        try:
            batch.append(load_image(Path(root) / path, size))
            ok.append(path)
        except (UnreadableImage, OSError) as exc:
            unreadable[path] = str(exc)
        if len(batch) == batch_size:
            flush()
    flush()
    probs = np.concatenate(chunks) if chunks else np.zeros((0, len(saved.classes)), np.float32)
    return Scored(ok, probs, unreadable)


@dataclass
class Evaluation:
    accuracy: float
    n: int
    per_class: dict[str, float]  # letter -> accuracy (NaN when the letter has no image)
    per_class_n: dict[str, int]
    confusion: list[list[int]]  # [true][predicted], classes in model order
    classes: list[str]
    ci95: tuple[float, float]  # bootstrap over hands (over images when hands are unknown)
    ci_unit: str  # "hand" or "image"
    chance: float  # 1 / number of classes
    majority: float  # accuracy of always predicting the most frequent letter
    predictions: list[dict[str, Any]]  # path, hand, label, predicted, confidence, correct
    unreadable: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN (no images to score) becomes None, which strict JSON allows."""
        return _nan_to_none(asdict(self))


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and np.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_none(v) for v in x]
    return x


def bootstrap_ci(correct: np.ndarray, groups: Sequence[str], n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of accuracy, resampling whole groups (hands) with replacement:
    images of one hand are not independent, so resampling images would be too narrow."""
    if len(correct) == 0:
        return (float("nan"), float("nan"))
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    g = np.array([index[x] for x in groups])
    hits = np.bincount(g, weights=correct.astype(float), minlength=len(names))  # (G,)
    sizes = np.bincount(g, minlength=len(names)).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), size=(n_boot, len(names)))  # (n_boot, G)
    acc = hits[picks].sum(1) / sizes[picks].sum(1)
    return (float(np.percentile(acc, 2.5)), float(np.percentile(acc, 97.5)))


def evaluate(saved: SavedModel, data: DataSet, paths: Sequence[str] | None = None,
             seed: int = 0) -> Evaluation:
    """Scores ``paths`` (default: every image) of a labelled data set."""
    unknown = sorted(set(data.classes) - set(saved.classes))
    if unknown:
        raise DataError(f"the data has letter(s) {unknown} the model does not know "
                         f"(it knows {saved.classes}); exclude those folders")
    samples = {s.path: s for s in data.samples}
    paths = list(paths) if paths is not None else data.paths()
    scored = score(saved, data.root, paths)
    k = len(saved.classes)
    y = np.array([saved.classes.index(samples[p].label) for p in scored.paths], dtype=np.int64)
    pred = scored.probs.argmax(1) if len(scored.paths) else np.zeros(0, np.int64)
    correct = pred == y
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    per_n = confusion.sum(1)
    per_class = {c: float(confusion[i, i] / per_n[i]) if per_n[i] else float("nan")
                 for i, c in enumerate(saved.classes)}
    hands = [samples[p].hand for p in scored.paths]
    unit = "hand" if all(h is not None for h in hands) else "image"
    groups = [str(h) for h in hands] if unit == "hand" else list(scored.paths)
    predictions = [
        {"path": p, "hand": samples[p].hand, "label": saved.classes[t],
         "predicted": saved.classes[q], "confidence": float(scored.probs[i, q]),
         "correct": bool(t == q)}
        for i, (p, t, q) in enumerate(zip(scored.paths, y, pred, strict=True))]
    n = len(scored.paths)
    return Evaluation(
        accuracy=float(correct.mean()) if n else float("nan"), n=n, per_class=per_class,
        per_class_n={c: int(per_n[i]) for i, c in enumerate(saved.classes)},
        confusion=confusion.tolist(), classes=list(saved.classes),
        ci95=bootstrap_ci(correct, groups, seed=seed), ci_unit=unit, chance=1.0 / k,
        majority=float(per_n.max() / n) if n else float("nan"), predictions=predictions,
        unreadable=scored.unreadable)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (letter, probability), most likely first


def predict(saved: SavedModel, images: Sequence[Path], k: int = 3,
            ) -> tuple[list[Prediction], dict[str, str]]:
    """Top-``k`` letters per image; unreadable images are returned separately."""
    scored = score(saved, Path("."), [str(p) for p in images])  # paths as the user gave them
    k = max(1, min(k, len(saved.classes)))
    out = []
    for path, probs in zip(scored.paths, scored.probs, strict=True):
        order = np.argsort(-probs)[:k]
        out.append(Prediction(path, [(saved.classes[i], float(probs[i])) for i in order]))
    return out, scored.unreadable
