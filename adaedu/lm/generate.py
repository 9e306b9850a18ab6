"""Minimal generation with the key-value cache: greedy or temperature sampling.

Prefill the cache with the prompt in one forward pass, then feed one token at a time, so each new
token costs one position of attention instead of a full pass over the context. Fuller decoding
strategies (speculative sampling, contrastive decoding, beam search) build on the same pieces:
``TinyLM.forward(idx, cache=cache)`` and ``KVCache.truncate`` / ``KVCache.reorder``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.lm.model import TinyLM


def next_token(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One token per row of ``logits`` (B, V), as (B, 1): argmax if ``temperature == 0``, else
    a sample from ``softmax(logits / temperature)``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # p_i = exp(z_i/T) / sum_j ...
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(
    model: TinyLM,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``idx`` (B, T) followed by ``max_new_tokens`` generated tokens, (B, T + max_new_tokens).

    ``temperature=0`` decodes greedily; ``generator`` (on the model's device) seeds sampling.
    The whole sequence must fit the context: ``T + max_new_tokens - 1 <= block_size``.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; allowed values: an integer >= 0")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r}; allowed values: a number >= 0")
    room = model.config.block_size - idx.shape[1] + 1
    if max_new_tokens > room:
        raise ValueError(
            f"max_new_tokens={max_new_tokens}; allowed values: 0..{room} (block_size="
            f"{model.config.block_size}, prompt of {idx.shape[1]} tokens)"
        )
    if max_new_tokens == 0:
        return idx
    was_training = model.training
    model.eval()
    cache = model.new_cache()
    logits = model(idx, cache=cache).logits[:, -1]  # prefill: the whole prompt at once
    tokens = [idx]
    for step in range(max_new_tokens):
        tokens.append(next_token(logits, temperature, generator))
        if step < max_new_tokens - 1:
            logits = model(tokens[-1], cache=cache).logits[:, -1]  # one token, cached context
    model.train(was_training)
    return torch.cat(tokens, dim=1)
