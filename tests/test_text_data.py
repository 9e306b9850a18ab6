"""The text domains in data/text/, their loaders, the tokenizers and the training windows."""

import fnmatch
import hashlib
import importlib.util
import os
import re
import shutil

import pytest
import torch

from adaedu import course, data
from adaedu.lm.tokenizers import BPETokenizer, CharTokenizer, merge_pair, pretokenize

SPLIT_FILES = {f"{d}.{s}.txt" for d in data.TEXT_DOMAINS for s in data.TEXT_SPLITS}


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_data", course.ROOT / "scripts" / "build_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def texts() -> dict[tuple[str, str], str]:
    return {(d, s): data.text_of(d, s) for d in data.TEXT_DOMAINS for s in data.TEXT_SPLITS}


# --- the files -----------------------------------------------------------------------------------


def test_text_manifest_covers_every_file_with_its_sha256():
    folder = data._data_dir() / "text"
    entries = data.manifest("text")
    assert set(entries) == {p.name for p in folder.iterdir()} - {"MANIFEST.json"}
    assert SPLIT_FILES | {"LICENSE-PSF.txt"} == set(entries)
    for name, meta in entries.items():
        raw = (folder / name).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == meta["sha256"], name
        assert meta["provenance"] and meta["licence"] and meta["title"], name
        if name in SPLIT_FILES:
            assert meta["bytes"] == len(raw) and meta["rows"] == raw.count(b"\n"), name
    assert "PSF" in entries["code.train.txt"]["licence"]
    assert (
        "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in (folder / "LICENSE-PSF.txt").read_text()
    )


def test_sizes_stay_small_and_every_domain_is_substantial():
    entries = data.manifest("text")
    assert sum(meta["bytes"] for meta in entries.values() if "bytes" in meta) < 4_000_000
    for domain in data.TEXT_DOMAINS:
        train = entries[f"{domain}.train.txt"]["bytes"]
        validation = entries[f"{domain}.validation.txt"]["bytes"]
        assert train > 400_000 and 0.07 < validation / (train + validation) < 0.13, domain


def test_package_data_globs_ship_the_text_files():
    pyproject = (course.ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib in 3.10
    globs = re.findall(r'"([^"]+)"', re.search(r'^"adaedu._data" = \[(.*)\]$', pyproject, re.M)[1])
    assert re.search(r'^packages = \[[^\]]*"adaedu.lm"', pyproject, re.M)
    for name in [*data.manifest("text"), "MANIFEST.json"]:
        assert any(fnmatch.fnmatch(f"text/{name}", g) for g in globs), name


def test_an_altered_text_file_is_refused(tmp_path, monkeypatch):
    shutil.copytree(data._data_dir(), tmp_path / "data")
    monkeypatch.setattr(data, "_data_dir", lambda: tmp_path / "data")
    path = tmp_path / "data" / "text" / "arithmetic.validation.txt"
    path.write_text(path.read_text().replace("=", "==", 1))
    with pytest.raises(data.DataFileError, match="altered.*build_data.py"):
        data.text_of("arithmetic", "validation")
    with pytest.raises(data.DataFileError, match="not a shipped data file"):
        data.data_path("text/poems.txt")
    with pytest.raises(data.DataFileError, match="folder 'images' is not one of"):
        data.data_path("images/cat.png")


# --- loading, splits -----------------------------------------------------------------------------


def test_every_domain_loads_offline_through_datasets(texts):
    ds = data.load_text(split=None)
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert set(ds) == set(data.TEXT_SPLITS)
    for split in data.TEXT_SPLITS:
        assert ds[split].column_names == ["text", "domain"]
        columns = ds[split].to_dict()  # fast; iterating ds[split]["text"] row by row is slow
        rows, domains = columns["text"], columns["domain"]
        for domain in data.TEXT_DOMAINS:
            lines = [r for r, d in zip(rows, domains, strict=True) if d == domain]
            assert "\n".join(lines) + "\n" == texts[domain, split], (domain, split)
    one = data.load_text("code", "validation")
    assert set(one["domain"]) == {"code"} and one.num_rows == texts["code", "validation"].count(
        "\n"
    )


def test_splits_are_disjoint(texts):
    train = set(texts["arithmetic", "train"].splitlines())
    validation = texts["arithmetic", "validation"].splitlines()
    assert len(train) == 45_000 and len(set(validation)) == len(validation) == 5_000
    assert not train & set(validation)
    generator = torch.Generator().manual_seed(0)
    for domain in ("verse", "code"):  # no validation passage occurs in the train text
        held_out = texts[domain, "validation"]
        starts = torch.randint(len(held_out) - 300, (40,), generator=generator).tolist()
        assert not any(held_out[i : i + 300] in texts[domain, "train"] for i in starts), domain


def test_split_rule_is_the_last_tenth_of_each_document():
    build = _build_script()
    lines = [f"line {i}" for i in range(25)]
    assert build.split_lines(lines) == (lines[:23], lines[23:])
    assert build.normalise("a  \n\n\n\nb\n\n", collapse_blank_lines=True) == ["a", "", "b"]


def test_arithmetic_domain_is_rebuilt_bit_for_bit(tmp_path, monkeypatch):
    build = _build_script()
    (tmp_path / "text").mkdir()
    monkeypatch.setattr(build, "DATA", tmp_path)
    build.build_arithmetic()
    for split in data.TEXT_SPLITS:
        name = f"text/arithmetic.{split}.txt"
        assert (tmp_path / name).read_bytes() == data.data_path(name).read_bytes(), split
    ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
    for line in build.arithmetic_lines(200, seed=1):
        a, op, b, answer = re.fullmatch(r"(\d+)([-+*])(\d+)=(-?\d+)", line).groups()
        assert ops[op](int(a), int(b)) == int(answer), line


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="domains=.*poetry.*allowed values: .*verse, code"):
        data.load_text(("verse", "poetry"))
    with pytest.raises(ValueError, match="domains=.*distinct"):
        data.text_corpus(("code", "code"))
    with pytest.raises(ValueError, match="domains=\\(\\).*allowed"):
        data.load_text(())
    with pytest.raises(ValueError, match="split='test'; allowed values: train, validation"):
        data.load_text(split="test")
    with pytest.raises(ValueError, match="domain='prose'; allowed values"):
        data.text_of("prose")
    with pytest.raises(ValueError, match="split='valid'"):
        data.text_corpus(split="valid")


