"""Autoregressive sampling with the key-value cache, and the filters that shape the distribution.

A language model gives logits ``z`` over the vocabulary for the next token; decoding turns them
into a distribution and draws from it. The filters are small pure functions on logits:

- temperature ``T``: ``p_i = softmax(z / T)_i`` (``T -> 0`` is greedy decoding, ``T = 1`` the
  model's own distribution);
- top-k (A. Fan, M. Lewis, Y. Dauphin, *Hierarchical Neural Story Generation*, ACL 2018,
  arXiv:1805.04833): keep the ``k`` largest logits, renormalise;
- nucleus / top-p (A. Holtzman et al., *The Curious Case of Neural Text Degeneration*, ICLR 2020,
  arXiv:1904.09751, eq. 2): keep the smallest set of most probable tokens whose probability sums to
  at least ``p``, renormalise.

:func:`next_token_distribution` applies them in that order and returns the distribution that is
actually sampled from: speculative sampling (:mod:`adaedu.decoding.speculative`) needs exactly these
``p`` and ``q``. :func:`next_token` draws from it (greedy at ``T = 0``), and :func:`sample` is
plain autoregressive sampling with the cache of :class:`adaedu.lm.TinyLM`: prefill the prompt in
one forward call, then one call per new token, each attending to the cached keys and values. It
is the course's one generation loop; the other decoders (speculative, contrastive, beam search)
build on the same pieces, ``TinyLM.forward(idx, cache=cache)`` and ``KVCache.truncate`` /
``KVCache.reorder``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from adaedu.lm.model import TinyLM


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() < 1 or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor (..., vocab_size)")


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError for an impossible temperature, top_k or top_p."""
    if not isinstance(temperature, int | float) or not temperature >= 0:
        raise ValueError(f"temperature={temperature!r}; allowed values: a number >= 0")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k={top_k!r}; allowed values: None or an integer >= 1")
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        raise ValueError(f"top_p={top_p!r}; allowed values: None or a number in (0, 1]")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``z / T`` for ``T > 0``; for ``T == 0`` (greedy) the argmax keeps 0, every other logit
    becomes -inf, so the softmax is a one-hot on the argmax (the first one on ties)."""
    _check_logits(logits)
    check_sampling_args(temperature, None, None)
    if temperature == 0:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.argmax(dim=-1, keepdim=True), True)
        return torch.zeros_like(logits).masked_fill(~keep, float("-inf"))
    return logits / temperature  # softmax(z / T)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row, set the others to -inf (Fan et al., 2018).

    Ties at the k-th value are all kept, so the result never depends on the order of equal
    logits. ``k >= vocab_size`` keeps everything."""
    _check_logits(logits)
    check_sampling_args(1.0, k, None)
    if k >= logits.shape[-1]:
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[..., -1:]  # the k-th largest logit of each row
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al., 2020, eq. 2): keep the smallest set V^(p) of most
    probable tokens with ``sum_{x in V^(p)} P(x) >= p``; the others get -inf.

    A token is kept iff the probability of the tokens strictly more probable than it (sorted
    order) is < p: the most probable token is always kept."""
    _check_logits(logits)
    check_sampling_args(1.0, None, p)
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above
    keep_sorted = before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def next_token_distribution(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """The distribution the next token is drawn from: softmax of the logits after temperature,
    then top-k, then top-p filtering (float32, rows sum to 1; greedy is a one-hot)."""
    check_sampling_args(temperature, top_k, top_p)
    z = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    return torch.softmax(z, dim=-1)


def sample_from(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token id per row of ``probs`` (..., V): a LongTensor of shape ``probs.shape[:-1]``."""
    if not isinstance(probs, Tensor) or probs.dim() < 1 or not probs.is_floating_point():
        raise ValueError("probs must be a floating-point tensor (..., V) of probabilities")
    if not bool(torch.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(-1) > 0).all()):
        raise ValueError(
            "probs must be finite and >= 0 with a positive sum in every row; allowed values: "
            "(unnormalised) probabilities (..., V)"
        )
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def draw(probs: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """One token id per row of ``probs`` (..., V), drawn with :func:`sample_from`; at ``temperature
    == 0`` ``probs`` is a one-hot and its argmax is the draw, taken without a random number."""
    if not isinstance(temperature, int | float) or not temperature >= 0:
        raise ValueError(f"temperature={temperature!r}; allowed values: a number >= 0")
    return probs.argmax(dim=-1) if temperature == 0 else sample_from(probs, generator)


def next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of ``logits`` (..., V), shape ``logits.shape[:-1]``: a sample from
    :func:`next_token_distribution`; for ``temperature == 0`` its argmax (greedy), without
    drawing a random number."""
    return draw(next_token_distribution(logits, temperature, top_k, top_p), temperature, generator)


@dataclass
class SampleStats:
    """What one call of :func:`sample` did: forward calls of the model (the prefill included)."""

    tokens: int = 0
    model_calls: int = 0


def check_room(model: TinyLM, prompt_length: int, max_new_tokens: int) -> None:
    """Raise ValueError unless ``max_new_tokens`` fit the model's context after the prompt."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool):
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; allowed values: an integer >= 0")
    room = model.config.block_size - prompt_length + 1
    if not 0 <= max_new_tokens <= room:
        raise ValueError(
            f"max_new_tokens={max_new_tokens}; allowed values: 0..{room} (block_size="
            f"{model.config.block_size}, prompt of {prompt_length} tokens)"
        )


@torch.no_grad()
def sample(
    model: TinyLM,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stats: SampleStats | None = None,
) -> Tensor:
    """``prompt`` (B, T) followed by ``max_new_tokens`` sampled tokens: (B, T + max_new_tokens).

    Prefill the cache with the prompt in one call, then one call per new token (the last token
    is never fed back: it needs no logits). ``stats`` (optional) counts the calls.
    """
    if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError("prompt must be a (batch, time) tensor of token ids with time >= 1")
    check_sampling_args(temperature, top_k, top_p)
    check_room(model, prompt.shape[1], max_new_tokens)
    stats = stats if stats is not None else SampleStats()
    if max_new_tokens == 0:
        return prompt
    was_training = model.training
    model.eval()
    cache = model.new_cache()
    logits = model(prompt, cache=cache).logits[:, -1]  # prefill
    stats.model_calls += 1
    tokens = [prompt]
    for step in range(max_new_tokens):
        tokens.append(next_token(logits, temperature, top_k, top_p, generator)[:, None])
        stats.tokens += 1
        if step < max_new_tokens - 1:
            logits = model(tokens[-1], cache=cache).logits[:, -1]  # one token, cached context
            stats.model_calls += 1
    model.train(was_training)
    return torch.cat(tokens, dim=1)
