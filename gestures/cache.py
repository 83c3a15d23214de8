"""On-disk array caches shared by every trial and worker process on a machine.

Decoding 1,787 JPEGs (EXIF, RGB, resize) every epoch dominates a small CNN's epoch on a
CPU, and a frozen backbone's forward pass dominates a TransferCNN's. Both are done once
per content and stored as ``.npy`` files that later processes memory-map.

Each entry is keyed by a hash of what it was computed from (file bytes, image size,
backbone weights, ...). It is built under a file lock, into a temporary file that is
renamed into place, so two workers starting together build it once and a reader never
sees a half-written array.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from gestures.data import DataError, DataSet, UnreadableImage, load_image

# Bump when load_image() changes what it produces, so old entries are not reused.
DECODER_VERSION = 1
CACHE_ENV = "GESTURES_CACHE"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "gesture-hpo"


def hash_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def content_hash(data: DataSet) -> str:
    """Hash of every image's relative path, label and bytes: changes when any file does."""
    h = hashlib.sha256()
    for sample in data.samples:
        h.update(f"{sample.path}\0{sample.label}\0".encode())
        h.update(hashlib.sha256((data.root / sample.path).read_bytes()).digest())
    return h.hexdigest()[:24]


def cached_array(path: Path, shape: tuple[int, ...], dtype: np.dtype | type,
                 fill: Callable[[np.ndarray], None]) -> np.ndarray:
    """Returns the array at ``path`` memory-mapped read-only, building it first if absent.

    ``fill`` writes every element of a writable (memory-mapped) array of ``shape``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with FileLock(str(path) + ".lock"):
            if not path.exists():  # another process may have built it while we waited
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                try:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                    fill(out)
                    out.flush()
                    del out
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
    array = np.load(path, mmap_mode="r")
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise DataError(f"cache entry {path} has shape {array.shape} {array.dtype}, expected "
                        f"{shape} {np.dtype(dtype)}; delete it and run again")
    return array


@dataclass
class ImageArray:
    """Every image of a data set decoded once: ``images[i]`` is ``data.samples[i]``."""

    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    labels: np.ndarray  # (N,) int64
    paths: list[str]
    classes: tuple[str, ...]
    key: str  # content + size hash; feature caches derive their key from it

    def indices(self, paths: list[str]) -> np.ndarray:
        row = {p: i for i, p in enumerate(self.paths)}
        missing = [p for p in paths if p not in row]
        if missing:
            raise DataError(f"{len(missing)} split path(s) are not in the data set, e.g. "
                            f"{missing[0]}; was the split made from another folder?")
        return np.array([row[p] for p in paths], dtype=np.int64)


def decoded_images(data: DataSet, size: int, cache_dir: Path | None = None) -> ImageArray:
    """Decodes (EXIF, RGB) and resizes every image once per (content, size)."""
    if not data.samples:
        raise DataError(f"no images to decode under {data.root}")
    key = hash_json({"content": content_hash(data), "size": size, "decoder": DECODER_VERSION})
    path = (cache_dir or default_cache_dir()) / "decoded" / f"{key}.npy"

    def fill(out: np.ndarray) -> None:
        for i, sample in enumerate(data.samples):
            try:
                out[i] = load_image(data.root / sample.path, size)
            except UnreadableImage as exc:
                raise DataError(f"{sample.path} cannot be decoded ({exc}); run 'hpo data check' "
                                "and exclude the files it lists") from exc

    images = cached_array(path, (len(data.samples), size, size, 3), np.uint8, fill)
    return ImageArray(images, data.labels(), data.paths(), data.classes, key)
