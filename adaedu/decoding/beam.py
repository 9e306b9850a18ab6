"""Beam search with length normalisation and compute accounting.

I. Sutskever, O. Vinyals, Q. V. Le, *Sequence to Sequence Learning with Neural Networks*, NeurIPS
2014, arXiv:1409.3215, sec. 3.1: search for the most likely output

    T* = argmax_T log p(T | S)                                                   (eq. 2)

with "a simple left-to-right beam search decoder which maintains a small number B of partial
hypotheses". At each step every hypothesis is extended by every token of the vocabulary, and
only the B most likely of these extensions are kept. "As soon as the <EOS> symbol is appended
to a hypothesis, it is removed from the beam and is added to the set of complete hypotheses":
here the beam therefore shrinks as hypotheses finish, and search stops when it is empty (or at
``max_new_tokens``). Width 1 is greedy decoding.

Hypotheses are pruned by their raw log-probability; the complete ones are then ranked by a
length-normalised score. log p only decreases as a hypothesis grows, so raw scores favour short
outputs. Y. Wu et al., *Google's Neural Machine Translation System*, arXiv:1609.08144 (2016),
eq. 14, divide by

    lp(Y) = (5 + |Y|)^a / (5 + 1)^a,       score(Y) = log p(Y | X) / lp(Y)

where |Y| counts the generated tokens including <EOS>; a = 0 is no normalisation, a = 1 is close
to dividing by the length. (Wu et al. also use lp during pruning and add a coverage penalty; we do
neither.)

A *scorer* hides the model: ``start(prompt)`` returns the log-probabilities of the first token,
``step(parents, tokens)`` keeps the hypotheses numbered ``parents`` (repeating or dropping rows),
appends one token to each and returns the next log-probabilities. :class:`LMScorer` does this for
a :class:`adaedu.lm.TinyLM` with its key-value cache (``KVCache.reorder``); :class:`PrefixScorer`
for any function of the whole prefixes (hand-made models in tests and exercises).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from adaedu.lm.model import TinyLM


class Scorer(Protocol):
    """What :func:`beam_search` needs from a model (see the module docstring)."""

    flops: float

    def start(self, prompt: Sequence[int]) -> Tensor: ...

    def step(self, parents: Sequence[int], tokens: Sequence[int]) -> Tensor: ...


class LMScorer:
    """A :class:`TinyLM` as a scorer, with its key-value cache.

    With ``count_flops`` the FLOPs of each call are measured with PyTorch's ``FlopCounterMode``
    (2 FLOPs per multiply-add). The count depends only on the number of rows and positions fed
    and the cache length, so it is measured once per such shape and remembered in
    ``flop_table`` (pass the same dict to many scorers of one model to share it): counting every
    call would cost more than the call itself.
    """

    def __init__(self, model: TinyLM, count_flops: bool = True, flop_table: dict | None = None):
        if not isinstance(model, nn.Module) or not hasattr(model, "new_cache"):
            raise TypeError(f"model is a {type(model).__name__}; allowed: a TinyLM")
        self.model, self.count_flops = model, count_flops
        self.flop_table = {} if flop_table is None else flop_table
        self.flops = 0.0
        self.cache = None

    def _run(self, idx: Tensor) -> Tensor:
        key = (*idx.shape, self.cache.length)
        if self.count_flops and key not in self.flop_table:
            counter = FlopCounterMode(display=False)
            with counter:
                logits = self.model(idx, cache=self.cache).logits[:, -1]
            self.flop_table[key] = float(counter.get_total_flops())
        else:
            logits = self.model(idx, cache=self.cache).logits[:, -1]
        if self.count_flops:
            self.flops += self.flop_table[key]
        return F.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def start(self, prompt: Sequence[int]) -> Tensor:
        self.model.eval()
        self.cache = self.model.new_cache()
        device = next(self.model.parameters()).device
        return self._run(torch.tensor([list(prompt)], device=device))

    @torch.no_grad()
    def step(self, parents: Sequence[int], tokens: Sequence[int]) -> Tensor:
        device = next(self.model.parameters()).device
        self.cache.reorder(torch.tensor(list(parents), device=device))
        return self._run(torch.tensor(list(tokens), device=device)[:, None])


class PrefixScorer:
    """A scorer from ``fn(prefixes) -> (B, V) log-probabilities``, called on the whole prefixes
    (prompt + generated tokens) of all live hypotheses; ``flops`` stays 0."""

    def __init__(self, fn: Callable[[list[list[int]]], Tensor]):
        if not callable(fn):
            raise TypeError(f"fn={fn!r}; allowed: a function of the prefixes (list of lists)")
        self.fn = fn
        self.flops = 0.0
        self.prefixes: list[list[int]] = []

    def start(self, prompt: Sequence[int]) -> Tensor:
        self.prefixes = [list(prompt)]
        return self.fn(self.prefixes)

    def step(self, parents: Sequence[int], tokens: Sequence[int]) -> Tensor:
        self.prefixes = [self.prefixes[p] + [t] for p, t in zip(parents, tokens, strict=True)]
        return self.fn(self.prefixes)


def length_penalty(length: int, a: float) -> float:
    """Wu et al. (2016), eq. 14: ``lp(Y) = (5 + |Y|)^a / (5 + 1)^a``."""
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length={length!r}; allowed values: an integer >= 0")
    if not a >= 0:
        raise ValueError(f"a={a!r}; allowed values: a number >= 0")
    return ((5.0 + length) / 6.0) ** a


@dataclass
class Hypothesis:
    """One output: its generated ``tokens`` (with the final <EOS> if ``finished``), their
    ``log_prob`` = log p(tokens | prompt), and the length-normalised ``score``."""

    tokens: list[int]
    log_prob: float
    score: float
    finished: bool


@dataclass
class BeamResult:
    """All hypotheses, best ``score`` first, and the compute spent to find them."""

    hypotheses: list[Hypothesis]
    model_calls: int  # forward passes (each scores every live hypothesis at once)
    tokens_scored: int  # token positions fed through the model (prompt + one per live row/step)
    flops: float  # measured by the scorer (0 if it does not count)
    expansions: list[int] = field(default_factory=list)  # live hypotheses at each step

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]


def top_extensions(totals: Tensor, logp: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """One pruning step: of all extensions of all live hypotheses, the ``width`` most likely.

    ``totals`` (B,) are the hypotheses' log-probabilities, ``logp`` (B, V) the next token's.
    Returns ``(parents, tokens, new_totals)``, best first: extension i appends ``tokens[i]`` to
    hypothesis ``parents[i]`` and has log-probability ``new_totals[i]``. Hypotheses compete with
    each other (one may keep several extensions, another none), not row by row.
    """
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width={width!r}; allowed values: an integer >= 1")
    cand = (totals[:, None] + logp).flatten()  # log p(y_<t) + log p(y_t | y_<t), eq. 2's sum
    top = cand.topk(min(width, cand.numel()))
    vocab = logp.shape[-1]
    return top.indices // vocab, top.indices % vocab, top.values


def beam_search(
    scorer: Scorer,
    prompt: Sequence[int],
    width: int,
    max_new_tokens: int,
    eos: int | None = None,
    length_a: float = 0.0,
    early_stop: bool = True,
) -> BeamResult:
    """Sutskever et al. (2014), sec. 3.1: left-to-right beam search of ``width`` hypotheses.

    Keeps the ``width`` most likely extensions (raw log-probability) at each step; one that ends
    in ``eos`` leaves the beam and joins the complete hypotheses. Unfinished hypotheses left at
    ``max_new_tokens`` are returned too, with ``finished=False``, and rank after every complete
    one. Complete hypotheses are ranked by ``log_prob / length_penalty(len, length_a)``.

    ``early_stop`` (only with ``length_a == 0``): stop as soon as the best complete hypothesis is
    at least as likely as every live one. Log-probabilities only fall as a hypothesis grows, so
    no live hypothesis can overtake it: the best output is the same, the compute is not wasted.
    """
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width={width!r}; allowed values: an integer >= 1")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; allowed values: an integer >= 1")
    if len(prompt) < 1:
        raise ValueError("prompt is empty; allowed values: at least one token")
    length_penalty(1, length_a)  # checks length_a
    logp = scorer.start(prompt)  # (1, V): log p(y_1 | prompt)
    vocab = logp.shape[-1]
    if eos is not None and not 0 <= eos < vocab:
        raise ValueError(f"eos={eos!r}; allowed values: None or a token id in 0..{vocab - 1}")
    calls, scored = 1, len(prompt)
    live: list[tuple[list[int], float]] = [([], 0.0)]  # (tokens, log p) of partial hypotheses
    done: list[Hypothesis] = []
    expansions = []
    for step in range(max_new_tokens):
        expansions.append(len(live))
        totals = torch.tensor([lp for _, lp in live], dtype=torch.float64)
        rows, toks, values = top_extensions(totals, logp.double().cpu(), width)
        parents, tokens, survivors = [], [], []
        for row, token, value in zip(rows.tolist(), toks.tolist(), values.tolist(), strict=True):
            if value == float("-inf"):
                continue
            seq = live[row][0] + [token]
            if token == eos:  # complete: leaves the beam
                score = value / length_penalty(len(seq), length_a)
                done.append(Hypothesis(seq, value, score, True))
            else:
                parents.append(row)
                tokens.append(token)
                survivors.append((seq, value))
        live = survivors
        if not live or step == max_new_tokens - 1:
            break
        if early_stop and length_a == 0 and done:
            if max(h.log_prob for h in done) >= max(lp for _, lp in live):
                break  # no live hypothesis can still win
        logp = scorer.step(parents, tokens)
        calls, scored = calls + 1, scored + len(tokens)
    unfinished = [
        Hypothesis(seq, lp, lp / length_penalty(len(seq), length_a), False) for seq, lp in live
    ]
    ranked = sorted(done, key=lambda h: -h.score) + sorted(unfinished, key=lambda h: -h.score)
    return BeamResult(ranked, calls, scored, float(scorer.flops), expansions)


def greedy_decode(
    scorer: Scorer, prompt: Sequence[int], max_new_tokens: int, eos: int | None = None
) -> tuple[list[int], float]:
    """Plain greedy decoding (argmax at every step, stop after ``eos``), written without the
    beam machinery to check that a beam of width 1 is the same: ``(tokens, log_prob)``."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; allowed values: an integer >= 1")
    if len(prompt) < 1:
        raise ValueError("prompt is empty; allowed values: at least one token")
    logp, tokens, total = scorer.start(prompt), [], 0.0
    for step in range(max_new_tokens):
        token = int(logp[0].argmax())
        tokens.append(token)
        total += float(logp[0, token])
        if token == eos or step == max_new_tokens - 1:
            break
        logp = scorer.step([0], [token])
    return tokens, total
