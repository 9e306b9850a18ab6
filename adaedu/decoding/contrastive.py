"""Contrastive decoding: prefer what a strong model expects and a weak model does not.

X. L. Li, A. Holtzman, D. Fried, P. Liang, J. Eisner, T. Hashimoto, L. Zettlemoyer, M. Lewis,
*Contrastive Decoding: Open-ended Text Generation as Optimization*, ACL 2023, arXiv:2210.15097.
An *expert* LM and a much smaller *amateur* LM share a tokenizer. At each step choose

    x_i = argmax_{x in V_head} log p_EXP(x | x_<i) - log p_AMA(x | x_<i)          (Li, eq. 4)
    V_head = { x : p_EXP(x | x_<i) >= alpha * max_w p_EXP(w | x_<i) },  alpha = 0.1  (Li, eq. 3)

The plausibility constraint V_head matters: a token that both models find very unlikely can have
a huge log-ratio (say log 1e-6 - log 1e-9); without the mask CD would pick such garbage.

S. O'Brien and M. Lewis, *Contrastive Decoding Improves Reasoning in Large Language Models*,
arXiv:2309.09117 (2023), Appendix A, Algorithm 2, write it in logit space with a weight beta:

    cutoff = log(alpha) + max_w s_EXP(w);   score = (1 + beta) s_EXP - beta s_AMA,
    tokens with s_EXP < cutoff get -inf.

On the expert's logits, ``s_EXP >= log(alpha) + max s_EXP`` is the same set as V_head (the
softmax only shifts logits by a constant). Dividing the score by beta > 0 and dropping per-step
constants shows that Li et al.'s rule is the beta -> infinity limit of this family; beta = 0 is
greedy decoding of the expert.

This is *not* HuggingFace's "contrastive search" (Su et al., 2022, ``penalty_alpha``), which
uses one model and penalises tokens whose hidden state resembles the context's.

Baselines used next to it: greedy decoding and nucleus (top-p) sampling (A. Holtzman et al.,
*The Curious Case of Neural Text Degeneration*, ICLR 2020, arXiv:1904.09751, sec. 3.1), both
from :mod:`adaedu.decoding.sampling` (:func:`~adaedu.decoding.sampling.sample` with temperature 0,
or with ``top_p``).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor

from adaedu.decoding.sampling import check_room, sample
from adaedu.lm.model import TinyLM

#: The decoding methods of :func:`decode`.
METHODS = ("greedy", "nucleus", "contrastive")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r}; allowed values: 0 < alpha <= 1")


def plausible_mask(expert_logits: Tensor, alpha: float = 0.1) -> Tensor:
    """Li et al., eq. 3: True where ``p_EXP(x) >= alpha * max_w p_EXP(w)`` (V_head), per row."""
    _check_alpha(alpha)
    logp = F.log_softmax(expert_logits.float(), dim=-1)
    cutoff = math.log(alpha) + logp.max(dim=-1, keepdim=True).values  # log(alpha * max p)
    return logp >= cutoff


def contrastive_scores(
    expert_logits: Tensor, amateur_logits: Tensor, alpha: float = 0.1, beta: float | None = None
) -> Tensor:
    """The contrastive score of every token, -inf outside V_head; the argmax is the CD choice.

    ``beta=None``: Li et al., eq. 4, ``log p_EXP - log p_AMA``. ``beta >= 0``: O'Brien & Lewis,
    Algorithm 2, ``(1 + beta) s_EXP - beta s_AMA`` on the raw logits. Shapes (..., V).
    """
    if expert_logits.shape != amateur_logits.shape:
        raise ValueError(
            f"expert_logits {tuple(expert_logits.shape)} and amateur_logits "
            f"{tuple(amateur_logits.shape)}; allowed values: the same shape (a shared tokenizer)"
        )
    if beta is not None and not beta >= 0:
        raise ValueError(f"beta={beta!r}; allowed values: None (Li et al.) or a number >= 0")
    mask = plausible_mask(expert_logits, alpha)  # eq. 3: V_head
    e, a = expert_logits.float(), amateur_logits.float()
    if beta is None:
        score = F.log_softmax(e, dim=-1) - F.log_softmax(a, dim=-1)  # eq. 4: log p_EXP - log p_AMA
    else:
        score = (1 + beta) * e - beta * a  # O'Brien & Lewis: (1 + beta) s_EXP - beta s_AMA
    return score.masked_fill(~mask, float("-inf"))


@torch.no_grad()
def decode(
    expert: TinyLM,
    idx: Tensor,
    max_new_tokens: int,
    method: str = "contrastive",
    *,
    amateur: TinyLM | None = None,
    alpha: float = 0.1,
    beta: float | None = None,
    top_p: float = 0.95,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``idx`` (B, T) followed by ``max_new_tokens`` tokens chosen by ``method``.

    ``greedy``: argmax of the expert; ``nucleus``: a sample from the expert's top-``top_p``
    nucleus (both are :func:`adaedu.decoding.sampling.sample`); ``contrastive``: argmax of
    :func:`contrastive_scores` with the ``amateur``. Each model keeps its own
    :class:`adaedu.lm.KVCache`: the prompt is fed once, then one token per step, so CD costs one
    expert plus one amateur forward pass per token.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed values: {', '.join(METHODS)}")
    if method == "contrastive" and amateur is None:
        raise ValueError("amateur=None; allowed values: a TinyLM (contrastive decoding needs one)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; allowed values: an integer >= 1")
    _check_alpha(alpha)
    if method == "greedy":
        return sample(expert, idx, max_new_tokens, temperature=0.0)
    if method == "nucleus":
        return sample(expert, idx, max_new_tokens, 1.0, top_p=top_p, generator=generator)
    models = [expert, amateur]
    for m in models:
        check_room(m, idx.shape[1], max_new_tokens)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    caches = [m.new_cache() for m in models]
    logits = [m(idx, cache=c).logits[:, -1] for m, c in zip(models, caches, strict=True)]
    out = [idx]
    for step in range(max_new_tokens):
        nxt = contrastive_scores(logits[0], logits[1], alpha, beta).argmax(dim=-1, keepdim=True)
        out.append(nxt)
        if step < max_new_tokens - 1:
            logits = [m(nxt, cache=c).logits[:, -1] for m, c in zip(models, caches, strict=True)]
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    return torch.cat(out, dim=1)


@torch.no_grad()
def continuation_nll(model: TinyLM, tokens: Tensor, prompt_len: int) -> Tensor:
    """Mean negative log-likelihood (nats per token) of ``tokens[:, prompt_len:]`` under
    ``model`` given what precedes them; one value per row of ``tokens`` (B, T)."""
    if not 1 <= prompt_len < tokens.shape[1]:
        raise ValueError(f"prompt_len={prompt_len!r}; allowed values: 1..{tokens.shape[1] - 1}")
    was_training = model.training
    model.eval()
    logp = F.log_softmax(model(tokens[:, :-1]).logits.float(), dim=-1)
    model.train(was_training)
    target_logp = logp.gather(-1, tokens[:, 1:, None])[..., 0]  # log p(x_t | x_<t)
    return -target_logp[:, prompt_len - 1 :].mean(dim=1)


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text`` (the unit of the n-gram metrics)."""
    if not isinstance(text, str):
        raise TypeError(f"text is a {type(text).__name__}; allowed: a str")
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


def ngrams(items: list[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of ``items``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}; allowed values: an integer >= 1")
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def repetition(text: str, n: int = 3) -> float:
    """rep-n of one text (Welleck et al., 2019; Li et al., sec. 6): the fraction of its word
    n-grams that repeat an n-gram seen earlier in it, ``1 - |unique n-grams| / |n-grams|``."""
    grams = ngrams(words(text), n)
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def diversity(texts: list[str]) -> float:
    """Li et al., sec. 6: ``prod_{n=2..4} (1 - rep-n)``, with rep-n pooled over ``texts``."""
    if isinstance(texts, str) or not texts:
        raise ValueError(f"texts={texts!r}; allowed: a non-empty list of strings")
    value = 1.0
    for n in (2, 3, 4):
        grams = [g for t in texts for g in ngrams(words(t), n)]
        uniq = sum(len(set(ngrams(words(t), n))) for t in texts)
        value *= uniq / len(grams) if grams else 1.0
    return value
