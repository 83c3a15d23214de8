"""Hand-disjoint, letter-stratified splits (train / val / test, and k folds by hand).

The split is done by scikit-learn's ``StratifiedGroupKFold`` over *hand groups*: hands
joined by an identical image (same bytes or same decoded pixels) form one group, so a
duplicated photo can never sit on both sides. The invariants are checked in code on
every split that is made or read (:func:`verify`), not only in tests.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from gestures.checks import CheckReport, ImageInfo, check, inspect_all
from gestures.data import DataError, DataSet, Sample

SPLITS = ("train", "val", "test")
COLUMNS = ("path", "label", "hand", "split")


class SplitError(DataError):
    """A split violates an invariant (hand or image on two sides, a letter missing)."""


@dataclass(frozen=True)
class SplitConfig:
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    folds: int = 0  # > 1: the non-test hands are cut into this many folds ("fold0", ...)
    allow_image_split: bool = False

    def __post_init__(self) -> None:
        for name, value in (("val", self.val), ("test", self.test)):
            if not 0.0 < value < 0.5:
                raise DataError(f"--{name} {value} is out of range; give a fraction in (0, 0.5), "
                                "e.g. 0.15")
        if self.folds == 1 or self.folds < 0:
            raise DataError(f"--folds {self.folds} is invalid; use 0 (train/val) or >= 2")


@dataclass
class Split:
    """One row per image: ``path,label,hand,split`` with split in train/val/test/foldK."""

    rows: list[tuple[Sample, str]]

    def paths(self, split: str) -> list[str]:
        return [s.path for s, name in self.rows if name == split]

    def names(self) -> list[str]:
        return sorted({name for _, name in self.rows}, key=_split_order)

    def train_val(self, fold: int | None = None) -> tuple[list[str], list[str]]:
        """Train and validation paths; with k folds, ``fold`` is the validation fold."""
        if fold is None:
            if "val" not in self.names():
                raise DataError("this split file holds k folds; choose a validation fold")
            return self.paths("train"), self.paths("val")
        val = f"fold{fold}"
        if val not in self.names():
            raise DataError(f"fold {fold} is not in this split file; it has {self.names()}")
        train = [s.path for s, name in self.rows if name.startswith("fold") and name != val]
        return train, self.paths(val)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for sample, name in sorted(self.rows, key=lambda r: r[0].path):
            writer.writerow((sample.path, sample.label, sample.hand or "", name))
        return buf.getvalue()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_csv())

    def summary(self) -> dict[str, dict[str, int]]:
        """split -> {"images", "hands", and one count per letter}."""
        out: dict[str, dict[str, int]] = {}
        for name in self.names():
            samples = [s for s, n in self.rows if n == name]
            counts = Counter(s.label for s in samples)
            out[name] = {"images": len(samples), "hands": len({s.hand for s in samples}),
                         **dict(sorted(counts.items()))}
        return out


def _split_order(name: str) -> tuple[int, str]:
    return (SPLITS.index(name), "") if name in SPLITS else (len(SPLITS), name)


def load_split(path: Path) -> Split:
    """Reads a split file and re-verifies its invariants."""
    if not Path(path).is_file():
        raise DataError(f"split file {path} does not exist; make one with "
                        "'hpo data split DATA --out split.csv'")
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise DataError(f"split file {path} has columns {reader.fieldnames}; expected "
                            f"{','.join(COLUMNS)}")
        rows = [(Sample(r["path"], r["label"], r["hand"] or None), r["split"]) for r in reader]
    split = Split(rows)
    verify(split, infos=None)
    return split


def hand_groups(data: DataSet, infos: Sequence[ImageInfo]) -> list[str]:
    """The split group of each image: its hand, merged with every hand it shares a photo with."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # Without a hand id (only with --allow-image-split) each image is its own group.
    own = [s.hand if s.hand is not None else f"image:{s.path}" for s in data.samples]
    by_hash: dict[str, list[str]] = defaultdict(list)
    for group, info in zip(own, infos, strict=True):
        for key in (info.byte_hash, info.pixel_hash):
            if key:
                by_hash[key].append(group)
    for groups in by_hash.values():
        for other in groups[1:]:
            parent[find(other)] = find(groups[0])
    return [find(g) for g in own]


def _one_fold(y: np.ndarray, groups: Sequence[str], fraction: float, seed: int,
              ) -> tuple[np.ndarray, np.ndarray]:
    n_splits = max(2, round(1.0 / fraction))
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise SplitError(f"only {n_groups} hand groups; a {fraction:.0%} split needs at least "
                         f"{n_splits}. Use a larger fraction or more hands")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than n_splits; verify() decides.
        warnings.simplefilter("ignore", UserWarning)
        rest, held = next(cv.split(np.zeros(len(y)), y, groups))
    return rest, held


