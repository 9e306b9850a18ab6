"""Tests of adaedu.decoding.beam (Sutskever et al., 2014; Wu et al., 2016) and the spelling task."""

import itertools
import math
import random

import pytest
import torch

from adaedu.decoding.beam import (
    LMScorer,
    PrefixScorer,
    beam_search,
    greedy_decode,
    length_penalty,
)
from adaedu.decoding.sampling import sample
from adaedu.decoding.spelling import (
    corpus_bleu,
    make_text,
    most_likely,
    sample_spelling,
    split_numbers,
    variants,
)
from adaedu.lm import TinyLM, TinyLMConfig

EOS = 0


def random_table_model(vocab=4, seed=0, sharp=2.0):
    """A hand-made model: next-token log-probs a fixed random function of the prefix."""

    def fn(prefixes):
        rows = []
        for p in prefixes:
            g = torch.Generator().manual_seed(hash((seed, *p)) % (2**31))
            rows.append(
                (torch.randn(vocab, generator=g, dtype=torch.float64) * sharp).log_softmax(-1)
            )
        return torch.stack(rows)

    return fn


def exact_argmax(fn, prompt, vocab, max_new, eos):
    """Enumerate every output of up to max_new tokens: the true most likely one."""
    best, best_lp = None, -math.inf
    for n in range(1, max_new + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if any(t == eos for t in seq[:-1]):
                continue  # nothing follows an end of sequence
            lp = sum(fn([list(prompt) + list(seq[:i])])[0, seq[i]].item() for i in range(n))
            finished = seq[-1] == eos
            if (finished or n == max_new) and lp > best_lp and finished:
                best, best_lp = list(seq), lp
    return best, best_lp


def greedy_trap(prefixes):
    """First token: A (1) p=0.6, B (2) p=0.4. After A: four tokens of 0.25 then EOS;
    after B: EOS with p=1. Greedy: A then 0.25 -> 0.15; best: B EOS -> 0.4."""
    out = []
    for p in prefixes:
        gen = p[1:]
        if not gen:  # token 5 is the prompt
            probs = [0.0, 0.6, 0.4, 0.0, 0.0, 0.0]
        elif gen[0] == 2 or len(gen) >= 2:
            probs = [1.0, 0, 0, 0, 0, 0]
        else:
            probs = [0.0, 0.0, 0.3, 0.25, 0.25, 0.2]
        out.append(torch.tensor(probs, dtype=torch.float64).log())
    return torch.stack(out)


def test_beam_finds_the_exact_argmax_where_greedy_fails():
    g_tokens, g_lp = greedy_decode(PrefixScorer(greedy_trap), [5], 4, eos=EOS)
    assert math.isclose(math.exp(g_lp), 0.18) and g_tokens == [1, 2, EOS]
    res1 = beam_search(PrefixScorer(greedy_trap), [5], width=1, max_new_tokens=4, eos=EOS)
    assert res1.best.tokens == g_tokens
    res2 = beam_search(PrefixScorer(greedy_trap), [5], width=2, max_new_tokens=4, eos=EOS)
    assert res2.best.tokens == [2, EOS] and math.isclose(math.exp(res2.best.log_prob), 0.4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_equals_enumeration(seed):
    fn, vocab, max_new = random_table_model(4, seed), 4, 4
    truth, truth_lp = exact_argmax(fn, [1], vocab, max_new, EOS)
    res = beam_search(PrefixScorer(fn), [1], width=vocab**max_new, max_new_tokens=max_new, eos=EOS)
    assert res.best.tokens == truth
    assert math.isclose(res.best.log_prob, truth_lp, rel_tol=1e-9)
    # log-probability of the best complete hypothesis never falls as the beam widens here
    lps = [
        beam_search(PrefixScorer(fn), [1], width=w, max_new_tokens=max_new, eos=EOS).best.log_prob
        for w in (1, 4, 16, 256)
    ]
    assert lps[-1] == max(lps)


def test_width_one_is_greedy_on_a_tiny_lm():
    torch.manual_seed(0)
    model = TinyLM(TinyLMConfig(vocab_size=9, d_model=32, n_layers=2, n_heads=2, block_size=32))
    prompt = [3, 1, 4]
    res = beam_search(LMScorer(model), prompt, width=1, max_new_tokens=10, eos=None)
    ref = sample(model, torch.tensor([prompt]), 10, temperature=0)[0, 3:].tolist()
    assert res.best.tokens == ref
    tokens, lp = greedy_decode(LMScorer(model), prompt, 10)
    assert tokens == ref and math.isclose(res.best.log_prob, lp, rel_tol=1e-5)
    assert res.model_calls == 10 and res.tokens_scored == 3 + 9 and res.flops > 0


def test_lm_scorer_cache_reorder_matches_prefix_scorer():
    torch.manual_seed(1)
    model = TinyLM(TinyLMConfig(vocab_size=6, d_model=32, n_layers=2, n_heads=2, block_size=32))
    model.eval()

    def full(prefixes):
        with torch.no_grad():
            return model(torch.tensor(prefixes)).logits[:, -1].double().log_softmax(-1)

    a = beam_search(LMScorer(model), [1, 2], width=3, max_new_tokens=6, eos=0)
    b = beam_search(PrefixScorer(full), [1, 2], width=3, max_new_tokens=6, eos=0)
    assert [h.tokens for h in a.hypotheses] == [h.tokens for h in b.hypotheses]
    assert a.model_calls == b.model_calls and a.tokens_scored == b.tokens_scored


def short_or_long(prefixes):
    """EOS at once (p=0.4) or A (0.6); after A: B (0.6) or C (0.4); then EOS surely.
    Raw log-probabilities: 'EOS' log 0.4 = -0.92 beats 'A B EOS' log 0.36 = -1.02; divided by
    lp(1) = 1 and lp(3) = 8/6 the long one wins: -0.77 > -0.92."""
    table = {0: [0.4, 0.6, 0.0, 0.0], 1: [0.0, 0.0, 0.6, 0.4], 2: [1.0, 0.0, 0.0, 0.0]}
    return torch.stack(
        [torch.tensor(table[min(len(p) - 1, 2)], dtype=torch.float64).log() for p in prefixes]
    )


def test_length_normalisation_changes_the_winner():
    raw = beam_search(PrefixScorer(short_or_long), [3], 2, 8, eos=0, early_stop=False)
    stopped = beam_search(PrefixScorer(short_or_long), [3], 2, 8, eos=0)
    assert stopped.best.tokens == [0] and stopped.model_calls == 2 < raw.model_calls
    normed = beam_search(PrefixScorer(short_or_long), [3], 2, 8, eos=0, length_a=1.0)
    assert raw.best.tokens == [0]  # the shortest output wins on raw log-probability
    assert normed.best.tokens == [1, 2, 0]  # dividing by lp(Y) favours the longer one
    assert raw.best.log_prob > normed.best.log_prob
    assert normed.best.score == pytest.approx(math.log(0.36) / length_penalty(3, 1.0))
    assert [h.finished for h in raw.hypotheses] == [True, True, True]


def test_length_penalty_values():
    assert length_penalty(1, 0.0) == 1.0
    assert length_penalty(1, 1.0) == 1.0
    assert length_penalty(7, 1.0) == 2.0
    assert length_penalty(7, 0.5) == pytest.approx(math.sqrt(2))


def test_bad_arguments_raise():
    s = PrefixScorer(greedy_trap)
    with pytest.raises(ValueError, match="width"):
        beam_search(s, [5], width=0, max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        beam_search(s, [5], width=2, max_new_tokens=0)
    with pytest.raises(ValueError, match="eos"):
        beam_search(s, [5], width=2, max_new_tokens=3, eos=99)
    with pytest.raises(ValueError, match="prompt"):
        beam_search(s, [], width=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="a="):
        length_penalty(3, -1.0)
    with pytest.raises(ValueError, match="n="):
        variants(0)
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])


def test_spelling_task():
    assert variants(1234) == pytest.approx(variants(1234))
    for n in (1, 19, 20, 45, 100, 999, 1000, 1234, 2100, 9999):
        v = variants(n)
        assert math.isclose(sum(v.values()), 1.0)
    v = variants(1234)
    assert v["twelve hundred thirty-four"] == pytest.approx(0.4 * 0.7 * 0.7)
    assert v["one thousand, two hundred and thirty four"] == pytest.approx(0.25 * 0.3 * 0.3)
    assert most_likely(1234) == "twelve hundred thirty-four"
    assert most_likely(45) == "forty-five" and variants(7) == {"seven": 1.0}
    rng = random.Random(0)
    draws = [sample_spelling(1234, rng) for _ in range(4000)]
    assert abs(draws.count("twelve hundred thirty-four") / 4000 - 0.196) < 0.03
    train, test = split_numbers(100, seed=0)
    assert len(test) == 100 and not set(train) & set(test)
    assert make_text(test, 5).count("\n") == 5


def test_corpus_bleu():
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    assert corpus_bleu(["x y z w"], ["a b c d"]) == 0.0
    # clipped precision: "the the the the" against "the cat" counts "the" once
    hyp, ref = ["a b c d e f"], ["a b c d e g"]
    p = [5 / 6, 4 / 5, 3 / 4, 2 / 3]
    assert corpus_bleu(hyp, ref) == pytest.approx(100 * math.exp(sum(map(math.log, p)) / 4))
    short = corpus_bleu(["a b c d"], ["a b c d e f g h"])
    assert short == pytest.approx(100 * math.exp(1 - 8 / 4))  # brevity penalty
    assert corpus_bleu(["the the the the"], ["the cat"], max_n=1) == pytest.approx(25.0)


@pytest.mark.parametrize("seed", [0, 3])
def test_early_stop_keeps_the_best_and_saves_calls(seed):
    fn = random_table_model(5, seed, sharp=3.0)
    full = beam_search(PrefixScorer(fn), [1], 6, 8, eos=EOS, early_stop=False)
    fast = beam_search(PrefixScorer(fn), [1], 6, 8, eos=EOS, early_stop=True)
    assert fast.best.tokens == full.best.tokens and fast.best.log_prob == full.best.log_prob
    assert fast.model_calls <= full.model_calls
