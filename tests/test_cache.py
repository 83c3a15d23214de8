from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np

from gestures.cache import decoded_images
from gestures.data import discover, load_image


def _copy_hands(src: Path, dst: Path, n: int = 3) -> Path:
    rows = ["path,label,hand"]
    for letter in "AB":
        (dst / letter).mkdir(parents=True)
        for f in sorted((src / letter).iterdir())[:n]:
            shutil.copy(f, dst / letter / f.name)
            rows.append(f"{letter}/{f.name},{letter},{f.name.split('_')[0]}")
    (dst / "hands.csv").write_text("\n".join(rows) + "\n")
    return dst


def test_decoded_once_then_reused(tmp_path, data_root):
    root = _copy_hands(data_root, tmp_path / "d")
    cache = tmp_path / "cache"
    data = discover(root)
    first = decoded_images(data, 32, cache)
    files = list((cache / "decoded").glob("*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = decoded_images(discover(root), 32, cache)
    assert files[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(second.images[0], load_image(root / data.samples[0].path, 32))
    assert second.images.shape == (6, 32, 32, 3) and second.images.dtype == np.uint8


def test_rebuilt_when_a_file_changes(tmp_path, data_root):
    root = _copy_hands(data_root, tmp_path / "d")
    cache = tmp_path / "cache"
    before = decoded_images(discover(root), 32, cache)
    victim = sorted((root / "A").iterdir())[0]
    shutil.copy(sorted((data_root / "C").iterdir())[0], victim)  # same name, new content
    after = decoded_images(discover(root), 32, cache)
    assert after.key != before.key
    assert len(list((cache / "decoded").glob("*.npy"))) == 2
    assert not np.array_equal(after.images[0], before.images[0])


def _build(args: tuple[str, str]) -> str:
    root, cache = args
    return decoded_images(discover(Path(root)), 48, Path(cache)).key


def test_concurrent_builders_agree(tmp_path, data_root):
    root = _copy_hands(data_root, tmp_path / "d", n=10)
    cache = tmp_path / "cache"
    with mp.get_context("spawn").Pool(2) as pool:
        keys = pool.map(_build, [(str(root), str(cache))] * 2)
    assert keys[0] == keys[1]
    assert len(list((cache / "decoded").glob("*.npy"))) == 1
    assert not list((cache / "decoded").glob("*.tmp"))
    images = decoded_images(discover(root), 48, cache).images
    assert images.shape == (20, 48, 48, 3) and images.std() > 0