def make_split(data: DataSet, config: SplitConfig, infos: Sequence[ImageInfo] | None = None,
               ) -> Split:
    """Splits ``data`` by hand, stratified by letter; deterministic for a given seed."""
    missing = [s.path for s in data.samples if s.hand is None]
    if missing and not config.allow_image_split:
        raise SplitError(
            f"{len(missing)} image(s) have no hand id (e.g. {missing[0]}), so hands cannot be "
            "kept apart. Give hand ids (--groups CSV or --groups-regex), exclude those files, "
            "or pass --allow-image-split to split by image (accuracy will be inflated)")
    if config.allow_image_split:
        warnings.warn("splitting by IMAGE, not by hand: photos of one hand will be in train and "
                      "test, and test accuracy will be inflated by several points",
                      stacklevel=2)
    infos = infos if infos is not None else inspect_all(data)
    y = data.labels()
    groups = np.array(hand_groups(data, infos))
    rest, test = _one_fold(y, list(groups), config.test, config.seed)
    names = np.empty(len(y), dtype=object)
    names[test] = "test"
    if config.folds > 1:
        cv = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for k, (_, held) in enumerate(cv.split(np.zeros(len(rest)), y[rest], groups[rest])):
                names[rest[held]] = f"fold{k}"
    else:
        val_fraction = config.val / (1.0 - config.test)
        train, val = _one_fold(y[rest], list(groups[rest]), val_fraction, config.seed)
        names[rest[train]] = "train"
        names[rest[val]] = "val"
    split = Split([(s, str(n)) for s, n in zip(data.samples, names, strict=True)])
    verify(split, infos=infos, classes=data.classes)
    return split


def verify(split: Split, infos: Sequence[ImageInfo] | None,
           classes: Sequence[str] | None = None) -> None:
    """Raises :class:`SplitError` unless each hand and each identical image is on one side
    and every letter is in every split."""
    side_of_hand: dict[str, set[str]] = defaultdict(set)
    for sample, name in split.rows:
        if sample.hand is not None:
            side_of_hand[sample.hand].add(name)
    crossing = {h: sorted(s) for h, s in side_of_hand.items() if len(s) > 1}
    if crossing:
        hand, sides = next(iter(crossing.items()))
        raise SplitError(f"{len(crossing)} hand(s) are in more than one split, e.g. hand {hand} "
                         f"in {sides}; remake the split with 'hpo data split'")
    if infos is not None:
        side_of_image: dict[str, set[str]] = defaultdict(set)
        for (_, name), info in zip(split.rows, infos, strict=True):
            for key in (info.byte_hash, info.pixel_hash):
                if key:
                    side_of_image[key].add(name)
        if any(len(s) > 1 for s in side_of_image.values()):
            raise SplitError("an identical image is in more than one split")
    letters = set(classes) if classes is not None else {s.label for s, _ in split.rows}
    for name in split.names():
        present = {s.label for s, n in split.rows if n == name}
        if letters - present:
            raise SplitError(f"split {name!r} has no image of letter(s) "
                             f"{sorted(letters - present)}; use a larger --{name} fraction "
                             "or another --seed")


def split_dataset(data: DataSet, config: SplitConfig, *, exclude_problems: bool = False,
                  ) -> tuple[Split, CheckReport]:
    """Checks ``data`` and splits it. Files with errors (label conflicts, unreadable, no
    hand) make it refuse, unless ``exclude_problems`` leaves them out of the split."""
    infos = inspect_all(data)
    report = check(data, infos=infos)
    # With --allow-image-split, a missing hand id is the accepted risk, not a blocker.
    waived = {"no_hand_id", "file_not_in_csv"} if config.allow_image_split else set()
    bad = {p for f in report.errors if f.kind not in waived for p in f.paths}
    if bad and not exclude_problems:
        kinds = sorted({f.kind for f in report.errors})
        raise SplitError(
            f"{len(bad)} file(s) would corrupt training ({', '.join(kinds)}), e.g. "
            f"{sorted(bad)[0]}. Pass --exclude-problems to leave them out, or list them with "
            "'hpo data check DATA --exclude-out exclude.txt' and pass --exclude exclude.txt")
    clean = data.without(bad)
    kept = {s.path for s in clean.samples}
    infos = [info for s, info in zip(data.samples, infos, strict=True) if s.path in kept]
    return make_split(clean, config, infos=infos), report
