"""Two tokenizers, in plain Python: characters, and byte-pair encoding (BPE) over characters.

BPE: P. Gage, *A New Algorithm for Data Compression*, C Users Journal 12(2), 1994; for words:
R. Sennrich, B. Haddow, A. Birch, *Neural Machine Translation of Rare Words with Subword Units*,
ACL 2016 (arXiv:1508.07909), Algorithm 1. Start from single characters; repeatedly replace the
most frequent adjacent pair of symbols by a new symbol; the list of merges *is* the tokenizer.
As in GPT-2 (Radford et al., 2019), the text is first cut into pre-tokens (words with their
leading space, digit runs, punctuation runs, whitespace), and merges never cross them.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise
from numbers import Integral

#: Pre-tokens: letters, digits or punctuation with an optional leading space; whitespace runs
#: (all but their last space, which goes to the next word). Every character is matched.
PRETOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


def pretokenize(text: str) -> list[str]:
    """Cut ``text`` into pre-tokens; ``"".join(pretokenize(text)) == text``."""
    if not isinstance(text, str):
        raise TypeError(f"text is a {type(text).__name__}; allowed values: a str")
    return PRETOKEN.findall(text)


class CharTokenizer:
    """One id per character of a fixed vocabulary; id 0 stands for every unknown character.

    ``encode`` maps a character outside the vocabulary to id 0 (``UNK``, which ``decode`` writes
    as U+FFFD "�"), so ``decode(encode(s)) == s`` exactly when every character of ``s`` is in
    the vocabulary. The other ids are the vocabulary's characters in sorted (code point) order.
    """

    UNK = "\ufffd"

    def __init__(self, chars: Iterable[str]):
        chars = (set(chars) if isinstance(chars, Iterable) else set()) - {self.UNK}
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be a non-empty iterable of single characters")
        chars = sorted(chars)
        self.itos: list[str] = [self.UNK, *chars]  # id -> character
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}  # character -> id

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the set of characters of ``text``."""
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, 0) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def merge_pair(symbols: Sequence[int], pair: tuple[int, int], new: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``symbols`` (left to right) by the symbol ``new``."""
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise ValueError(f"pair={pair!r}; allowed values: a tuple of two symbols (a, b)")
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-pair encoding over the characters of a :class:`CharTokenizer`.

    Ids ``0 .. base.vocab_size - 1`` are the base characters; id ``base.vocab_size + r`` is the
    symbol made by merge number ``r``. Train it with :meth:`train`; it is deterministic (ties
    between equally frequent pairs go to the pair with the smaller ids).
    """

    def __init__(self, base: CharTokenizer, merges: Sequence[tuple[int, int]]):
        if not isinstance(base, CharTokenizer):
            raise TypeError(f"base is a {type(base).__name__}; allowed values: a CharTokenizer")
        self.base = base
        self.merges = [tuple(m) for m in merges]
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.vocab: list[str] = list(base.itos)  # id -> the string it stands for
        for r, pair in enumerate(self.merges):
            n = len(self.vocab)  # merge r may join base characters and the symbols of merges < r
            if len(pair) != 2 or not all(isinstance(i, Integral) and 0 <= i < n for i in pair):
                raise ValueError(
                    f"merges[{r}]={pair!r}; allowed values: pairs of ids in 0..{n - 1}"
                )
            self.vocab.append(self.vocab[pair[0]] + self.vocab[pair[1]])
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int, base: CharTokenizer | None = None) -> BPETokenizer:
        """Learn ``vocab_size - base.vocab_size`` merges from ``text`` (Sennrich et al., Alg. 1).

        Pair counts are kept up to date incrementally: after a merge only the words that
        contained the pair are recounted, and a heap finds the next most frequent pair.
        Stops early if no pair is left (every pre-token is one symbol).
        """
        base = base if base is not None else CharTokenizer.from_text(text)
        if not isinstance(vocab_size, int) or vocab_size < base.vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size!r}; allowed values: an integer >= the base vocabulary "
                f"size ({base.vocab_size})"
            )
        word_counts = Counter(pretokenize(text))
        words = [base.encode(w) for w in word_counts]  # each distinct pre-token as symbols
        counts = list(word_counts.values())
        pairs: Counter[tuple[int, int]] = Counter()  # pair -> occurrences in the text
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words holding it
        for i, symbols in enumerate(words):
            for pair in pairwise(symbols):
                pairs[pair] += counts[i]
                where[pair].add(i)
        heap = [(-n, pair) for pair, n in pairs.items()]  # most frequent first, then smallest
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        while base.vocab_size + len(merges) < vocab_size and heap:
            neg_count, best = heapq.heappop(heap)
            if pairs.get(best, 0) != -neg_count:
                continue  # a stale entry: the count changed since it was pushed
            new = base.vocab_size + len(merges)
            merges.append(best)
            changed = set()
            for i in sorted(where.pop(best)):
                old = words[i]
                for pair in pairwise(old):  # take the word's pairs out ...
                    pairs[pair] -= counts[i]
                    changed.add(pair)
                words[i] = merge_pair(old, best, new)
                for pair in pairwise(words[i]):  # ... and put the merged ones back
                    pairs[pair] += counts[i]
                    where[pair].add(i)
                    changed.add(pair)
            for pair in changed:
                if pairs[pair] > 0:
                    heapq.heappush(heap, (-pairs[pair], pair))
                else:
                    del pairs[pair]
        return cls(base, merges)

    def _encode_word(self, word: str) -> list[int]:
        """Apply the merges to one pre-token, lowest rank (earliest learnt) first."""
        if word not in self._cache:
            symbols = self.base.encode(word)
            while len(symbols) > 1:
                rank = min(self.ranks.get(p, len(self.merges)) for p in pairwise(symbols))
                if rank == len(self.merges):
                    break  # no learnt merge applies
                symbols = merge_pair(symbols, self.merges[rank], self.base.vocab_size + rank)
            self._cache[word] = symbols
        return self._cache[word]

    def encode(self, text: str) -> list[int]:
        return [i for word in pretokenize(text) for i in self._encode_word(word)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, base={self.base!r})"
