"""adaedu.decoding.ngram: count-based n-gram models with the decoding interface."""

from __future__ import annotations

import pytest
import torch

from adaedu.decoding.ngram import BigramLM, NGramLM
from adaedu.decoding.sampling import sample
from adaedu.decoding.speculative import SpeculativeStats, speculative_sample


def test_smoothed_counts_by_hand():
    # vocabulary {0, 1, 2}; text 0 1 0 1 2: unigrams N(0)=2, N(1)=2, N(2)=1 of 5
    text = torch.tensor([0, 1, 0, 1, 2])
    k = 2.0
    uni = torch.tensor([3.0, 3.0, 2.0]) / 8  # (N(c) + 1) / (N + V)
    bi = NGramLM.from_tokens([text], 3, order=2, k=k).probs().double()
    # after 1: N(1, 0) = 1, N(1, 2) = 1, N(1) = 2
    expected_1 = (torch.tensor([1.0, 0.0, 1.0]) + k * uni) / (2 + k)
    assert torch.allclose(bi[1], expected_1.double(), atol=1e-6)
    # after 2: never seen, so the unigram distribution
    assert torch.allclose(bi[2], uni.double(), atol=1e-6)
    tri = NGramLM.from_tokens([text], 3, order=3, k=k).probs().double()
    # history (0, 1): followed by 0 once and by 2 once; backs off to p(. | 1)
    expected_01 = (torch.tensor([1.0, 0.0, 1.0]) + k * expected_1) / (2 + k)
    assert torch.allclose(tri[0, 1], expected_01.double(), atol=1e-6)
    assert torch.allclose(tri.sum(-1), torch.ones(3, 3, dtype=torch.float64), atol=1e-6)


def test_forward_uses_the_previous_tokens_and_the_cache():
    torch.manual_seed(0)
    model = NGramLM(torch.randn(5, 5, 5))
    seq = torch.tensor([[1, 4, 2, 0, 3, 3]])
    full = model(seq).logits
    assert full.shape == (1, 6, 5)
    for t in range(1, 6):  # position t sees (x_{t-1}, x_t)
        assert torch.equal(full[0, t], model.table[seq[0, t - 1], seq[0, t]])
    assert torch.equal(full[0, 0], model.table[0, seq[0, 0]])  # padded with token 0
    cache = model.new_cache()
    parts = [model(seq[:, :3], cache=cache).logits, model(seq[:, 3:4], cache=cache).logits]
    parts.append(model(seq[:, 4:], cache=cache).logits)
    assert torch.equal(torch.cat(parts, dim=1), full)
    cache.truncate(2)  # roll back, then feed other tokens
    other = model(torch.tensor([[0, 0]]), cache=cache).logits
    assert torch.equal(other, model(torch.tensor([[1, 4, 0, 0]])).logits[:, 2:])


def test_bigram_is_a_lookup_of_the_last_token():
    probs = torch.softmax(torch.randn(4, 4), -1)
    model = BigramLM.from_probs(probs)
    seq = torch.tensor([[3, 0, 2]])
    assert torch.allclose(torch.softmax(model(seq).logits[0], -1), probs[seq[0]], atol=1e-6)


def test_a_draft_equal_to_the_target_is_always_accepted():
    # the target is the same trigram model: every draft is accepted
    text = torch.randint(6, (400,), generator=torch.Generator().manual_seed(1))
    tri = NGramLM.from_tokens([text], 6, order=3)
    stats = SpeculativeStats()
    prompt = torch.tensor([[1, 2]])
    out = speculative_sample(tri, tri, prompt, 30, 4, generator=torch.Generator(), stats=stats)
    assert stats.accepted == stats.drafted and out.shape == (1, 32)
    greedy = speculative_sample(tri, tri, prompt, 30, 4, temperature=0.0)
    assert torch.equal(greedy, sample(tri, prompt, 30, temperature=0.0))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="allowed: \\(V, V\\), \\(V, V, V\\)"):
        NGramLM(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="allowed: \\(V, V\\)"):
        BigramLM(torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match="pad=7"):
        NGramLM(torch.zeros(3, 3), pad=7)
    with pytest.raises(ValueError, match="order=4; allowed values: 2 or 3"):
        NGramLM.from_tokens([torch.tensor([0, 1])], 2, order=4)
    with pytest.raises(ValueError, match="k=0"):
        NGramLM.from_tokens([torch.tensor([0, 1])], 2, order=2, k=0)
    model = NGramLM(torch.zeros(3, 3), block_size=4)
    with pytest.raises(ValueError, match="block_size=4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="n=3; allowed values: 0..2"):
        cache.truncate(3)
