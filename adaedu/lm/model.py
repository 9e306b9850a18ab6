"""A tiny decoder-only language model with a pluggable feed-forward network.

GPT-style (A. Radford et al., *Language Models are Unsupervised Multitask Learners*, 2019; code
layout after A. Karpathy's nanoGPT) with the choices of LLaMA and Mixtral: pre-norm blocks with
RMSNorm, rotary positions instead of learned ones, a SwiGLU FFN by default, no biases::

    h_0 = Embed(idx)
    h_l = h_{l-1} + Attn(RMSNorm(h_{l-1}))       causal, RoPE, optional KV cache
    h_l = h_l + FFN_l(RMSNorm(h_l))               any module: dense, SwiGLU or a mixture of experts
    logits = RMSNorm(h_L) W_E^T                   tied to the embedding unless tie_embeddings=False

``TinyLM.forward(idx, targets=None, cache=None)`` returns an :class:`LMOutput` with the logits,
the mean next-token cross-entropy if ``targets`` are given, the per-layer ``aux`` of the FFNs
(see the protocol in :mod:`adaedu.lm.ffn`) and the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.checks import check_int
from adaedu.lm.attention import CausalSelfAttention, KVCache
from adaedu.lm.ffn import FFN_KINDS, MLP, SwiGLU, default_d_ff, split_ffn_output
from adaedu.lm.norm import RMSNorm

#: ``factory(config, layer)`` builds the FFN of block ``layer`` (0-based), e.g. an MoE layer
#: in every other block as in the Switch Transformer.
FFNFactory = Callable[["TinyLMConfig", int], nn.Module]


@dataclass(frozen=True)
class TinyLMConfig:
    """Sizes and choices of a :class:`TinyLM`; checked on creation (``dataclasses.replace``
    makes a changed copy, checked again).

    ``ffn`` is ``"mlp"``, ``"swiglu"`` or a :data:`FFNFactory`; ``d_ff`` is the hidden size of
    the built-in FFNs (``None``: 4 d for mlp, 8/3 d for swiglu). ``block_size`` is the longest
    context (prompt plus generated tokens) the model accepts.
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    block_size: int = 128
    ffn: str | FFNFactory = "swiglu"
    d_ff: int | None = None
    dropout: float = 0.0
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "block_size"):
            check_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"n_heads={self.n_heads}; allowed values: a divisor of d_model={self.d_model}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"n_heads={self.n_heads} gives head size {self.head_dim}; allowed values: n_heads "
                f"such that d_model / n_heads is even (RoPE rotates pairs of features)"
            )
        if not (callable(self.ffn) or self.ffn in FFN_KINDS):
            raise ValueError(
                f"ffn={self.ffn!r}; allowed values: {', '.join(FFN_KINDS)} or a callable "
                "factory(config, layer) -> nn.Module"
            )
        if self.d_ff is not None:
            check_int("d_ff", self.d_ff)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}; allowed values: 0 <= dropout < 1")
        if not self.rope_base > 1.0:
            raise ValueError(f"rope_base={self.rope_base!r}; allowed values: a number > 1")
        if not self.norm_eps > 0.0:
            raise ValueError(f"norm_eps={self.norm_eps!r}; allowed values: a number > 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def make_ffn(self, layer: int) -> nn.Module:
        """The FFN of block ``layer``: built-in by name, or from the factory."""
        if callable(self.ffn):
            return self.ffn(self, layer)
        d_ff = self.d_ff if self.d_ff is not None else default_d_ff(self.ffn, self.d_model)
        return MLP(self.d_model, d_ff) if self.ffn == "mlp" else SwiGLU(self.d_model, d_ff)


class Block(nn.Module):
    """Pre-norm transformer block: ``h + Attn(RMSNorm(h))``, then ``h + FFN(RMSNorm(h))``."""

    def __init__(self, config: TinyLMConfig, layer: int):
        super().__init__()
        self.layer = check_int("layer", layer, 0, config.n_layers - 1)
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = CausalSelfAttention(
            config.d_model, config.n_heads, config.block_size, config.rope_base, config.dropout
        )
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = config.make_ffn(layer)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, h: Tensor, start: int = 0, cache: KVCache | None = None
    ) -> tuple[Tensor, Any]:
        """``(h', aux)``: the updated residual stream and the FFN's aux (or None)."""
        h = h + self.dropout(self.attn(self.attn_norm(h), start, cache, self.layer))
        y, aux = split_ffn_output(self.ffn(self.ffn_norm(h)))
        return h + self.dropout(y), aux


