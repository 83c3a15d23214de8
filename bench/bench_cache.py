"""Decoded-image cache: images/s for a cold build, a warm load, and per-epoch decoding.

Run: .venv/bin/python bench/bench_cache.py [DATA]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gestures.cache import decoded_images
from gestures.checks import without_problems
from gestures.data import discover, load_image


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/gestures")
    data, _ = without_problems(discover(root))
    n = len(data.samples)
    for size in (224, 112):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            decoded_images(data, size, Path(tmp))
            cold = time.perf_counter() - t
            t = time.perf_counter()
            warm = decoded_images(data, size, Path(tmp))
            np.asarray(warm.images).sum()  # touch every byte of the memory map
            warm_s = time.perf_counter() - t
        t = time.perf_counter()
        for s in data.samples:
            load_image(root / s.path, size)
        per_epoch = time.perf_counter() - t
        print(f"size {size}: cold build {n / cold:,.0f} img/s ({cold:.1f} s), warm load "
              f"{n / warm_s:,.0f} img/s ({warm_s:.2f} s, incl. content hash), decoding JPEGs "
              f"every epoch {n / per_epoch:,.0f} img/s ({per_epoch:.1f} s/epoch)")


if __name__ == "__main__":
    main()
