import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from adaedu import data


def test_manifest_matches_every_shipped_file():
    folder = data._data_dir()
    entries = data.manifest()
    assert entries, "MANIFEST.json lists no file"
    for name, meta in entries.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == meta["sha256"], name
        assert meta["provenance"] and meta["licence"], f"{name} lacks provenance or licence"
    shipped = {p.name for p in folder.iterdir() if p.suffix == ".csv"}
    assert shipped == set(entries), "a data file is not in the manifest (or the reverse)"


def test_peterson_barney_table_is_complete():
    v = data.load_vowels(data.VOWELS)
    assert v.formants.shape == (1520, 4)
    assert len(np.unique(v.speaker)) == 76
    assert sorted(np.unique(v.speaker_type)) == ["c", "m", "w"]
    assert np.bincount(v.label).tolist() == [152] * 10  # 76 speakers x 2 repetitions
    assert (
        v.formants[:, 1] <= v.formants[:, 2]
    ).all()  # F1 <= F2 (5 back-vowel tokens have F1 == F2)


def test_jacobs_vowels_and_speaker_split():
    v = data.load_vowels()
    assert v.vowels == ("iy", "ih", "aa", "ah") and v.formants.shape == (608, 4)
    train, test = data.split_by_speaker(v.speaker, n_train=50, seed=0)
    assert not set(v.speaker[train]) & set(v.speaker[test])
    assert len(set(v.speaker[train])) == 50 and (train ^ test).all()
    again, _ = data.split_by_speaker(v.speaker, n_train=50, seed=0)
    assert (again == train).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="vowels=.*allowed values"):
        data.load_vowels(("iy", "xx"))
    with pytest.raises(ValueError, match="n_train=0.*1..75"):
        data.split_by_speaker(np.arange(76), n_train=0)
    with pytest.raises(data.DataFileError, match="not a shipped data file"):
        data.data_path("mnist.csv")


@pytest.fixture
def copied_data(tmp_path, monkeypatch):
    for p in data._data_dir().iterdir():
        if p.is_file():
            shutil.copy(p, tmp_path / p.name)
    monkeypatch.setattr(data, "_data_dir", lambda: tmp_path)
    return tmp_path


def test_an_altered_file_is_refused(copied_data):
    path = copied_data / "peterson_barney_1952.csv"
    path.write_text(path.read_text().replace("2280", "2281", 1))
    with pytest.raises(data.DataFileError, match="altered.*build_data.py"):
        data.load_vowels()


def test_a_missing_file_says_how_to_get_it(copied_data):
    (copied_data / "peterson_barney_1952.csv").unlink()
    with pytest.raises(data.DataFileError, match="missing.*build_data.py"):
        data.load_vowels()
    (copied_data / "MANIFEST.json").unlink()
    with pytest.raises(data.DataFileError, match="MANIFEST.json is missing"):
        data.manifest()


def test_text_files_load_offline_through_datasets(tmp_path):
    (tmp_path / "a.txt").write_text("to be\nor not\n")
    ds = data.load_text_files({"train": str(tmp_path / "a.txt")})
    assert ds["train"]["text"] == ["to be", "or not"]
    with pytest.raises(data.DataFileError, match="files\\['test'\\].*does not exist"):
        data.load_text_files({"test": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="non-empty dict"):
        data.load_text_files({})


def test_manifest_is_what_the_build_script_writes():
    text = (data._data_dir() / "MANIFEST.json").read_text()
    assert json.loads(text)["peterson_barney_1952.csv"]["rows"] == 1520


def test_digits_split_is_stratified_standardised_and_checked():
    x_tr, y_tr, x_te, y_te = data.load_digits_split(0.25, seed=0, images=True)
    assert x_tr.shape[1:] == (8, 8) and len(x_tr) + len(x_te) == 1797
    assert abs(x_tr.mean().item()) < 1e-5 and abs(x_tr.std().item() - 1) < 1e-4
    assert y_tr.dtype == torch.long and set(y_te.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="test_fraction=1.0"):
        data.load_digits_split(1.0)
