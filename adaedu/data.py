"""Loaders for the data the course ships (``data/``, installed as ``adaedu._data``).

Every load checks the file's sha256 against the ``MANIFEST.json`` of the file's folder and explains
what to do when a file is missing or altered. Nothing is downloaded: the data comes with the package.

- tables: the Peterson & Barney (1952) vowels (:func:`load_vowels`);
- text: three domains for the language-model chapters, ``verse`` (Shakespeare), ``code`` (the
  Python standard library) and ``arithmetic`` (``417+86=503``), each with a train and a
  validation split (:func:`load_text`, :func:`text_of`), a character tokenizer over all of it
  (:func:`char_tokenizer`) and random training windows labelled by domain (:class:`TextCorpus`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from adaedu.lm.tokenizers import BPETokenizer as BPETokenizer  # re-exported
from adaedu.lm.tokenizers import CharTokenizer

REBUILD = (
    "rebuild it with `python scripts/build_data.py` from the repository root, or reinstall adaedu"
)


#: The folders of data/, each with its own MANIFEST.json ("" is data/ itself).
DATA_FOLDERS = ("", "text")


class DataFileError(RuntimeError):
    """A shipped data file is missing or does not match its sha256 in MANIFEST.json."""


def _data_dir() -> Path:
    return Path(str(resources.files("adaedu._data")))


def manifest(folder: str = "") -> dict[str, dict]:
    """The manifest of a data folder (``""``: the top, ``"text"``): for each of its files the
    provenance, licence and sha256."""
    if folder not in DATA_FOLDERS:
        raise ValueError(
            f"folder={folder!r}; allowed values: {', '.join(repr(f) for f in DATA_FOLDERS)}"
        )
    path = _data_dir() / folder / "MANIFEST.json"
    if not path.exists():
        raise DataFileError(f"{path} is missing; {REBUILD}")
    return json.loads(path.read_text(encoding="utf-8"))


def data_path(name: str) -> Path:
    """Path of a shipped data file (``"peterson_barney_1952.csv"``, ``"text/code.train.txt"``),
    after checking its sha256 against the manifest of its folder."""
    folder, _, file = name.rpartition("/")
    if folder not in DATA_FOLDERS:
        raise DataFileError(
            f"name={name!r} is not a shipped data file: its folder {folder!r} is not one of "
            f"{', '.join(repr(f) for f in DATA_FOLDERS)}"
        )
    entries = manifest(folder)
    if file not in entries:
        allowed = ", ".join(f"{folder}/{n}" if folder else n for n in sorted(entries))
        raise DataFileError(f"name={name!r} is not a shipped data file; allowed values: {allowed}")
    path = _data_dir() / name
    if not path.exists():
        raise DataFileError(f"{path} is missing; {REBUILD}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entries[file]["sha256"]:
        raise DataFileError(
            f"{path} has sha256 {digest[:12]}..., the manifest says {entries[file]['sha256'][:12]}...: "
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
                raise DataFileError(
                    f"files[{split!r}]: {p} does not exist; every path must be an existing file"
                )
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    return load_dataset("text", data_files=files)


# --- text domains for the language-model chapters ---------------------------------------------

#: The text domains shipped in data/text/ (see data/README.md): Shakespeare, Python, sums.
TEXT_DOMAINS = ("verse", "code", "arithmetic")
TEXT_SPLITS = ("train", "validation")


def _check_domains(domains: str | Sequence[str]) -> tuple[str, ...]:
    """``domains`` as a tuple, or a ValueError naming the allowed values."""
    chosen = (domains,) if isinstance(domains, str) else tuple(domains)
    if not chosen or len(set(chosen)) < len(chosen) or not set(chosen) <= set(TEXT_DOMAINS):
        raise ValueError(
            f"domains={domains!r}; allowed values: one or more distinct names from "
            f"{', '.join(TEXT_DOMAINS)}"
        )
    return chosen


def _check_split(split: str) -> str:
    if split not in TEXT_SPLITS:
        raise ValueError(f"split={split!r}; allowed values: {', '.join(TEXT_SPLITS)}")
    return split


def text_path(domain: str, split: str) -> Path:
    """The sha256-checked path of ``data/text/<domain>.<split>.txt``."""
    if domain not in TEXT_DOMAINS:
        raise ValueError(f"domain={domain!r}; allowed values: {', '.join(TEXT_DOMAINS)}")
    return data_path(f"text/{domain}.{_check_split(split)}.txt")


def load_text(domains: str | Sequence[str] = TEXT_DOMAINS, split: str | None = "train"):
    """The text domains as a HuggingFace ``Dataset``: one row per line, columns ``text`` and
    ``domain``, the domains one after the other; ``split=None`` gives a ``DatasetDict`` with
    both splits. Read offline from the shipped files through :func:`load_text_files`.

    The validation split is the last tenth of the lines of every document (play, module) and
    never overlaps the train split (see data/README.md). ``ds.to_dict()`` gives the columns as
    lists at once (iterating ``ds["text"]`` row by row is much slower).
    """
    from datasets import DatasetDict, concatenate_datasets

    domains = _check_domains(domains)
    splits = TEXT_SPLITS if split is None else (_check_split(split),)
    raw = load_text_files({f"{d}_{s}": str(text_path(d, s)) for s in splits for d in domains})
    joined = {}
    for s in splits:
        parts = [raw[f"{d}_{s}"] for d in domains]
        parts = [
            p.add_column("domain", [d] * p.num_rows) for p, d in zip(parts, domains, strict=True)
        ]
        joined[s] = concatenate_datasets(parts)
    return joined[split] if split is not None else DatasetDict(joined)


def text_of(domain: str, split: str = "train") -> str:
    """The whole text of one domain and split as one string: its lines, each ending in a newline.

    The same text as ``load_text(domain, split)`` (rows joined by newlines), read directly.
    """
    return text_path(domain, split).read_text(encoding="utf-8")


def char_tokenizer() -> CharTokenizer:
    """The course's character tokenizer: its fixed vocabulary is every character that occurs in
    the shipped text (all domains, both splits), in code-point order after ``UNK`` (id 0), to
    which any other character is mapped."""
    return CharTokenizer(set().union(*(text_of(d, s) for d in TEXT_DOMAINS for s in TEXT_SPLITS)))


class TextBatch(NamedTuple):
    """Training windows: inputs ``x`` (B, T), next-token targets ``y`` (B, T) with
    ``y[:, t] = x[:, t + 1]`` in the text, and each window's ``domain`` (B,), an index into
    ``TextCorpus.domains``. All LongTensors."""

    x: torch.Tensor
    y: torch.Tensor
    domain: torch.Tensor


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class TextCorpus:
    """The token ids of one split of some text domains, and random windows drawn from them.

    Build it with :func:`text_corpus`. ``tokens[d]`` is the whole domain ``d`` as a 1-d
    LongTensor (its documents one after the other, as in the shipped file).
    """

    def __init__(self, tokens: dict[str, torch.Tensor], tokenizer: Tokenizer, split: str):
        _check_split(split)
        if not (isinstance(tokens, dict) and tokens) or not all(
            isinstance(t, torch.Tensor) and t.dim() == 1 for t in tokens.values()
        ):
            raise ValueError("tokens must be a non-empty dict {domain: 1-d tensor of token ids}")
        self.tokens = tokens
        self.tokenizer = tokenizer
        self.split = split
        self.domains: tuple[str, ...] = tuple(tokens)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{d}={len(t):,}" for d, t in self.tokens.items())
        return f"TextCorpus(split={self.split!r}, tokens: {sizes}; {self.tokenizer!r})"

    def batch(
        self,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        weights: Sequence[float] | None = None,
        device: torch.device | str | None = None,
    ) -> TextBatch:
        """``batch_size`` random windows of ``block_size`` tokens (plus the next token as target).

        Each window first draws its domain, uniformly (``weights=None``: every domain gets the
        same share of windows whatever its size) or in proportion to ``weights`` (one per
        domain; ``[len(t) for t in corpus.tokens.values()]`` samples the concatenated corpus
        uniformly), then a uniform start within that domain.
        """
        shortest = min(len(t) for t in self.tokens.values())
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; allowed values: an integer >= 1")
        if not isinstance(block_size, int) or not 1 <= block_size < shortest:
            raise ValueError(
                f"block_size={block_size!r}; allowed values: 1..{shortest - 1} "
                "(the shortest domain's length minus one)"
            )
        probs = torch.ones(len(self.domains)) if weights is None else torch.tensor(weights)
        if probs.shape != (len(self.domains),) or not (probs >= 0).all() or probs.sum() <= 0:
            raise ValueError(
                f"weights={weights!r}; allowed values: None or {len(self.domains)} non-negative "
                f"numbers (one per domain: {', '.join(self.domains)}), not all zero"
            )
        domain = torch.multinomial(
            probs.double(), batch_size, replacement=True, generator=generator
        )
        rows = []
        for d in domain.tolist():
            tokens = self.tokens[self.domains[d]]
            start = int(torch.randint(len(tokens) - block_size, (1,), generator=generator))
            rows.append(tokens[start : start + block_size + 1])
        window = torch.stack(rows)
        x, y = window[:, :-1], window[:, 1:]  # y[:, t] = x[:, t + 1]: predict the next token
        return TextBatch(x.to(device), y.to(device), domain.to(device))

    def batches(
        self,
        batch_size: int,
        block_size: int,
        seed: int = 0,
        weights: Sequence[float] | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[TextBatch]:
        """An endless, seeded stream of :meth:`batch` (an iterator for :func:`adaedu.train.train`)."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield self.batch(batch_size, block_size, generator, weights, device)


