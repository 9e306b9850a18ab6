"""Tests of adaedu.decoding.contrastive (Li et al., 2022; O'Brien & Lewis, 2023)."""

import math

import pytest
import torch

from adaedu.decoding.contrastive import (
    continuation_nll,
    contrastive_scores,
    decode,
    diversity,
    plausible_mask,
    repetition,
)
from adaedu.decoding.sampling import sample
from adaedu.lm import TinyLM, TinyLMConfig


def logits_of(probs):
    return torch.tensor(probs).log()[None]


def test_plausibility_mask_excludes_the_largest_log_ratio():
    # token 3 is implausible for the expert (0.001 < 0.1 * 0.6) but the amateur finds it even
    # less likely: its log-ratio is the largest, so CD without the mask would choose it.
    expert = logits_of([0.6, 0.3, 0.099, 0.001])
    amateur = logits_of([0.7, 0.1, 0.199999, 0.000001])
    ratio = expert.log_softmax(-1) - amateur.log_softmax(-1)
    assert ratio.argmax().item() == 3  # the unmasked objective picks garbage
    assert plausible_mask(expert, 0.1).tolist() == [[True, True, True, False]]  # cutoff 0.06
    scores = contrastive_scores(expert, amateur, alpha=0.1)
    assert scores.argmax().item() == 1  # p_exp 0.3 vs p_ama 0.1: the largest plausible ratio
    assert math.isclose(scores[0, 1].item(), math.log(3.0), rel_tol=1e-5)
    assert scores[0, 3] == float("-inf") and scores[0, 2].isfinite()


def test_cd_differs_from_greedy_and_beta_zero_is_greedy():
    expert = logits_of([0.6, 0.3, 0.1])
    amateur = logits_of([0.8, 0.1, 0.1])
    assert expert.argmax().item() == 0
    assert contrastive_scores(expert, amateur, 0.1).argmax().item() == 1
    assert contrastive_scores(expert, amateur, 0.1, beta=0.0).argmax().item() == 0
    # O'Brien & Lewis: (1 + beta) s_e - beta s_a on the raw logits
    s = contrastive_scores(expert, amateur, 0.1, beta=0.5)
    assert torch.allclose(s, 1.5 * expert - 0.5 * amateur)
    # alpha = 1 keeps only the expert's argmax: CD reduces to greedy
    assert plausible_mask(expert, 1.0).sum().item() == 1


def test_mask_is_invariant_to_a_logit_shift():
    e = torch.randn(3, 11)
    assert torch.equal(plausible_mask(e, 0.1), plausible_mask(e + 7.0, 0.1))


def test_bad_arguments_raise():
    e = torch.randn(1, 5)
    with pytest.raises(ValueError, match="alpha"):
        plausible_mask(e, 0.0)
    with pytest.raises(ValueError, match="beta"):
        contrastive_scores(e, e, 0.1, beta=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        contrastive_scores(e, torch.randn(1, 6))
    model = TinyLM(TinyLMConfig(vocab_size=5, d_model=16, n_layers=1, n_heads=2, block_size=8))
    idx = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="method"):
        decode(model, idx, 3, "beam")
    with pytest.raises(ValueError, match="amateur"):
        decode(model, idx, 3, "contrastive")
    with pytest.raises(ValueError, match="max_new_tokens"):
        decode(model, idx, 20, "greedy")
    with pytest.raises(ValueError, match="top_p=0.0"):
        decode(model, idx, 3, "nucleus", top_p=0.0)


def small_model(seed, layers=1, d=16):
    torch.manual_seed(seed)
    cfg = TinyLMConfig(vocab_size=7, d_model=d, n_layers=layers, n_heads=2, block_size=16)
    return TinyLM(cfg)


def test_decode_with_cache_matches_full_recomputation():
    expert, amateur = small_model(0, 2, 32), small_model(1)
    for m in (expert, amateur):
        for p in m.parameters():
            p.data.mul_(20)  # sharper distributions, so that the choices differ
    idx = torch.randint(7, (3, 4), generator=torch.Generator().manual_seed(0))
    out = decode(expert, idx, 6, "contrastive", amateur=amateur)
    seq = idx
    for _ in range(6):  # no cache: rerun both models on the whole prefix
        s = contrastive_scores(expert(seq).logits[:, -1], amateur(seq).logits[:, -1], 0.1)
        seq = torch.cat([seq, s.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    greedy = decode(expert, idx, 6, "greedy")
    assert torch.equal(greedy, sample(expert, idx, 6, temperature=0))
    sampled = decode(
        expert, idx, 6, "nucleus", top_p=0.9, generator=torch.Generator().manual_seed(3)
    )
    ref = sample(expert, idx, 6, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sampled, ref) and torch.equal(sampled[:, :4], idx)


def test_continuation_nll_by_hand():
    model = small_model(2)
    tokens = torch.randint(7, (2, 6), generator=torch.Generator().manual_seed(1))
    nll = continuation_nll(model, tokens, prompt_len=3)
    logp = model(tokens).logits.log_softmax(-1)
    by_hand = -torch.stack(
        [logp[:, t - 1].gather(-1, tokens[:, t : t + 1])[:, 0] for t in (3, 4, 5)]
    )
    assert torch.allclose(nll, by_hand.mean(0), atol=1e-5)


def test_repetition_and_diversity():
    assert repetition("a b c a b c", n=3) == pytest.approx(1 - 3 / 4)
    assert repetition("the cat sat on the mat", n=2) == 0.0
    assert repetition("one two", n=3) == 0.0
    assert diversity(["a b c d e f"]) == 1.0
    assert diversity(["a a a a a a"]) < 0.05
