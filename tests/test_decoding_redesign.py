"""Tests of the helpers added for the issue-9 redesign of notebooks 5.1, 5.2 and 5.4: sentence
statistics of BLEU and its paired bootstrap, BPE-friendly prompts, per-prompt generation metrics,
and the alternating speculative-vs-plain timer."""

import pytest
import torch

from adaedu.data import char_tokenizer
from adaedu.decoding.experiments import (
    coherence,
    generation_report,
    paired_bleu_interval,
    token_prompts,
)
from adaedu.decoding.speculative import BigramLM, timed_speedup
from adaedu.decoding.spelling import bleu_from_stats, bleu_stats, corpus_bleu
from adaedu.lm import TinyLM, TinyLMConfig

REFS = [
    "one thousand two hundred thirty-four",
    "forty-five",
    "twelve hundred and six",
    "two thousand one hundred",
    "ninety nine",
]
HYPS = [
    "one thousand two hundred thirty four",
    "forty-five",
    "twelve hundred six",
    "two thousand, one hundred",
    "ninety-nine",
]


def test_bleu_from_summed_stats_is_corpus_bleu():
    total = [
        sum(col)
        for col in zip(*(bleu_stats(h, r) for h, r in zip(HYPS, REFS, strict=True)), strict=True)
    ]
    assert bleu_from_stats(total) == pytest.approx(corpus_bleu(HYPS, REFS))
    # by hand for one sentence: 3 words vs 4 in the reference, matches 3/3, 2/2, 1/1, 0/0 ...
    assert bleu_stats("a b c", "a b c d")[:6] == [3, 4, 3, 3, 2, 2]
    assert bleu_from_stats(bleu_stats("a b c d", "a b c d")) == pytest.approx(100.0)


def test_bleu_stats_bad_arguments():
    with pytest.raises(ValueError, match="max_n"):
        bleu_stats("a", "a", max_n=0)
    with pytest.raises(ValueError, match="stats"):
        bleu_from_stats([1, 2, 3])


def test_paired_bleu_interval():
    refs = REFS * 8
    same = paired_bleu_interval(HYPS * 8, HYPS * 8, refs)
    assert same.mean == 0 and same.low == 0 and same.high == 0
    better = paired_bleu_interval(refs, HYPS * 8, refs, n_boot=500)
    assert better.mean == pytest.approx(100.0 - corpus_bleu(HYPS * 8, refs))
    assert 0 < better.low <= better.mean <= better.high
    flipped = paired_bleu_interval(HYPS * 8, refs, refs, n_boot=500)
    assert flipped.high < 0  # a - b, not b - a
    with pytest.raises(ValueError, match="outputs"):
        paired_bleu_interval(HYPS, HYPS[:-1], REFS)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bleu_interval(HYPS, HYPS, REFS, n_boot=10)


def test_token_prompts_start_lines():
    tok = char_tokenizer()
    text = "".join(f"line number {i} here\n" for i in range(50))
    ids = torch.tensor(tok.encode(text))
    p = token_prompts(ids, tok, 10, 6, seed=3)
    assert p.shape == (10, 6)
    for row in p:
        assert tok.decode(row.tolist()) == "line n"
    assert torch.equal(p, token_prompts(ids, tok, 10, 6, seed=3))
    with pytest.raises(ValueError, match="n="):
        token_prompts(ids, tok, 0, 6)
    with pytest.raises(ValueError, match="line start"):
        token_prompts(torch.tensor(tok.encode("abcdefghij")), tok, 2, 3)


def tiny_lm(seed=0, vocab=11, block=16):
    torch.manual_seed(seed)
    return TinyLM(TinyLMConfig(vocab, d_model=16, n_layers=1, n_heads=2, block_size=block)).eval()


def test_coherence_proxy():
    model = tiny_lm()
    x = torch.tensor([[1, 2, 3, 1, 2, 3], [1, 1, 1, 5, 6, 7]])
    c = coherence(model, x, 3)
    assert c[0].item() == pytest.approx(1.0, abs=1e-5)  # same tokens on both sides
    assert c[1].item() < 0.999
    with pytest.raises(ValueError, match="prompt_len"):
        coherence(model, x, 6)


def test_generation_report_per_prompt_values():
    tok = char_tokenizer()
    model = tiny_lm(vocab=tok.vocab_size)
    x = torch.tensor([tok.encode("ab cd ab cd ab"), tok.encode("xy zw uv st qr")])
    r = generation_report(model, x, 3, tok)
    assert len(r.nll) == len(r.nll_char) == len(r.coherence) == 2
    assert r.expert_nll == pytest.approx(sum(r.nll) / 2, rel=1e-5)
    assert r.nll_char == pytest.approx(r.nll)  # one character per token
    assert r.rep[3] == pytest.approx(sum(r.rep_each[3]) / 2)
    assert r.rep_each[2][0] > 0 and r.rep_each[2][1] == 0  # "cd ab cd ab" repeats, row 2 not


def test_timed_speedup_alternates_and_counts():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]])
    target, draft = BigramLM.from_probs(p), BigramLM.from_probs(p)
    rows = timed_speedup(target, draft, [torch.zeros(1, 2, dtype=torch.long)] * 2, 5, 2, repeats=3)
    assert len(rows) == 2 and all(len(r.plain) == len(r.speculative) == 3 for r in rows)
    assert all(r.speedup > 0 for r in rows)
    with pytest.raises(ValueError, match="repeats"):
        timed_speedup(target, draft, [torch.zeros(1, 2, dtype=torch.long)], 5, 2, repeats=0)
    with pytest.raises(ValueError, match="prompts"):
        timed_speedup(target, draft, [], 5, 2)
