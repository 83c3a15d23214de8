"""Image-folder data sets with a group (hand) id per image, and the one image decoder.

A data set is a folder with one sub-folder per class. Every image also needs the id of
the hand it shows, because photos of one hand look alike and must never be split across
train and test. Hand ids come from a CSV (``path,label,hand``; ``DATA/hands.csv`` by
default) or from a regular expression over the relative path.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_GROUPS_FILE = "hands.csv"

# Decompression-bomb guard: PIL's default (~89 Mpx) warns, twice that raises. We want a
# clear "huge image" finding instead of a crash or a silent 300 MB allocation.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = None


class DataError(ValueError):
    """The data set or its group file is unusable as given; the message says how to fix it."""


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the data root, with forward slashes: "A/1000_A_2.jpg"
    label: str
    hand: str | None


@dataclass(frozen=True)
class GroupSource:
    """Where hand ids come from: a CSV file, a filename regex, or (default) DATA/hands.csv."""

    csv: Path | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        if self.csv is not None and self.regex is not None:
            raise DataError("give either a groups CSV or a groups regex, not both")
        if self.regex is not None:
            try:
                pattern = re.compile(self.regex)
            except re.error as exc:
                raise DataError(f"groups regex {self.regex!r} does not compile: {exc}") from exc
            if pattern.groups == 0:
                raise DataError(
                    f"groups regex {self.regex!r} has no capture group; wrap the hand id in "
                    "(...) or (?P<hand>...), e.g. '^[A-I]/(?P<hand>\\d+)_'"
                )


@dataclass
class DataSet:
    root: Path
    classes: tuple[str, ...]
    samples: list[Sample]
    # Files found on disk with no row in the groups CSV, and CSV rows with no file.
    files_without_row: list[str] = field(default_factory=list)
    rows_without_file: list[str] = field(default_factory=list)
    # CSV rows whose label is not a class folder, or disagrees with the folder.
    bad_rows: list[str] = field(default_factory=list)
    non_image_files: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [s.path for s in self.samples]

    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[s.label] for s in self.samples], dtype=np.int64)

    def subset(self, paths: Iterable[str]) -> DataSet:
        keep = set(paths)
        return replace(self, samples=[s for s in self.samples if s.path in keep])

    def without(self, paths: Iterable[str]) -> DataSet:
        """Leaves out the listed files; a listed class folder name drops that class."""
        drop = set(paths)
        return replace(
            self, classes=tuple(c for c in self.classes if c not in drop),
            samples=[s for s in self.samples if s.path not in drop and s.label not in drop],
            bad_rows=[r for r in self.bad_rows if r.split(":", 1)[0] not in drop],
            files_without_row=[p for p in self.files_without_row if p not in drop],
            empty_classes=[c for c in self.empty_classes if c not in drop])


def hand_sort_key(hand: str) -> tuple[int, int, str]:
    """Numeric hand ids in numeric order, then any others alphabetically."""
    return (0, int(hand), "") if hand.isdigit() else (1, 0, hand)


def read_path_list(path: Path) -> list[str]:
    """Reads an exclude list: one relative path per line, '#' starts a comment."""
    if not path.is_file():
        raise DataError(f"exclude list {path} does not exist; write one with "
                        "'hpo data check DATA --exclude-out FILE'")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def discover(root: Path, groups: GroupSource | None = None) -> DataSet:
    """Lists the class folders and images under ``root`` and attaches a hand id to each."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass the folder that holds one "
                        "sub-folder per class (e.g. ../shared/data/gestures)")
    groups = groups or GroupSource()
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected one folder per letter "
                        "(A/, B/, ...) with the images inside")
    classes = tuple(p.name for p in class_dirs)
    found: dict[str, str] = {}
    non_images: list[str] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file()
                       and not p.name.startswith("."))
        if not files:
            empty.append(class_dir.name)
        for file in files:
            rel = file.relative_to(root).as_posix()
            if file.suffix.lower() in IMAGE_SUFFIXES:
                found[rel] = class_dir.name
            else:
                non_images.append(rel)

    data = DataSet(root, classes, [], non_image_files=non_images, empty_classes=empty)
    csv_path = groups.csv
    if csv_path is None and groups.regex is None and (root / DEFAULT_GROUPS_FILE).is_file():
        csv_path = root / DEFAULT_GROUPS_FILE
    if csv_path is not None:
        hands = _hands_from_csv(Path(csv_path), found, classes, data)
    elif groups.regex is not None:
        pattern = re.compile(groups.regex)
        hands = {}
        for rel in found:
            match = pattern.search(rel)
            hands[rel] = _group_of(match) if match else None
    else:
        hands = dict.fromkeys(found)
    data.samples = [Sample(rel, label, hands.get(rel)) for rel, label in sorted(found.items())]
    return data


def _group_of(match: re.Match[str]) -> str:
    return match.group("hand") if "hand" in match.re.groupindex else match.group(1)


def _hands_from_csv(csv_path: Path, found: dict[str, str], classes: Sequence[str],
                    data: DataSet) -> dict[str, str | None]:
    if not csv_path.is_file():
        raise DataError(f"groups file {csv_path} does not exist; give --groups CSV with columns "
                        "path,label,hand, or --groups-regex PATTERN")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "hand"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"groups file {csv_path} lacks column(s) {sorted(missing)}; its header "
                            f"is {reader.fieldnames}, expected path,label,hand")
        rows = list(reader)
    hands: dict[str, str | None] = {}
    for row in rows:
        rel = row["path"].replace("\\", "/").strip()
        label = (row.get("label") or "").strip()
        hand = (row.get("hand") or "").strip() or None
        if label and label not in classes:
            data.bad_rows.append(f"{rel}: label {label!r} is not a class folder {list(classes)}")
            continue
        if rel not in found:
            data.rows_without_file.append(rel)
            continue
        if label and label != found[rel]:
            data.bad_rows.append(f"{rel}: CSV label {label!r} but the file is in {found[rel]}/")
        hands[rel] = hand
    data.files_without_row = sorted(set(found) - set(hands))
    return hands


class UnreadableImage(Exception):
    """The file is not a decodable image (zero bytes, truncated, not an image)."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W, 3) uint8, upright
    original_mode: str
    original_size: tuple[int, int]  # (W, H) as stored, before EXIF rotation
    exif_rotated: bool


def decode(path: Path) -> DecodedImage:
    """Decodes one image exactly as training sees it: EXIF orientation applied, RGB, uint8.

    16-bit and palette/alpha images are converted (alpha composited on white, since a
    transparent background is not black in the photo the user meant).
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise UnreadableImage(f"{width}x{height} pixels is over the {MAX_PIXELS:,} "
                                      "pixel limit; downscale it first")
            mode = im.mode
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            upright = ImageOps.exif_transpose(im)
            rgb = _to_rgb(upright)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{type(exc).__name__}: {exc}") from exc
    return DecodedImage(pixels, mode, (width, height), orientation not in (1, None))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits by the real range, not by clipping at 255.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray((arr / top * 255.0).round().astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` then centre crop: (H, W, 3) -> (size, size, 3) uint8."""
    im = Image.fromarray(pixels)
    w, h = im.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_image(path: Path, size: int) -> np.ndarray:
    """The training decoder: upright RGB, resized to (size, size, 3) uint8."""
    return resize_square(decode(path).pixels, size)