def text_corpus(
    domains: str | Sequence[str] = TEXT_DOMAINS,
    split: str = "train",
    tokenizer: Tokenizer | None = None,
) -> TextCorpus:
    """Tokenize the chosen domains of one split (default: :func:`char_tokenizer`)."""
    domains, split = _check_domains(domains), _check_split(split)
    tokenizer = tokenizer if tokenizer is not None else char_tokenizer()
    tokens = {
        d: torch.tensor(tokenizer.encode(text_of(d, split)), dtype=torch.long) for d in domains
    }
    return TextCorpus(tokens, tokenizer, split)


# --- sklearn's bundled digits -----------------------------------------------------------------


def load_digits_split(
    test_fraction: float, seed: int = 0, images: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's bundled digits (1,797 images of 8x8 pixels, values 0-16, no download), split
    stratified by class with ``seed``; pixels standardised with the training set's mean and std.

    Returns ``(x_train, y_train, x_test, y_test)``: images of shape (n, 8, 8) if ``images``, else
    flat (n, 64) rows; labels as int64.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r}; allowed values: 0 < fraction < 1")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images if images else digits.data,
        digits.target,
        test_size=test_fraction,
        stratify=digits.target,
        random_state=seed,
    )
    x_tr, x_te = (torch.tensor(a, dtype=torch.float32) for a in (x_tr, x_te))
    mean, std = x_tr.mean(), x_tr.std()
    return (
        (x_tr - mean) / std,
        torch.tensor(y_tr, dtype=torch.long),
        (x_te - mean) / std,
        torch.tensor(y_te, dtype=torch.long),
    )
