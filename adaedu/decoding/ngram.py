"""Count-based n-gram models with :class:`adaedu.lm.TinyLM`'s decoding interface.

An order-n model predicts ``p(x_t | x_{t-n+1} .. x_{t-1}) = softmax(table[x_{t-n+1}, .., x_{t-1}])``
from a dense table of logits (``V ** n`` entries: orders 2 and 3 for a character vocabulary).
Two uses in the course:

- the exactness test of speculative sampling (:mod:`adaedu.decoding.speculative`) needs models
  whose distribution over generated sequences can be written down: :class:`BigramLM`;
- a draft for speculative sampling that costs a table lookup instead of a network, built from
  the training text by :meth:`NGramLM.from_tokens` (in the spirit of drafts taken from text
  statistics rather than a draft model, e.g. Z. He, Z. Zhong, T. Cai, J. D. Lee, D. He, *REST:
  Retrieval-Based Speculative Decoding*, NAACL 2024, arXiv:2311.08252, which drafts from a
  datastore of text).

Smoothing (:meth:`NGramLM.from_tokens`): each order backs off to the one below through a
Dirichlet prior of strength ``k`` centred on it (D. J. C. MacKay and L. C. B. Peto, *A
Hierarchical Dirichlet Language Model*, Natural Language Engineering 1995, eq. for the
predictive distribution): ``p(c | h) = (N(h, c) + k p(c | h')) / (N(h) + k)``, with ``h'`` the
history without its oldest token and ``p(c) = (N(c) + 1) / (N + V)`` at the bottom.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import torch
from torch import Tensor, nn


class TokenCache:
    """The cache of an n-gram model: the tokens seen so far (B, length), so that a call with only
    the new tokens still sees their predecessors. ``truncate(n)`` rolls back like
    :meth:`adaedu.lm.KVCache.truncate`."""

    def __init__(self) -> None:
        self.tokens: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]

    def truncate(self, n: int) -> None:
        if not isinstance(n, int) or not 0 <= n <= self.length:
            raise ValueError(f"n={n!r}; allowed values: 0..{self.length} (the cache length)")
        self.tokens = None if n == 0 or self.tokens is None else self.tokens[:, :n]


class NGramLM(nn.Module):
    """An order-n model ``p(x_t | previous n - 1 tokens) = softmax(logits[previous tokens])``.

    ``logits``: a tensor with n equal dimensions V (the last one is the next token). Positions
    with fewer than n - 1 earlier tokens see token ``pad`` in the missing places.
    """

    def __init__(self, logits: Tensor, block_size: int = 1024, pad: int = 0):
        super().__init__()
        v = logits.shape[-1] if logits.dim() else 0
        if logits.dim() < 2 or any(s != v for s in logits.shape):
            raise ValueError(
                f"logits of shape {tuple(logits.shape)}; allowed: (V, V), (V, V, V), ... "
                "(order >= 2, every dimension the vocabulary size)"
            )
        if not 0 <= pad < v:
            raise ValueError(f"pad={pad!r}; allowed values: 0..{v - 1}")
        self.order, self.pad = logits.dim(), pad
        self.table = nn.Parameter(logits.float().clone(), requires_grad=False)
        self.config = SimpleNamespace(vocab_size=v, block_size=block_size)

    @classmethod
    def from_probs(cls, probs: Tensor, block_size: int = 1024) -> NGramLM:
        """The model whose next-token distributions are ``probs[h]`` (last dimension sums to 1)."""
        return cls(probs.clamp(min=1e-30).log(), block_size)

    @classmethod
    def from_tokens(
        cls,
        sequences: Iterable[Tensor],
        vocab_size: int,
        order: int,
        k: float = 2.0,
        block_size: int = 1024,
    ) -> NGramLM:
        """Counts of the n-grams of ``sequences`` (1-d token tensors), smoothed by the
        hierarchical Dirichlet prior of strength ``k`` (module docstring)."""
        if not isinstance(order, int) or not 2 <= order <= 3:
            raise ValueError(f"order={order!r}; allowed values: 2 or 3 (a dense V**order table)")
        if not k > 0:
            raise ValueError(f"k={k!r}; allowed values: a number > 0")
        v = vocab_size
        counts = [torch.zeros((v,) * (n + 1), dtype=torch.float64) for n in range(order)]
        for seq in sequences:
            seq = seq.long().flatten()
            for n in range(order):  # N(h, c) for histories of n tokens
                if len(seq) > n:
                    flat = torch.zeros(len(seq) - n, dtype=torch.long)
                    for j in range(n + 1):
                        flat = flat * v + seq[j : len(seq) - n + j]
                    counts[n] += torch.bincount(flat, minlength=v ** (n + 1)).reshape(
                        counts[n].shape
                    )
        probs = (counts[0] + 1) / (counts[0].sum() + v)  # p(c) = (N(c) + 1) / (N + V)
        for n in range(1, order):  # p(c | h) = (N(h, c) + k p(c | h')) / (N(h) + k)
            probs = (counts[n] + k * probs) / (counts[n].sum(-1, keepdim=True) + k)
        return cls.from_probs(probs.float(), block_size)

    def new_cache(self) -> TokenCache:
        return TokenCache()

    def forward(self, idx: Tensor, cache: TokenCache | None = None) -> SimpleNamespace:
        """Logits (B, T, V) for the tokens ``idx`` (B, T) after those in ``cache``."""
        v = self.config.vocab_size
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.is_floating_point():
            shape = tuple(idx.shape) if isinstance(idx, Tensor) else type(idx).__name__
            raise ValueError(f"idx has shape {shape}; allowed values: integer token ids (B, T)")
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < v):
            raise ValueError(
                f"idx holds token ids {int(idx.min())}..{int(idx.max())}; allowed values: "
                f"0..{v - 1} (vocab_size={v})"
            )
        past = cache.tokens if cache is not None and cache.tokens is not None else idx[:, :0]
        if past.shape[1] + idx.shape[1] > self.config.block_size:
            raise ValueError(f"more than block_size={self.config.block_size} positions")
        full = torch.cat([past, idx], dim=1)
        if cache is not None:
            cache.tokens = full
        n = self.order - 1  # the context of a position: itself and the n - 1 tokens before it
        padded = torch.cat([full.new_full((full.shape[0], n - 1), self.pad), full], dim=1)
        windows = padded[:, -(idx.shape[1] + n - 1) :].unfold(
            1, n, 1
        )  # (B, T, n): x_{t-n+1} .. x_t for each position t
        return SimpleNamespace(logits=self.table[windows.unbind(-1)])

    def probs(self) -> Tensor:
        """The table of next-token distributions, ``(V,) * order``."""
        return torch.softmax(self.table, dim=-1)


class BigramLM(NGramLM):
    """A bigram model ``p(x_{t+1} | x_t) = softmax(table[x_t])``: the order-2 :class:`NGramLM`,
    small enough that the exact distribution of generated sequences can be written down."""

    def __init__(self, logits: Tensor, block_size: int = 1024):
        if logits.dim() != 2:
            raise ValueError(f"logits of shape {tuple(logits.shape)}; allowed: (V, V)")
        super().__init__(logits, block_size)
