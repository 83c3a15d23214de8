from __future__ import annotations

import os
from pathlib import Path

import pytest

from gestures.checks import without_problems
from gestures.data import DataSet, discover
from gestures.sanity import few_hands

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gestures"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test shares one fresh cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["GESTURES_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert DATA.is_dir(), f"the real data set must be at {DATA} (../shared/data/gestures)"
    return DATA


@pytest.fixture(scope="session")
def real_data(data_root: Path) -> DataSet:
    return discover(data_root)


@pytest.fixture(scope="session")
def clean_data(real_data: DataSet) -> DataSet:
    return without_problems(real_data)[0]


@pytest.fixture(scope="session")
def small_data(clean_data: DataSet) -> DataSet:
    """Two hands (~54 images), enough to exercise every model on real photos quickly."""
    return few_hands(clean_data, 40)
