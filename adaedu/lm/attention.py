"""Causal multi-head self-attention with rotary positions and a key-value cache.

Attention: A. Vaswani et al., *Attention Is All You Need*, NeurIPS 2017 (arXiv:1706.03762),
eq. 1 ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`` and sec. 3.2.2 (multi-head); the
causal mask lets position m attend to positions <= m only (decoder, sec. 3.2.3). Positions
enter through RoPE (:mod:`adaedu.lm.rope`) applied to queries and keys.

Incremental decoding: the keys and values of past tokens never change (the mask hides the
future from them), so a :class:`KVCache` keeps them. Decoding feeds the prompt once ("prefill"),
then one new token at a time, each attending to the cached keys and values. Shapes: B batch,
H heads, T new tokens, S = cached + new tokens, D = d_model, Dh = D / H.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from adaedu.checks import check_int
from adaedu.lm.rope import RotaryEmbedding


class KVCache:
    """Keys and values of every layer for the tokens seen so far.

    ``keys[l]`` and ``values[l]`` are (B, H, length, Dh), or None before the first token.
    :class:`adaedu.lm.TinyLM` appends to it in ``forward(idx, cache=cache)``. ``truncate(n)``
    forgets everything after the first n positions (speculative sampling rolls back rejected
    draft tokens this way); ``reorder(index)`` keeps, repeats or permutes batch rows (beam search).
    Every row of the batch has the same length.
    """

    def __init__(self, n_layers: int):
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers={n_layers!r}; allowed values: an integer >= 1")
        self.keys: list[Tensor | None] = [None] * n_layers
        self.values: list[Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """Number of positions cached (those of the last layer, which is updated last)."""
        k = self.keys[-1]
        return 0 if k is None else k.shape[2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new tokens' ``k, v`` (B, H, T, Dh) to ``layer``; return all of them."""
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` positions: roll back to the state after n tokens."""
        if not isinstance(n, int) or not 0 <= n <= self.length:
            raise ValueError(f"n={n!r}; allowed values: 0..{self.length} (the cache length)")
        self.keys = [None if k is None or n == 0 else k[:, :, :n] for k in self.keys]
        self.values = [None if v is None or n == 0 else v[:, :, :n] for v in self.values]

    def reorder(self, index: Tensor) -> None:
        """Replace the batch rows by ``rows[index]`` (``index``: 1-d LongTensor of row numbers)."""
        self.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, index) for v in self.values]

    def __repr__(self) -> str:
        return f"KVCache(n_layers={len(self.keys)}, length={self.length})"


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """(t, s) boolean mask for t new queries after s - t cached tokens: query i (at position
    s - t + i) may see key j iff j <= s - t + i."""
    check_int("s", s, 0)
    check_int("t", t, 0, s)  # the new queries are among the s positions
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE on queries and keys, and an optional cache."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_positions: int,
        rope_base: float = 10000.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(
                f"n_heads={n_heads}; allowed values: a divisor of d_model={d_model} that leaves "
                "an even head size (RoPE rotates pairs of features)"
            )
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # W^Q, W^K, W^V of all heads
        self.out = nn.Linear(d_model, d_model, bias=False)  # W^O
        self.rotary = RotaryEmbedding(self.head_dim, max_positions, rope_base)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, start: int = 0, cache: KVCache | None = None, layer: int = 0
    ) -> Tensor:
        """``x`` (B, T, D): the tokens at positions ``start .. start + T - 1``. With a ``cache``
        holding the ``start`` earlier positions of ``layer``, they attend to those too."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.rotary(q, start), self.rotary(k, start)  # rotate by position (RoPE)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, S, Dh): positions 0 .. start + T - 1
        s = k.shape[2]
        if s != start + t:
            raise ValueError(f"start={start} but the cache holds {s - t} earlier positions")
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # Q K^T / sqrt(d_k)
        scores = scores.masked_fill(~causal_mask(t, s, x.device), float("-inf"))  # no future
        weights = self.dropout(scores.softmax(dim=-1))  # softmax(Q K^T / sqrt(d_k)), eq. 1
        heads = weights @ v  # eq. 1: ... V, (B, H, T, Dh)
        return self.out(heads.transpose(1, 2).reshape(b, t, d))  # Concat(heads) W^O