@dataclass
class LMOutput:
    """What :meth:`TinyLM.forward` returns."""

    logits: Tensor  # (B, T, vocab_size): scores of the next token after each position
    loss: Tensor | None  # mean next-token cross-entropy (nats), if targets were given
    aux: list[Any]  # one entry per layer: its FFN's aux, or None (see adaedu.lm.ffn)
    cache: KVCache | None  # the cache passed in, now holding these tokens too


class TinyLM(nn.Module):
    """The decoder-only language model; see the module docstring for the equations."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)  # W_E
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight  # logits = h W_E^T (Press & Wolf, 2017)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 initialisation of the model's own weights: N(0, 0.02), and N(0, 0.02 /
        sqrt(2 L)) for the projections that write into the residual stream. A plugged-in FFN
        keeps the initialisation its constructor gave it."""
        std, residual_std = 0.02, 0.02 / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embed.weight, std=std)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.head.weight, std=std)
        for block in self.blocks:
            own: list[nn.Module] = [block.attn]
            if isinstance(block.ffn, MLP | SwiGLU):
                own.append(block.ffn)
            for module in own:
                for name, p in module.named_parameters():
                    nn.init.normal_(p, std=residual_std if name == "out.weight" else std)

    def new_cache(self) -> KVCache:
        """An empty :class:`KVCache` for incremental decoding with this model."""
        return KVCache(self.config.n_layers)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None
    ) -> LMOutput:
        """Logits for the token ids ``idx`` (B, T); the loss if ``targets`` (B, T) are given.

        With a ``cache`` already holding ``n`` positions, ``idx`` holds positions
        ``n .. n + T - 1``: prefill with the prompt, then feed one token at a time.
        Target -100 is ignored in the loss (``F.cross_entropy``'s ``ignore_index``).
        """
        if (
            not isinstance(idx, Tensor)
            or idx.dim() != 2
            or idx.dtype not in (torch.long, torch.int)
        ):
            raise ValueError("idx must be a (batch, time) tensor of integer token ids")
        if idx.numel() and not 0 <= int(idx.min()) <= int(idx.max()) < self.config.vocab_size:
            raise ValueError(
                f"idx holds ids {int(idx.min())}..{int(idx.max())}; allowed values: "
                f"0..{self.config.vocab_size - 1} (vocab_size={self.config.vocab_size})"
            )
        start = 0 if cache is None else cache.length
        if start + idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"{start} cached + {idx.shape[1]} new tokens; allowed values: at most "
                f"block_size={self.config.block_size} in all"
            )
        h = self.dropout(self.embed(idx))
        aux = []
        for block in self.blocks:
            h, layer_aux = block(h, start, cache)
            aux.append(layer_aux)
        logits = self.head(self.norm(h))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())  # -log p
        return LMOutput(logits, loss, aux, cache)


def lm_loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
    """A loss function for :func:`adaedu.train.train`: the next-token cross-entropy of a batch
    ``(x, y, ...)`` such as a :class:`adaedu.data.TextBatch` (auxiliary losses not included)."""
    if not (isinstance(batch, Sequence | Tensor) and len(batch) >= 2):
        raise ValueError("batch must be a sequence (x, y, ...) of inputs and targets (a TextBatch)")
    return model(batch[0], targets=batch[1]).loss