# --- tokenizers ----------------------------------------------------------------------------------


def test_char_tokenizer_has_a_fixed_vocabulary_and_round_trips(texts):
    tok = data.char_tokenizer()
    everything = "".join(texts.values())
    assert tok.itos == [CharTokenizer.UNK, *sorted(set(everything))]
    assert tok.vocab_size == 97  # printable ASCII, newline, UNK
    for text in texts.values():
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("a\u00e9b") == [tok.stoi["a"], 0, tok.stoi["b"]]  # unknown -> 0 (UNK)
    assert tok.decode(tok.encode("caf\u00e9")) == "caf\ufffd"
    assert tok.decode(torch.tensor(tok.encode("x=1"))) == "x=1"


def test_pretokens_cover_the_text(texts):
    for text in texts.values():
        assert "".join(pretokenize(text)) == text
    assert pretokenize("417+86=503\n    return x") == [
        "417", "+", "86", "=", "503", "\n   ", " return", " x",
    ]  # fmt: skip


def test_bpe_merges_the_most_frequent_pair_first():
    bpe = BPETokenizer.train("aaabdaaabac", vocab_size=8)
    # aa occurs 4 times (overlapping); then ab and Za tie at 2: the pair of smaller ids wins
    assert [bpe.vocab[bpe.base.vocab_size + r] for r in range(3)] == ["aa", "ab", "aaab"]
    assert bpe.encode("aaabdaaabac") == [7, 4, 7, 1, 3]  # aaab d aaab a c
    assert merge_pair([1, 1, 1, 2], (1, 1), 9) == [9, 1, 2]


@pytest.fixture(scope="module")
def bpe(texts) -> BPETokenizer:
    sample = "".join(texts[d, "train"][:150_000] for d in data.TEXT_DOMAINS)
    return BPETokenizer.train(sample, vocab_size=600, base=data.char_tokenizer())


def test_bpe_is_deterministic_compresses_and_round_trips(bpe, texts):
    sample = "".join(texts[d, "train"][:150_000] for d in data.TEXT_DOMAINS)
    again = BPETokenizer.train(sample, vocab_size=600, base=data.char_tokenizer())
    assert again.merges == bpe.merges and bpe.vocab_size == 600
    assert len(set(bpe.vocab)) == 600  # every merge makes a new string
    for domain in data.TEXT_DOMAINS:
        held_out = texts[domain, "validation"][:20_000]
        ids = bpe.encode(held_out)
        assert bpe.decode(ids) == held_out
        assert len(ids) < 0.75 * len(held_out), domain  # coarser than characters
        assert max(ids) < bpe.vocab_size
    assert bpe.decode(bpe.encode("caf\u00e9 au lait")) == "caf\ufffd au lait"
    with pytest.raises(ValueError, match="vocab_size=50; allowed values: .*>= .*97"):
        BPETokenizer.train(sample[:1000], vocab_size=50, base=data.char_tokenizer())


# --- training windows ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> data.TextCorpus:
    return data.text_corpus(split="validation")


def test_batches_have_the_right_shape_and_come_from_their_domain(corpus, texts):
    batch = corpus.batch(12, 64, torch.Generator().manual_seed(1))
    assert batch.x.shape == batch.y.shape == (12, 64) and batch.domain.shape == (12,)
    assert batch.x.dtype == batch.y.dtype == batch.domain.dtype == torch.long
    assert torch.equal(batch.x[:, 1:], batch.y[:, :-1])  # y is x shifted by one token
    for x, y, d in zip(batch.x, batch.y, batch.domain.tolist(), strict=True):
        window = corpus.tokenizer.decode(x) + corpus.tokenizer.decode(y[-1:])
        assert window in texts[corpus.domains[d], "validation"]
    again = corpus.batch(12, 64, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))


def test_domains_are_drawn_uniformly_or_by_weight(corpus):
    g = torch.Generator().manual_seed(0)
    shares = torch.bincount(corpus.batch(3000, 1, g).domain, minlength=3) / 3000
    assert (shares - 1 / 3).abs().max() < 0.04
    only = corpus.batch(50, 8, g, weights=[0, 0, 1]).domain
    assert (only == corpus.domains.index("arithmetic")).all()
    stream = corpus.batches(4, 8, seed=3)
    assert next(stream).x.shape == (4, 8)
    code = data.text_corpus("code", "validation")
    assert code.domains == ("code",) and (code.batch(5, 8, g).domain == 0).all()


def test_bad_batch_arguments_are_named(corpus):
    with pytest.raises(ValueError, match="batch_size=0; allowed values"):
        corpus.batch(0, 8)
    with pytest.raises(ValueError, match="block_size=10000000; allowed values: 1..\\d+"):
        corpus.batch(2, 10_000_000)
    with pytest.raises(ValueError, match="weights=\\[1, 1\\]; allowed values: .*one per domain"):
        corpus.batch(2, 8, weights=[1, 1])
    with pytest.raises(ValueError, match="weights=.*not all zero"):
        corpus.batch(2, 8, weights=[0, 0, 0])
