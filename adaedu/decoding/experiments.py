"""The experiments of notebooks 5.1 (contrastive decoding) and 5.4 (beam search), as functions.

Training a TinyLM on text, drawing prompts, generating with several decoders and measuring what
came out; searching with beams of several widths and measuring quality and compute.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adaedu.data import TextCorpus, Tokenizer
from adaedu.decoding.beam import LMScorer, beam_search
from adaedu.decoding.contrastive import continuation_nll, decode, diversity, repetition
from adaedu.decoding.spelling import corpus_bleu, most_likely, variants
from adaedu.lm import TinyLM, TinyLMConfig, lm_loss
from adaedu.train import History, train


def train_lm(
    config: TinyLMConfig,
    corpus: TextCorpus,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[TinyLM, History]:
    """A fresh TinyLM trained with AdamW (cosine-free, constant ``lr``) on random windows of
    ``config.block_size`` tokens of ``corpus`` (domains equally weighted)."""
    torch.manual_seed(seed)
    model = TinyLM(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    batches = corpus.batches(batch_size, config.block_size, seed=seed, device=device)
    history = train(
        model, lm_loss, batches, steps=steps, optimizer=opt, log_every=10, progress=False
    )
    model.eval()
    return model, history


def line_prompts(
    text: str, tokenizer: Tokenizer, n: int, length: int, seed: int = 0
) -> torch.Tensor:
    """``n`` prompts of ``length`` tokens, each the start of a random line of ``text`` that is at
    least ``length`` characters long, as a (n, length) LongTensor."""
    if n < 1 or length < 1:
        raise ValueError(f"n={n}, length={length}; allowed values: integers >= 1")
    starts = [i + 1 for i, c in enumerate(text[:-length]) if c == "\n" and text[i + 1] != "\n"]
    starts = [s for s in starts if "\n" not in text[s : s + length]] or starts
    chosen = random.Random(seed).sample(starts, min(n, len(starts)))
    return torch.tensor([tokenizer.encode(text[s : s + length]) for s in chosen])


@dataclass
class GenerationReport:
    """What one decoder produced from a set of prompts."""

    texts: list[str]
    rep: dict[int, float]  # mean rep-n over the continuations, n = 2, 3, 4
    diversity: float  # Li et al.: prod_n (1 - rep-n), pooled
    expert_nll: float  # mean expert NLL per token of the continuations (nats)


@torch.no_grad()
def generation_report(
    expert: TinyLM, tokens: torch.Tensor, prompt_len: int, tokenizer: Tokenizer
) -> GenerationReport:
    """Repetition, diversity and expert NLL of the continuations ``tokens[:, prompt_len:]``."""
    texts = [tokenizer.decode(row[prompt_len:].tolist()) for row in tokens]
    reps = {n: sum(repetition(t, n) for t in texts) / len(texts) for n in (2, 3, 4)}
    nll = continuation_nll(expert, tokens, prompt_len).mean().item()
    return GenerationReport(texts, reps, diversity(texts), nll)


def compare_decoders(
    expert: TinyLM,
    amateur: TinyLM,
    prompts: torch.Tensor,
    tokenizer: Tokenizer,
    max_new_tokens: int,
    settings: dict[str, dict],
    seed: int = 0,
) -> dict[str, GenerationReport]:
    """One :class:`GenerationReport` per named decoder; ``settings[name]`` are the keyword
    arguments of :func:`adaedu.decoding.contrastive.decode` (``method``, ``alpha``, ...)."""
    out = {}
    for name, kw in settings.items():
        gen = torch.Generator(device=prompts.device).manual_seed(seed)
        tokens = decode(expert, prompts, max_new_tokens, amateur=amateur, generator=gen, **kw)
        out[name] = generation_report(expert, tokens, prompts.shape[1], tokenizer)
    return out


def arithmetic_problems(text: str, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` random lines ``a+b=c`` (or ``-``, ``*``) of ``text`` as (``"a+b="``, c)."""
    lines = [line for line in text.splitlines() if "=" in line]
    chosen = random.Random(seed).sample(lines, min(n, len(lines)))
    return [(line.split("=")[0] + "=", int(line.split("=")[1])) for line in chosen]


