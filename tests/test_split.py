from __future__ import annotations

import shutil
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from gestures.checks import inspect_all
from gestures.data import DataSet, Sample, discover
from gestures.split import (
    Split,
    SplitConfig,
    SplitError,
    load_split,
    make_split,
    split_dataset,
    verify,
)
from hpo.cli import app


@pytest.fixture(scope="module")
def infos(clean_data):
    return inspect_all(clean_data)


@pytest.fixture(scope="module")
def split(clean_data, infos) -> Split:
    return make_split(clean_data, SplitConfig(seed=0), infos)


def test_split_is_hand_disjoint_and_covers_every_letter(split, clean_data):
    sides = defaultdict(set)
    for sample, name in split.rows:
        sides[sample.hand].add(name)
    assert all(len(s) == 1 for s in sides.values())
    for name in ("train", "val", "test"):
        assert {s.label for s, n in split.rows if n == name} == set(clean_data.classes)
    summary = split.summary()
    assert summary["train"]["images"] + summary["val"]["images"] + summary["test"]["images"] \
        == len(clean_data.samples)
    assert 0.10 < summary["test"]["images"] / len(clean_data.samples) < 0.20


def test_split_is_deterministic(split, clean_data, infos):
    again = make_split(clean_data, SplitConfig(seed=0), infos)
    assert again.to_csv() == split.to_csv()
    other = make_split(clean_data, SplitConfig(seed=1), infos)
    assert other.to_csv() != split.to_csv()


def test_cli_split_byte_identical(tmp_path, data_root):
    runner = CliRunner()
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        result = runner.invoke(app, ["data", "split", str(data_root), "--out", str(out),
                                     "--exclude-problems"])
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert outs[0].read_text().splitlines()[0] == "path,label,hand,split"
    assert "A/28_A_2.jpg" not in outs[0].read_text()  # the label conflict is left out
    # Without --exclude-problems the label conflict makes it refuse.
    result = runner.invoke(app, ["data", "split", str(data_root), "--out",
                                 str(tmp_path / "c.csv")])
    assert result.exit_code != 0 and not (tmp_path / "c.csv").exists()


def test_verify_rejects_crossing_hand(split):
    rows = list(split.rows)
    hand = next(s.hand for s, n in rows if n == "test")
    i = next(i for i, (s, n) in enumerate(rows) if s.hand == hand)
    rows[i] = (rows[i][0], "train")
    with pytest.raises(SplitError, match=f"hand {hand}"):
        verify(Split(rows), infos=None)


def test_load_split_reverifies(tmp_path, split):
    path = tmp_path / "split.csv"
    split.save(path)
    assert load_split(path).to_csv() == split.to_csv()
    text = path.read_text().replace(",val\n", ",test\n", 1)  # move one val image to test
    path.write_text(text)
    with pytest.raises(SplitError):
        load_split(path)


def test_identical_images_across_hands_stay_together(tmp_path, data_root):
    """Copy one photo of hand A into another hand: both hands must land on one side."""
    root = tmp_path / "d"
    rows = ["path,label,hand"]
    for letter in "ABC":
        (root / letter).mkdir(parents=True)
        for hand in range(8):
            src = sorted((data_root / letter).iterdir())[hand * 3]
            shutil.copy(src, root / letter / f"h{hand}.jpg")
            rows.append(f"{letter}/h{hand}.jpg,{letter},{hand}")
    shutil.copy(root / "A" / "h0.jpg", root / "A" / "dup.jpg")
    rows.append("A/dup.jpg,A,5")
    (root / "hands.csv").write_text("\n".join(rows) + "\n")
    data = discover(root)
    for seed in range(5):
        split, _ = split_dataset(data, SplitConfig(val=0.25, test=0.25, seed=seed))
        side = {s.hand: n for s, n in split.rows}
        assert side["0"] == side["5"]


def test_refuses_without_hand_ids_unless_allowed(clean_data):
    no_hands = DataSet(clean_data.root, clean_data.classes,
                       [Sample(s.path, s.label, None) for s in clean_data.samples[::4]])
    with pytest.raises(SplitError, match="--allow-image-split"):
        make_split(no_hands, SplitConfig())
    with pytest.warns(UserWarning, match="inflated"):
        split = make_split(no_hands, SplitConfig(allow_image_split=True))
    assert set(split.names()) == {"train", "val", "test"}


def test_k_folds_by_hand(clean_data, infos):
    split = make_split(clean_data, SplitConfig(folds=4), infos)
    assert split.names() == ["test", "fold0", "fold1", "fold2", "fold3"]
    train, val = split.train_val(fold=2)
    train_hands = {s.hand for s, n in split.rows if s.path in set(train)}
    val_hands = {s.hand for s, n in split.rows if s.path in set(val)}
    assert train_hands.isdisjoint(val_hands) and train and val


def test_bad_fractions_are_clear_errors():
    with pytest.raises(ValueError, match=r"--test 0\.7"):
        SplitConfig(test=0.7)
