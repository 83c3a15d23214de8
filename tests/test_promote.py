from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gestures.artifact import load_model
from gestures.data import decode, discover
from gestures.evaluate import evaluate, score
from gestures.split import load_split
from hpo import service
from hpo.cli import app
from hpo.promote import promote
from hpo.run import RunConfig, run
from hpo.service import StudyError
from hpo.studyfile import load_study_file

from .test_service import _write_study

runner = CliRunner()


@pytest.fixture(scope="module")
def small_split(tmp_path_factory, clean_data) -> Path:
    from gestures.sanity import few_hands
    from gestures.split import SplitConfig, split_dataset

    split, _ = split_dataset(few_hands(clean_data, 16 * 25), SplitConfig(val=0.25, test=0.2))
    path = tmp_path_factory.mktemp("split") / "split.csv"
    split.save(path)
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, data_root, small_split) -> tuple[str, Path]:
    """A finished two-trial study on SQLite."""
    tmp = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{tmp / 'hpo.db'}"
    spec = load_study_file(_write_study(tmp, data_root, small_split, "tiny", n_trials=2))
    service.create_study(spec, url)
    service.run_worker("tiny", url)
    return url, tmp


@pytest.fixture(scope="module")
def promoted(tuned):
    url, tmp = tuned
    return promote("tiny", url, tmp / "report")


def test_report_files_and_numbers(promoted, small_split, data_root):
    out = promoted.out
    for name in ("report.md", "report.json", "predictions.csv", "model.pt", "confusion.png",
                 "per_class.png", "curves.png", "history.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    # Independent recomputation from the saved predictions.
    test_paths = load_split(small_split).paths("test")
    assert sorted(r["path"] for r in rows) == sorted(test_paths)
    accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    assert report["test"]["accuracy"] == pytest.approx(accuracy)
    assert report["test"]["n"] == len(rows)
    for letter, value in report["test"]["per_class"].items():
        mine = [r["label"] == r["predicted"] for r in rows if r["label"] == letter]
        assert value == pytest.approx(sum(mine) / len(mine))
    lo, hi = report["test"]["ci95"]
    assert lo <= accuracy <= hi and report["test"]["ci_unit"] == "hand"
    assert report["promotion"]["clean"] is True
    md = (out / "report.md").read_text()
    assert f"{accuracy:.1%}" in md and "Not a clean test" not in md
    assert len(report["curves_of_trials"]) >= 2


def test_second_promote_is_refused_unless_forced(promoted, tuned):
    url, tmp = tuned
    with pytest.raises(StudyError, match="--force"):
        promote("tiny", url, tmp / "again")
    assert not (tmp / "again").exists()
    forced = promote("tiny", url, tmp / "forced", force=True)
    assert forced.report["promotion"]["clean"] is False
    assert "Not a clean test" in (tmp / "forced" / "report.md").read_text()
    status = service.study_status("tiny", url)
    assert status.promotion is not None and status.promotion["clean"] is False


def test_model_file_round_trip(promoted, small_split, real_data):
    saved = load_model(promoted.model_file)
    assert saved.classes == list("ABCDEFGHI")
    ev = evaluate(saved, real_data, load_split(small_split).paths("test"))
    assert ev.accuracy == pytest.approx(promoted.report["test"]["accuracy"])


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, data_root, small_split) -> Path:
    """A new user's photos: 3 per letter from test hands, plus a corrupt file."""
    root = tmp_path_factory.mktemp("user")
    test = load_split(small_split).paths("test")
    for letter in "ABCDEFGHI":
        (root / letter).mkdir()
        for path in [p for p in test if p.startswith(f"{letter}/")][:3]:
            shutil.copy(data_root / path, root / path)
    (root / "C" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_evaluate_cli_skips_corrupt_file(promoted, user_folder):
    result = runner.invoke(app, ["evaluate", str(promoted.model_file), str(user_folder),
                                 "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["n"] == 27
    assert set(payload["per_class"]) == set("ABCDEFGHI")
    assert list(payload["unreadable"]) == ["C/broken.jpg"]
    assert 0.0 <= payload["accuracy"] <= 1.0


def test_predict_cli_reports_and_skips_unreadable(promoted, user_folder):
    good = sorted((user_folder / "A").iterdir())[0]
    bad = user_folder / "C" / "broken.jpg"
    result = runner.invoke(app, ["predict", str(promoted.model_file), str(good), str(bad),
                                 "--json", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [p["path"] for p in payload["predictions"]] == [str(good)]
    top = payload["predictions"][0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]
    assert sum(t["probability"] for t in top) <= 1.0 + 1e-6
    assert list(payload["unreadable"]) == [str(bad)]


def test_predict_applies_exif(promoted, real_data, data_root, tmp_path):
    """A sideways-stored photo scores exactly like an upright copy without the tag."""
    sample = next(s for s in real_data.samples if s.hand == "28")
    upright = tmp_path / "upright.png"
    Image.fromarray(decode(data_root / sample.path).pixels).save(upright)
    saved = load_model(promoted.model_file)
    tagged = score(saved, data_root, [sample.path]).probs
    plain = score(saved, tmp_path, ["upright.png"]).probs
    assert np.allclose(tagged, plain, atol=1e-5)


def test_main_job_end_to_end(tmp_path, data_root, small_split):
    """hpo run with two tiny studies: one folder holds the store, reports and model."""
    studies = []
    for name in ("scratch-a", "scratch-b"):
        studies.append(_write_study(tmp_path, data_root, small_split, name, n_trials=1))
    out = tmp_path / "run"
    small = tmp_path / "small"  # a small copy of the data keeps the run to seconds
    split_paths = set(load_split(small_split).paths("train") + load_split(small_split).paths(
        "val") + load_split(small_split).paths("test"))
    rows = ["path,label,hand"]
    for s in discover(data_root).samples:
        if s.path in split_paths:
            (small / s.label).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_root / s.path, small / s.path)
            rows.append(f"{s.path},{s.label},{s.hand}")
    (small / "hands.csv").write_text("\n".join(rows) + "\n")
    result = run(RunConfig(small, out, tuple(studies), profile="cpu"), log=lambda _: None)
    for name in ("hpo.db", "split.csv", "check.json", "exclude.txt", "model.pt", "report.md"):
        assert (out / name).is_file(), name
    assert {p.name for p in (out / "reports").iterdir()} == {"scratch-a", "scratch-b"}
    assert result.winner in {"scratch-a", "scratch-b"}
    summary = (out / "report.md").read_text()
    assert f"reports/{result.winner}/confusion.png" in summary
    assert load_model(out / "model.pt").classes == list("ABCDEFGHI")