@torch.no_grad()
def arithmetic_accuracy(
    expert: TinyLM,
    amateur: TinyLM,
    tokenizer: Tokenizer,
    problems: Sequence[tuple[str, int]],
    **decode_kw,
) -> float:
    """Fraction of ``problems`` whose completion (up to the newline) is the right number.

    Each prompt is a newline followed by ``a+b=`` (as at a line start in the training text);
    prompts of equal length are decoded together."""
    device = next(expert.parameters()).device
    by_len: dict[int, list[tuple[str, int]]] = {}
    for p, ans in problems:
        by_len.setdefault(len(p), []).append((p, ans))
    correct = 0
    for group in by_len.values():
        idx = torch.tensor([tokenizer.encode("\n" + p) for p, _ in group], device=device)
        out = decode(expert, idx, 6, amateur=amateur, **decode_kw)
        for (_, ans), row in zip(group, out[:, idx.shape[1] :].tolist(), strict=True):
            answer = tokenizer.decode(row).split("\n")[0]
            correct += answer == str(ans)
    return correct / len(problems)


# --- notebook 5.4: beam search on the number-spelling task ----------------------------------


@dataclass
class SweepRow:
    """Beam search with one width and one length-normalisation exponent, over a test set."""

    width: int
    length_a: float
    outputs: list[str]
    log_prob: float  # mean model log p(output | source), nats (the search objective)
    bleu: float  # corpus BLEU against one sampled reference per source
    valid: float  # fraction of outputs that are a correct spelling of the number
    mode: float  # fraction equal to the single most likely correct spelling
    true_prob: float  # mean probability of the output under the true distribution of spellings
    length: float  # mean output length in words
    calls: float  # model calls per source
    tokens: float  # token positions scored per source
    flops: float  # measured FLOPs per source


@torch.no_grad()
def beam_sweep(
    model: TinyLM,
    tokenizer: Tokenizer,
    numbers: Sequence[int],
    references: Sequence[str],
    widths: Sequence[int],
    length_as: Sequence[float] = (0.0,),
    max_new_tokens: int = 56,
) -> list[SweepRow]:
    """Beam search every number of ``numbers`` (prompt ``"\\n{n}="``, end of sequence ``"\\n"``)
    for each width and length exponent ``a`` (Wu et al.'s lp); one :class:`SweepRow` each."""
    eos = tokenizer.encode("\n")[0]
    flop_table: dict = {}  # FLOPs per call shape, measured once (see LMScorer)
    rows = []
    for a in length_as:
        for width in widths:
            outputs, lps, calls, toks, flops = [], [], 0, 0, 0.0
            for n in numbers:
                prompt = tokenizer.encode(f"\n{n}=")
                room = model.config.block_size - len(prompt) + 1  # what the context still holds
                res = beam_search(
                    LMScorer(model, flop_table=flop_table),
                    prompt,
                    width,
                    min(max_new_tokens, room),
                    eos,
                    a,
                )
                best = res.best
                outputs.append(tokenizer.decode(t for t in best.tokens if t != eos))
                lps.append(best.log_prob)
                calls, toks, flops = (
                    calls + res.model_calls,
                    toks + res.tokens_scored,
                    flops + res.flops,
                )
            k = len(numbers)
            truth = [variants(n) for n in numbers]
            rows.append(
                SweepRow(
                    width=width,
                    length_a=a,
                    outputs=outputs,
                    log_prob=sum(lps) / k,
                    bleu=corpus_bleu(outputs, list(references)),
                    valid=sum(o in t for o, t in zip(outputs, truth, strict=True)) / k,
                    mode=sum(o == most_likely(n) for o, n in zip(outputs, numbers, strict=True))
                    / k,
                    true_prob=sum(t.get(o, 0.0) for o, t in zip(outputs, truth, strict=True)) / k,
                    length=sum(len(o.split()) for o in outputs) / k,
                    calls=calls / k,
                    tokens=toks / k,
                    flops=flops / k,
                )
            )
    return rows
