"""Data checks: everything about an image folder that would silently corrupt training.

The checks decode every image with :func:`gestures.data.decode`, the same decoder that
training uses, so what they report is what a model would see. They never modify files:
problems are excluded by listing them (``exclude``), not by deleting them.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gestures.data import DataSet, UnreadableImage, decode, hand_sort_key

TINY_SIDE = 64  # below this a 224 px model sees mostly interpolation
HUGE_SIDE = 4096  # decodes fine, but costs ~50 MB a photo and is rarely a real hand shot
IMBALANCE_RATIO = 1.5  # largest / smallest class


@dataclass
class Finding:
    kind: str
    paths: list[str]
    detail: str
    error: bool  # True: would corrupt training; the paths belong in the exclude list


@dataclass
class CheckReport:
    root: str
    n_images: int
    classes: list[str]
    per_class: dict[str, int]
    per_hand: dict[str, int]
    exif_rotated_hands: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def exclude(self) -> list[str]:
        """The files to leave out so that training is safe: every path of every error."""
        return sorted({p for f in self.errors for p in f.paths})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["exclude"] = self.exclude()
        return out


@dataclass(frozen=True)
class ImageInfo:
    """What one file is, as training would decode it; ``error`` set when it cannot be."""

    byte_hash: str | None
    pixel_hash: str | None
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    exif_rotated: bool = False
    error: str | None = None


def inspect_image(path: Path) -> ImageInfo:
    raw = path.read_bytes()
    if not raw:
        return ImageInfo(None, None, error="zero-byte file")
    byte_hash = hashlib.sha256(raw).hexdigest()
    try:
        image = decode(path)
    except UnreadableImage as exc:
        return ImageInfo(byte_hash, None, error=str(exc))
    pixel_hash = hashlib.sha256(image.pixels.tobytes()).hexdigest() + str(image.pixels.shape)
    return ImageInfo(byte_hash, pixel_hash, image.original_mode, image.original_size,
                     image.exif_rotated)


def inspect_all(data: DataSet, progress: Callable[[int, int], None] | None = None,
                ) -> list[ImageInfo]:
    infos = []
    for i, sample in enumerate(data.samples):
        infos.append(inspect_image(data.root / sample.path))
        if progress:
            progress(i + 1, len(data.samples))
    return infos


def check(data: DataSet, progress: Callable[[int, int], None] | None = None,
          infos: list[ImageInfo] | None = None) -> CheckReport:
    """Decodes every image (unless ``infos`` are given) and returns all findings, errors first."""
    if infos is None:
        infos = inspect_all(data, progress)
    samples = data.samples
    findings: list[Finding] = []
    byte_groups: dict[str, list[int]] = defaultdict(list)
    pixel_groups: dict[str, list[int]] = defaultdict(list)
    unreadable: list[tuple[str, str]] = []
    modes: dict[str, list[str]] = defaultdict(list)
    tiny: list[str] = []
    huge: list[str] = []
    rotated: list[int] = []
    for i, (sample, info) in enumerate(zip(samples, infos, strict=True)):
        if info.byte_hash is not None:
            byte_groups[info.byte_hash].append(i)
        if info.error is not None or info.pixel_hash is None:
            unreadable.append((sample.path, info.error or "unreadable"))
            continue
        pixel_groups[info.pixel_hash].append(i)
        if info.mode != "RGB":
            modes[info.mode].append(sample.path)
        if info.exif_rotated:
            rotated.append(i)
        if min(info.size) < TINY_SIDE:
            tiny.append(sample.path)
        if max(info.size) > HUGE_SIDE:
            huge.append(sample.path)

    for rel, why in unreadable:
        findings.append(Finding("unreadable", [rel], why, error=True))
    no_hand = [s.path for s in samples if s.hand is None]
    if no_hand:
        findings.append(Finding(
            "no_hand_id", no_hand,
            f"{len(no_hand)} image(s) have no hand id, so no split can keep their hand on one "
            "side; add them to the groups CSV or exclude them", error=True))
    for row in data.bad_rows:
        findings.append(Finding("bad_csv_row", [row.split(":", 1)[0]], row, error=True))
    findings += _duplicate_findings(data, byte_groups, pixel_groups)
    for mode, paths in sorted(modes.items()):
        findings.append(Finding("converted_mode", paths,
                                f"{len(paths)} image(s) in mode {mode}, converted to RGB",
                                error=False))
    if tiny:
        findings.append(Finding("tiny_image", tiny, f"shorter side under {TINY_SIDE} px",
                                error=False))
    if huge:
        findings.append(Finding("huge_image", huge, f"longer side over {HUGE_SIDE} px",
                                error=False))
    if rotated:
        paths = [samples[i].path for i in rotated]
        findings.append(Finding("exif_rotated", paths,
                                f"{len(paths)} image(s) stored sideways with an EXIF orientation "
                                "tag; decoded upright (the tag is applied)", error=False))
    if data.files_without_row:
        findings.append(Finding("file_not_in_csv", data.files_without_row,
                                "image files with no row in the groups CSV (no hand id)",
                                error=True))
    if data.rows_without_file:
        findings.append(Finding("row_without_file", data.rows_without_file,
                                "groups CSV rows whose file does not exist", error=False))
    if data.non_image_files:
        findings.append(Finding("non_image_file", data.non_image_files,
                                "files without an image suffix, ignored", error=False))
    if data.empty_classes:
        findings.append(Finding("empty_class", data.empty_classes,
                                "class folders with no images", error=True))

    per_class = Counter(s.label for s in samples)
    counts = [per_class.get(c, 0) for c in data.classes]
    if counts and min(counts) > 0 and max(counts) / min(counts) > IMBALANCE_RATIO:
        findings.append(Finding(
            "class_imbalance", [],
            f"largest class has {max(counts)} images, smallest {min(counts)} "
            f"(ratio {max(counts) / min(counts):.2f} > {IMBALANCE_RATIO})", error=False))
    per_hand = Counter(s.hand for s in samples if s.hand is not None)
    rotated_hands = Counter(str(samples[i].hand) for i in rotated)
    findings.sort(key=lambda f: not f.error)
    return CheckReport(
        root=str(data.root), n_images=len(samples), classes=list(data.classes),
        per_class={c: per_class.get(c, 0) for c in data.classes},
        per_hand=dict(sorted(per_hand.items(), key=lambda kv: hand_sort_key(kv[0]))),
        exif_rotated_hands=dict(sorted(rotated_hands.items(),
                                       key=lambda kv: hand_sort_key(kv[0]))),
        findings=findings)


def _duplicate_findings(data: DataSet, byte_groups: dict[str, list[int]],
                        pixel_groups: dict[str, list[int]]) -> list[Finding]:
    """Byte-identical groups, plus pixel-identical groups that are not byte-identical."""
    samples = data.samples
    findings: list[Finding] = []
    byte_sets = [frozenset(g) for g in byte_groups.values() if len(g) > 1]
    seen = set(byte_sets)
    pixel_sets = [frozenset(g) for g in pixel_groups.values()
                  if len(g) > 1 and frozenset(g) not in seen]
    for how, groups in (("byte", byte_sets), ("pixel", pixel_sets)):
        for group in groups:
            members = sorted(group)
            paths = [samples[i].path for i in members]
            labels = sorted({samples[i].label for i in members})
            hands = sorted({str(samples[i].hand) for i in members})
            where = ", ".join(f"{samples[i].path} ({samples[i].label}, hand {samples[i].hand})"
                              for i in members)
            if len(labels) > 1:
                findings.append(Finding(
                    "label_conflict", paths,
                    f"{how}-identical images with different labels {labels}: {where}. At least "
                    "one label is wrong; exclude them (or fix the label)", error=True))
            elif len(hands) > 1:
                findings.append(Finding(
                    "duplicate_across_hands", paths,
                    f"{how}-identical images under different hands {hands}: {where}. A split "
                    "could put the same photo in train and test", error=False))
            else:
                findings.append(Finding("duplicate", paths,
                                        f"{how}-identical images in one class: {where}",
                                        error=False))
    return findings


def without_problems(data: DataSet) -> tuple[DataSet, CheckReport]:
    """``data`` less every file the checks report as an error (label conflicts,
    unreadable files, images without a hand id), and the report that says which."""
    report = check(data)
    return data.without(report.exclude()), report
