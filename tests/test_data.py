from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gestures.checks import check
from gestures.data import DataError, GroupSource, decode, discover
from hpo.cli import app

runner = CliRunner()


def test_real_data_counts(real_data):
    assert len(real_data.samples) == 1787
    assert real_data.classes == tuple("ABCDEFGHI")
    assert len({s.hand for s in real_data.samples}) == 72
    assert all(s.hand is not None for s in real_data.samples)


def test_check_finds_label_conflict_and_exif_hands(real_data):
    report = check(real_data)
    conflicts = [f for f in report.findings if f.kind == "label_conflict"]
    assert len(conflicts) == 1
    assert sorted(conflicts[0].paths) == ["A/28_A_2.jpg", "E/39_E_1.jpg"]
    assert report.exclude() == ["A/28_A_2.jpg", "E/39_E_1.jpg"]
    assert report.exif_rotated_hands == {"19": 27, "28": 27}
    dup = [f for f in report.findings if f.kind == "duplicate"]
    assert len(dup) == 3 and not report.ok


def test_decode_applies_exif(real_data, data_root):
    sample = next(s for s in real_data.samples if s.hand == "19")
    with Image.open(data_root / sample.path) as im:
        stored = np.asarray(im.convert("RGB"))
    upright = decode(data_root / sample.path)
    assert upright.exif_rotated
    # Square photos: the rotation shows in the pixels, not the shape.
    assert upright.pixels.shape == stored.shape
    assert not np.array_equal(upright.pixels, stored)
    assert any(np.array_equal(upright.pixels, np.rot90(stored, k)) for k in (1, 3))


def _write_dataset(root: Path, src: Path) -> None:
    """A small copy of two real letters plus every kind of bad file."""
    rows = ["path,label,hand"]
    for letter in "AB":
        (root / letter).mkdir(parents=True)
        for i, f in enumerate(sorted((src / letter).iterdir())[:4]):
            shutil.copy(f, root / letter / f.name)
            rows.append(f"{letter}/{f.name},{letter},{i % 2}")
    a = root / "A"
    good = sorted(a.iterdir())[0].read_bytes()
    (a / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (a / "zero.jpg").write_bytes(b"")
    (a / "text.jpg").write_text("not an image at all\n")
    Image.new("CMYK", (50, 80), (0, 128, 0, 0)).save(a / "cmyk.jpg")
    Image.new("RGBA", (100, 100), (255, 0, 0, 128)).save(a / "rgba.png")
    Image.fromarray(np.full((90, 90), 40000, dtype=np.uint16)).save(a / "deep.png")
    Image.new("L", (10_000, 10_000), 7).save(a / "huge.png")
    (root / "C").mkdir()  # an empty class folder
    for name in ("truncated.jpg", "zero.jpg", "text.jpg", "cmyk.jpg", "rgba.png", "deep.png",
                 "huge.png"):
        rows.append(f"A/{name},A,9")
    rows[rows.index("A/deep.png,A,9")] = "A/deep.png,A,"  # hand id missing
    rows.append("A/ghost.jpg,A,3")  # row without a file
    rows.append("B/whatever.jpg,Q,3")  # unknown label
    (root / "hands.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, data_root) -> Path:
    root = tmp_path_factory.mktemp("bad")
    _write_dataset(root, data_root)
    return root


def test_bad_files_are_found(bad_root):
    data = discover(bad_root)
    report = check(data)
    kinds = {f.kind: f for f in report.findings}
    unreadable = {p for f in report.findings if f.kind == "unreadable" for p in f.paths}
    assert unreadable == {"A/truncated.jpg", "A/zero.jpg", "A/text.jpg"}
    assert kinds["converted_mode"] is not None
    modes = " ".join(f.detail for f in report.findings if f.kind == "converted_mode")
    assert "CMYK" in modes and "RGBA" in modes and ("I;16" in modes or "I" in modes)
    assert kinds["huge_image"].paths == ["A/huge.png"]
    assert kinds["no_hand_id"].paths == ["A/deep.png"]
    assert kinds["empty_class"].paths == ["C"]
    assert kinds["row_without_file"].paths == ["A/ghost.jpg"]
    assert "'Q' is not a class folder" in kinds["bad_csv_row"].detail
    assert set(report.exclude()) >= unreadable | {"A/deep.png"}
    assert not report.ok


def test_converted_images_decode_to_rgb(bad_root):
    for name in ("cmyk.jpg", "rgba.png", "deep.png"):
        pixels = decode(bad_root / "A" / name).pixels
        assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
    # 16-bit: 40000/65535 of full scale, not clipped to 255.
    assert decode(bad_root / "A" / "deep.png").pixels[0, 0, 0] == round(40000 / 65535 * 255)
    # RGBA composited on white: half-transparent red is pink, not dark red.
    assert tuple(decode(bad_root / "A" / "rgba.png").pixels[0, 0]) == (255, 127, 127)


def test_check_cli_exit_codes_and_json(bad_root, tmp_path):
    before = sorted(p.name for p in (bad_root / "A").iterdir())
    out = tmp_path / "exclude.txt"
    result = runner.invoke(app, ["data", "check", str(bad_root), "--json", "--exclude-out",
                                 str(out)])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and "A/zero.jpg" in payload["exclude"]
    assert out.read_text().splitlines() == payload["exclude"]
    assert sorted(p.name for p in (bad_root / "A").iterdir()) == before  # nothing deleted
    # Excluding exactly the listed files (the empty class folder too) makes it usable.
    result = runner.invoke(app, ["data", "check", str(bad_root), "--exclude", str(out)])
    assert result.exit_code == 0, result.stdout
    assert "ERROR" not in result.stdout


def test_groups_regex_and_errors(tmp_path, data_root):
    data = discover(data_root, GroupSource(regex=r"^[A-I]/(?P<hand>\d+)_"))
    assert all(s.hand is not None for s in data.samples)
    with pytest.raises(DataError, match="no capture group"):
        GroupSource(regex=r"\d+")
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        discover(data_root, GroupSource(csv=tmp_path / "missing.csv"))


def test_overfit_cli_passes_on_real_hands(data_root):
    result = runner.invoke(app, ["overfit", str(data_root), "--model", "simple_cnn",
                                 "--images", "20", "--steps", "120"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "100.0%" in result.output


def test_overfit_cli_fails_when_it_cannot_memorise(data_root):
    # lr so small nothing moves in 3 steps: the check must say FAIL and exit 1.
    result = runner.invoke(app, ["overfit", str(data_root), "--images", "20", "--steps", "3",
                                 "--lr", "1e-9"])
    assert result.exit_code == 1 and "FAIL" in result.output
