"""Loaders for the data the course ships (``data/``, installed as ``adaedu._data``).

Every load checks the file's sha256 against ``MANIFEST.json`` and explains what to do when a file
is missing or altered. Nothing is downloaded: the data comes with the package.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

REBUILD = (
    "rebuild it with `python scripts/build_data.py` from the repository root, or reinstall adaedu"
)


class DataFileError(RuntimeError):
    """A shipped data file is missing or does not match its sha256 in MANIFEST.json."""


def _data_dir() -> Path:
    return Path(str(resources.files("adaedu._data")))


def manifest() -> dict[str, dict]:
    """The data manifest: for each shipped file its provenance, licence and sha256."""
    path = _data_dir() / "MANIFEST.json"
    if not path.exists():
        raise DataFileError(f"{path} is missing; {REBUILD}")
    return json.loads(path.read_text(encoding="utf-8"))


def data_path(name: str) -> Path:
    """Path of a shipped data file, after checking its sha256 against the manifest."""
    entries = manifest()
    if name not in entries:
        raise DataFileError(
            f"name={name!r} is not a shipped data file; allowed values: {', '.join(sorted(entries))}"
        )
    path = _data_dir() / name
    if not path.exists():
        raise DataFileError(f"{path} is missing; {REBUILD}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entries[name]["sha256"]:
        raise DataFileError(
            f"{path} has sha256 {digest[:12]}..., the manifest says {entries[name]['sha256'][:12]}...: "
            f"the file was altered; {REBUILD}"
        )
    return path


# --- Peterson & Barney (1952) vowels -------------------------------------------------------

VOWELS = ("iy", "ih", "eh", "ae", "ah", "aa", "ao", "uh", "uw", "er")
#: The four vowels of Jacobs et al. (1991): [i] heed, [ɪ] hid, [ɑ] hod, [ʌ] hud.
JACOBS_VOWELS = ("iy", "ih", "aa", "ah")


@dataclass(frozen=True)
class Vowels:
    """Vowel tokens: formants in Hz, class index into ``vowels``, speaker id and speaker type."""

    formants: np.ndarray  # (n, 4) float: F0, F1, F2, F3 in Hz
    label: np.ndarray  # (n,) int: index into `vowels`
    speaker: np.ndarray  # (n,) int: 1..76
    speaker_type: np.ndarray  # (n,) str: 'm' man, 'w' woman, 'c' child
    vowels: tuple[str, ...]


def load_vowels(vowels: tuple[str, ...] = JACOBS_VOWELS) -> Vowels:
    """Load the Peterson & Barney (1952) formant table, keeping the given ``vowels`` only.

    Source: G. E. Peterson and H. L. Barney, J. Acoust. Soc. Am. 24(2):175-184 (1952),
    https://doi.org/10.1121/1.1906875, as shipped with Praat (see data/README.md).
    """
    unknown = [v for v in vowels if v not in VOWELS]
    if unknown or not vowels:
        raise ValueError(
            f"vowels={vowels!r}: unknown {unknown}; allowed values: {', '.join(VOWELS)}"
        )
    with data_path("peterson_barney_1952.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["vowel"] in vowels]
    return Vowels(
        formants=np.array([[float(r[k]) for k in ("f0", "f1", "f2", "f3")] for r in rows]),
        label=np.array([vowels.index(r["vowel"]) for r in rows]),
        speaker=np.array([int(r["speaker"]) for r in rows]),
        speaker_type=np.array([r["type"] for r in rows]),
        vowels=tuple(vowels),
    )


def split_by_speaker(
    speaker: np.ndarray, n_train: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) that put each speaker entirely on one side.

    Speakers are shuffled with ``seed``; the first ``n_train`` go to training. Splitting by token
    instead would let the model see the test speakers' vocal tracts during training.
    """
    speakers = np.unique(speaker)
    if not 0 < n_train < len(speakers):
        raise ValueError(
            f"n_train={n_train}; allowed values: 1..{len(speakers) - 1} (there are {len(speakers)} speakers)"
        )
    order = np.random.default_rng(seed).permutation(speakers)
    train = np.isin(speaker, order[:n_train])
    return train, ~train


# --- text, through HuggingFace datasets, offline ---------------------------------------------


def load_text_files(files: dict[str, str | list[str]]):
    """Load local text files as a HuggingFace ``DatasetDict`` (one split per key), offline.

    ``files`` maps a split name to one path or a list of paths; every line becomes a row.
    Nothing is fetched from the Hub: the files must exist, or the error names the missing one.
    """
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not isinstance(files, dict) or not files:
        raise ValueError("files must be a non-empty dict {split: path or [paths]}")
    for split, paths in files.items():
        for p in [paths] if isinstance(paths, str) else paths:
            if not Path(p).exists():
                raise DataFileError(f"files[{split!r}]: {p} does not exist")
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    return load_dataset("text", data_files=files)
