"""The experiments of notebooks 5.1 (contrastive decoding) and 5.4 (beam search), as functions.

Training a TinyLM on text, drawing prompts, generating with several decoders and measuring what
came out; searching with beams of several widths and measuring quality and compute.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from adaedu.checks import check_int
from adaedu.claims import Interval, bootstrap_interval
from adaedu.data import TextCorpus, Tokenizer
from adaedu.decoding.beam import LMScorer, beam_search
from adaedu.decoding.contrastive import continuation_nll, decode, diversity, repetition
from adaedu.decoding.spelling import bleu_from_stats, bleu_stats, corpus_bleu, most_likely, variants
from adaedu.lm import TinyLM, TinyLMConfig
from adaedu.lm.training import train_lm
from adaedu.train import History


def trained_lm(
    config: TinyLMConfig,
    corpus: TextCorpus,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[TinyLM, History]:
    """A fresh TinyLM (initialised from ``seed``) trained by the course's LM loop
    (:func:`adaedu.lm.training.train_lm`): AdamW with weight decay 0.01 and a constant ``lr``,
    cross-entropy only, on random windows of ``config.block_size`` tokens of ``corpus`` (domains
    equally weighted). Returned in eval mode, with its training history."""
    torch.manual_seed(seed)
    model = TinyLM(config).to(device)
    run = train_lm(
        model,
        corpus,
        steps=steps,
        batch_size=batch_size,
        block_size=config.block_size,
        lr=lr,
        seed=seed,
        optimizer="adamw",
        weight_decay=0.01,
        aux_loss=None,
    )
    return model.eval(), run.history


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


def token_prompts(
    tokens: torch.Tensor, tokenizer: Tokenizer, n: int, length: int, seed: int = 0
) -> torch.Tensor:
    """``n`` prompts of ``length`` token ids each, as a (n, length) LongTensor: windows of the 1-d
    token stream ``tokens`` (e.g. a BPE-encoded validation split) that start right after a token
    ending in a newline, i.e. at the start of a line, chosen at random without replacement."""
    if n < 1 or length < 1:
        raise ValueError(f"n={n}, length={length}; allowed values: integers >= 1")
    if tokens.dim() != 1 or len(tokens) <= length:
        raise ValueError(
            f"tokens has shape {tuple(tokens.shape)}; allowed: 1-d, longer than length"
        )
    ends_line = {t for t in set(tokens.tolist()) if tokenizer.decode([t]).endswith("\n")}
    ids = tokens.tolist()
    starts = [
        i + 1
        for i in range(len(ids) - length - 1)
        if ids[i] in ends_line and ids[i + 1] not in ends_line
    ]
    if not starts:
        raise ValueError("tokens holds no line start followed by `length` tokens")
    chosen = random.Random(seed).sample(starts, min(n, len(starts)))
    return torch.stack([tokens[s : s + length] for s in chosen])


@dataclass
class GenerationReport:
    """What one decoder produced from a set of prompts (means, and one value per prompt)."""

    texts: list[str]
    rep: dict[int, float]  # mean rep-n over the continuations, n = 2, 3, 4
    diversity: float  # Li et al.: prod_n (1 - rep-n), pooled
    expert_nll: float  # mean expert NLL per token of the continuations (nats)
    nll: list[float] = field(default_factory=list)  # per prompt: expert NLL, nats per token
    nll_char: list[float] = field(default_factory=list)  # per prompt: expert NLL, nats per char
    rep_each: dict[int, list[float]] = field(default_factory=dict)  # per prompt: rep-n
    coherence: list[float] = field(default_factory=list)  # per prompt: see :func:`coherence`


@torch.no_grad()
def coherence(model: TinyLM, tokens: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """A coherence proxy in the spirit of Li et al.'s (sec. 6: cosine similarity of the SimCSE
    sentence embeddings of prompt and continuation): the cosine similarity of the mean input
    embeddings (``model.embed``) of the prompt's tokens and of the continuation's, per row."""
    if not 0 < prompt_len < tokens.shape[1]:
        raise ValueError(f"prompt_len={prompt_len}; allowed values: 1 .. {tokens.shape[1] - 1}")
    e = model.embed(tokens).float()
    a, b = e[:, :prompt_len].mean(dim=1), e[:, prompt_len:].mean(dim=1)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@torch.no_grad()
def generation_report(
    expert: TinyLM, tokens: torch.Tensor, prompt_len: int, tokenizer: Tokenizer
) -> GenerationReport:
    """Repetition, diversity, expert NLL (per token and per character) and the coherence proxy
    of the continuations ``tokens[:, prompt_len:]``, in the mean and per prompt."""
    texts = [tokenizer.decode(row[prompt_len:].tolist()) for row in tokens]
    rep_each = {n: [repetition(t, n) for t in texts] for n in (2, 3, 4)}
    reps = {n: sum(v) / len(v) for n, v in rep_each.items()}
    nll = continuation_nll(expert, tokens, prompt_len)
    n_new = tokens.shape[1] - prompt_len
    nll_char = [float(x) * n_new / max(len(t), 1) for x, t in zip(nll, texts, strict=True)]
    return GenerationReport(
        texts,
        reps,
        diversity(texts),
        nll.mean().item(),
        nll.tolist(),
        nll_char,
        rep_each,
        coherence(expert, tokens, prompt_len).tolist(),
    )


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
    check_int("n", n, minimum=0)
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
    log_probs: list[float] = field(default_factory=list)  # model log p of each output (nats)


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
                    log_probs=lps,
                )
            )
    return rows


def paired_bleu_interval(
    outputs_a: Sequence[str],
    outputs_b: Sequence[str],
    references: Sequence[str],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap over sentences (Koehn, 2004) of ``BLEU(a) - BLEU(b)``, corpus BLEU: each
    replicate resamples the test sentences with replacement and recomputes both corpus BLEUs on
    the same sample. Returns the full-set difference with the percentile interval."""
    k = len(references)
    if not (len(outputs_a) == len(outputs_b) == k) or k < 2:
        raise ValueError(
            f"{len(outputs_a)}, {len(outputs_b)} outputs and {k} references; allowed values: the "
            "same number (>= 2) of each"
        )
    sa = torch.tensor([bleu_stats(h, r) for h, r in zip(outputs_a, references, strict=True)])
    sb = torch.tensor([bleu_stats(h, r) for h, r in zip(outputs_b, references, strict=True)])

    def bleu_difference(a: torch.Tensor, b: torch.Tensor) -> float:  # corpus BLEU of a sample
        return bleu_from_stats(a.sum(0).tolist()) - bleu_from_stats(b.sum(0).tolist())

    return bootstrap_interval(bleu_difference, [sa, sb], level=level, n_boot=n_boot, seed=seed)
