"""Tests of adaedu.moe.offload (notebook 2.13, Eliseev & Mazur 2023) and its exercises."""

import functools
import math

import pytest
import torch

from adaedu.exercises import eliseev2023 as ex
from adaedu.lm import TinyLM, TinyLMConfig
from adaedu.moe import offload as off
from adaedu.moe.layer import MixtralMoE

# A hand-made trace, E = 4 experts, k = 2 per token (hit counts worked out in the comments).
TRACE = torch.tensor([[0, 1], [1, 2], [0, 2], [3, 0], [1, 2]])


def hits(requests, capacity, policy, **kw):
    return int((~off.simulate_cache(requests, capacity, policy, **kw)).sum())


# --- cache policies on hand-made traces -------------------------------------------------------


def test_capacity_two_keeps_the_previous_tokens_experts_for_every_policy():
    # t0: 2 misses; t1: 1 hit; t2: 2 hit, 0 miss; t3: 0 hit, 3 miss; t4: 2 misses -> 3 hits
    for policy in off.POLICIES:
        assert hits(TRACE, 2, policy, n_experts=4) == 3
    missed = off.simulate_cache(TRACE, 2, "lru", n_experts=4)
    assert missed.tolist() == [[1, 1], [0, 1], [1, 0], [1, 0], [1, 1]]


def test_lru_capacity_three_by_hand():
    # t0 m m | t1 h m | t2 h h | t3 m (evicts 1, the LRU of {1, 2}) h | t4 m (0 and 3 tie at
    # time 3: the lowest id 0 goes) h  -> 5 hits
    missed = off.simulate_cache(TRACE, 3, "lru", n_experts=4)
    assert missed.tolist() == [[1, 1], [0, 1], [0, 0], [1, 0], [1, 0]]


def test_lru_fifo_and_belady_differ_on_a_single_expert_trace():
    seq = torch.tensor([[0], [1], [0], [2], [0], [1]])
    # LRU: m m h m(evicts 1) h m -> 2 hits; FIFO would evict 0 at t3 and get 1 hit
    assert hits(seq, 2, "lru") == 2
    assert ex._fifo_hits(seq, 2) == 1
    cyclic = torch.tensor([[0], [1], [2], [0], [1], [2]])
    assert hits(cyclic, 2, "lru") == 0  # LRU thrashes on a cycle longer than the cache
    # Belady: t2 evicts 1 (next use t4, 0 is needed at t3); t3 hit; t4 evicts 0 (never again),
    # t5 hit -> 2 hits
    assert off.simulate_cache(cyclic, 2, "belady").flatten().tolist() == [1, 1, 1, 0, 1, 0]


def test_random_policy_is_seeded_and_uses_the_generator():
    cyclic = torch.tensor([[0], [1], [2]] * 20)
    runs = [hits(cyclic, 2, "random", generator=torch.Generator().manual_seed(s)) for s in range(6)]
    again = [
        hits(cyclic, 2, "random", generator=torch.Generator().manual_seed(s)) for s in range(6)
    ]
    assert runs == again
    assert len(set(runs)) > 1 and max(runs) > 0  # random escapes LRU's thrashing sometimes


def test_full_cache_misses_each_expert_once():
    gen = torch.Generator().manual_seed(0)
    trace = ex._local_trace(gen, 50, 6)
    for policy in off.POLICIES:
        missed = off.simulate_cache(trace, 6, policy, n_experts=6)
        assert int(missed.sum()) == len(trace.unique())


def _optimal_hits(requests, capacity):
    """Exhaustive search over every allowed eviction (same cache model as simulate_cache)."""
    reqs = [tuple(r) for r in requests.tolist()]
    flat = [(t, j) for t in range(len(reqs)) for j in range(len(reqs[t]))]

    @functools.cache
    def best(i, cache):
        if i == len(flat):
            return 0
        t, j = flat[i]
        e = reqs[t][j]
        if e in cache:
            return 1 + best(i + 1, cache)
        if len(cache) < capacity:
            return best(i + 1, cache | {e})
        candidates = [c for c in cache if c not in reqs[t]] or list(cache)
        return max(best(i + 1, (cache - {v}) | {e}) for v in candidates)

    return best(0, frozenset())


def test_belady_is_optimal_and_bounds_lru_and_random():
    gen = torch.Generator().manual_seed(1)
    strictly_better = 0
    for trial in range(40):
        n_experts = 5 + trial % 2
        trace = ex._local_trace(gen, 10, n_experts)
        for capacity in (3, 4):
            b = hits(trace, capacity, "belady", n_experts=n_experts)
            assert b == _optimal_hits(trace, capacity)
            assert hits(trace, capacity, "lru", n_experts=n_experts) <= b
            r = hits(trace, capacity, "random", n_experts=n_experts, generator=gen)
            assert r <= b
            strictly_better += hits(trace, capacity, "lru", n_experts=n_experts) < b
    assert strictly_better > 0  # the bound is not trivially tight


def test_next_uses_and_belady_victim():
    nxt = off.next_uses(TRACE, 4)
    assert nxt[0] == [2, 1, 1, 3]
    assert nxt[3] == [math.inf, 4, 4, math.inf]
    assert off.belady_victim([1, 2, 3], nxt[0]) == 3
    assert off.belady_victim([0, 3], nxt[3]) == 0  # both never used again: lowest id


def test_chance_rates():
    assert off.chance_hit_rate(8, 2) == 0.25
    assert math.isclose(off.chance_any_hit(8, 2, 2), 1 - 15 / 28)
    # a uniformly random trace reaches the chance rate with LRU at capacity 2
    gen = torch.Generator().manual_seed(0)
    trace = torch.stack([torch.randperm(8, generator=gen)[:2] for _ in range(4000)])
    assert abs(1 - off.simulate_cache(trace, 2, "lru").float().mean().item() - 0.25) < 0.015


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="policy"):
        off.simulate_cache(TRACE, 2, "lfu")
    with pytest.raises(ValueError, match="capacity"):
        off.simulate_cache(TRACE, 5, "lru", n_experts=4)
    with pytest.raises(ValueError, match="requests"):
        off.simulate_cache(TRACE.float(), 2, "lru", n_experts=4)
    with pytest.raises(ValueError, match="transfer_seconds"):
        off.tokens_per_second(1.0, 0.01, -1.0)


def test_tokens_per_second():
    tps = off.tokens_per_second(torch.tensor([0.0, 2.0]), 0.05, 0.025)
    assert torch.allclose(tps, torch.tensor([20.0, 10.0], dtype=torch.float64))
    assert off.copy_seconds(1 << 16, "cpu", repeats=2) > 0


# --- traces of a tiny model ---------------------------------------------------------------------


def _tiny_model(n_layers=3, seed=0):
    torch.manual_seed(seed)
    config = TinyLMConfig(
        vocab_size=11,
        d_model=16,
        n_layers=n_layers,
        n_heads=2,
        block_size=24,
        ffn=lambda c, layer: MixtralMoE(c.d_model, 16, 8, 2),
    )
    model = TinyLM(config)
    for ffn in (b.ffn for b in model.blocks):
        torch.nn.init.normal_(ffn.router.linear.weight, std=1.0)
    return model


def test_trace_records_the_generation():
    model = _tiny_model()
    prompts = torch.randint(11, (3, 5), generator=torch.Generator().manual_seed(0))
    trace = off.record_expert_trace(model, prompts, 8, temperature=0)
    assert trace.experts.shape == (3, 8, 3, 2) and trace.hidden.shape == (3, 8, 3, 16)
    assert trace.tokens.shape == (3, 13) and trace.n_experts == 8
    assert (trace.experts[..., 0] != trace.experts[..., 1]).all()
    with torch.no_grad():  # the last layer's hidden state gives the next (greedy) token
        logits = model.head(model.norm(trace.hidden[:, :, -1]))
        assert torch.equal(logits.argmax(-1)[:, :-1], trace.tokens[:, 6:])


def test_speculation_is_exact_when_the_next_attention_adds_nothing():
    model = _tiny_model()
    with torch.no_grad():
        model.blocks[1].attn.out.weight.zero_()  # layer 1's FFN input = layer 0's output
    prompts = torch.randint(11, (2, 4), generator=torch.Generator().manual_seed(1))
    trace = off.record_expert_trace(model, prompts, 10, temperature=0)
    guesses = off.speculative_guesses(model, trace, ahead=1)
    assert (guesses[:, :, 0] == -1).all()
    assert torch.equal(guesses[:, :, 1].sort(-1).values, trace.experts[:, :, 1].sort(-1).values)
    recall = off.speculative_recall(guesses, trace.experts)
    assert math.isnan(recall[0]) and recall[1] == 1.0 and 0 <= recall[2] <= 1


def test_speculative_recall_by_hand():
    experts = torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])  # (T=2, L=2, k=2)
    guesses = torch.tensor([[[-1, -1], [3, 0]], [[-1, -1], [7, 6]]])
    recall = off.speculative_recall(guesses, experts)
    assert math.isnan(recall[0]) and recall[1] == 0.75  # token 0 finds 1 of 2, token 1 both


def test_cache_study_shapes_and_bounds():
    model = _tiny_model(n_layers=2)
    prompts = torch.randint(11, (2, 4), generator=torch.Generator().manual_seed(2))
    trace = off.record_expert_trace(model, prompts, 12, generator=torch.Generator().manual_seed(0))
    study = off.cache_study(trace)
    assert study.capacities == list(range(1, 9))
    for policy in off.POLICIES:
        assert study.hit_rate[policy].shape == (8, 2)
        assert (study.hit_rate[policy] <= study.hit_rate["belady"] + 1e-9).all()
    assert torch.equal(study.hit_rate["lru"][1], study.hit_rate["random"][1])  # c = k: no choice


# --- exercises -----------------------------------------------------------------------------------


def _not_implemented(*args):
    raise NotImplementedError


def _q1_fifo(requests, capacity):
    return ex._fifo_hits(requests, capacity)


def _q1_mru(requests, capacity):
    return ex._mru_hits(requests, capacity)


def _q1_belady(requests, capacity):
    return hits(requests, capacity, "belady")


def _q2_precision(logits, used, n_guess):
    return ex.guess_recall(logits, used, n_guess) * 2 / n_guess


def _q2_top1(logits, used, n_guess):
    return ex.guess_recall(logits, used, 1)


def _q2_positional(logits, used, n_guess):
    guess = logits.topk(max(n_guess, 2), dim=-1).indices[:, :2]
    return (guess == used).float().mean().item()


def _q3_soonest(cached, future):
    def first(e):
        rows = (future == e).any(-1).nonzero()
        return int(rows[0]) if len(rows) else math.inf

    return min(sorted(cached), key=first)


def _q3_least_frequent(cached, future):
    return min(sorted(cached), key=lambda e: int((future == e).sum()))


def _q3_highest_id_tie(cached, future):
    def first(e):
        rows = (future == e).any(-1).nonzero()
        return int(rows[0]) if len(rows) else math.inf

    return max(sorted(cached, reverse=True), key=first)


EXERCISES = {
    "q1": (ex.q1, [_q1_fifo, _q1_mru, _q1_belady]),
    "q2": (ex.q2, [_q2_precision, _q2_top1, _q2_positional]),
    "q3": (ex.q3, [_q3_soonest, _q3_least_frequent, _q3_highest_id_tie]),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_accepts_reference_and_rejects_mistakes(name):
    exercise, wrong_answers = EXERCISES[name]
    assert exercise.run_check(exercise.reference).passed
    result = exercise.run_check(_not_implemented)
    assert not result.passed and result.implemented is False
    for wrong in wrong_answers:
        result = exercise.run_check(wrong)
        assert not result.passed, wrong.__name__
        assert result.implemented


def test_exercise_diagnoses_speak_to_the_mistake():
    assert "FIFO" in ex.q1.run_check(_q1_fifo).message
    assert "most recently used" in ex.q1.run_check(_q1_mru).message
    assert "precision" in ex.q2.run_check(_q2_precision).message
    assert "soonest" in ex.q3.run_check(_q3_soonest).message


def test_prefetch_split_and_layer_seconds():
    model = _tiny_model()
    prompts = torch.randint(11, (2, 4), generator=torch.Generator().manual_seed(3))
    trace = off.record_expert_trace(model, prompts, 10, temperature=0)
    guesses = off.speculative_guesses(model, trace, 1)
    unguessed, guessed = off.prefetch_split(trace, guesses, 2)
    total = off.cache_study(trace, [2], ("lru",)).misses_per_token["lru"][0]
    assert torch.isclose((unguessed + guessed).sum(), total)
    assert guessed[0] == 0  # layer 0 has no guess
    # 1 unguessed and 2 guessed misses: 2 + 1 * 5 + max(0, 2 * 5 - 2) = 15
    seconds = off.layer_seconds(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.2]), 2.0, 5.0)
    assert seconds.tolist() == [15.0, 2.0]


# --- nulls and per-sequence statistics (issue 9 redesign of 2.13) ------------------------------


def test_forced_trace_reproduces_the_generated_trace():
    model = _tiny_model()
    prompts = torch.randint(11, (3, 5), generator=torch.Generator().manual_seed(3))
    trace = off.record_expert_trace(model, prompts, 9, generator=torch.Generator().manual_seed(1))
    forced = off.forced_expert_trace(model, trace.tokens, prompt=5)
    assert torch.equal(forced.experts, trace.experts)  # the same text gives the same routing
    assert torch.allclose(forced.hidden, trace.hidden, atol=1e-5)
    other = off.forced_expert_trace(_tiny_model(seed=1), trace.tokens, prompt=5)
    assert other.experts.shape == trace.experts.shape
    assert not torch.equal(other.experts, trace.experts)  # other weights, other routing
    with pytest.raises(ValueError, match="prompt"):
        off.forced_expert_trace(model, trace.tokens, prompt=0)


def test_shuffle_keeps_each_layers_marginals_and_destroys_the_order():
    g = torch.Generator().manual_seed(0)
    experts = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(2 * 50 * 3)])
    trace = off.ExpertTrace(experts.reshape(2, 50, 3, 2), torch.zeros(2, 50, 3, 4), None, 8)
    shuffled = off.shuffle_trace(trace, torch.Generator().manual_seed(1))
    for s in range(2):
        for layer in range(3):
            a, b = trace.experts[s, :, layer], shuffled.experts[s, :, layer]
            assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))
    assert not torch.equal(trace.experts, shuffled.experts)
    # a trace that repeats one set for 25 steps, then another, loses its locality when shuffled
    runs = torch.tensor([[0, 1]] * 25 + [[2, 3]] * 25).reshape(1, 50, 1, 2).repeat(8, 1, 1, 1)
    local = off.ExpertTrace(runs, torch.zeros(8, 50, 1, 4), None, 8)
    before = off.sequence_hit_rates(local, 2).mean()
    after = off.sequence_hit_rates(off.shuffle_trace(local, torch.Generator().manual_seed(2)), 2)
    assert before == pytest.approx(48 / 50) and after.mean() < 0.7


def test_sequence_hit_rates_average_to_the_cache_study():
    model = _tiny_model(n_layers=2)
    prompts = torch.randint(11, (3, 4), generator=torch.Generator().manual_seed(4))
    trace = off.record_expert_trace(model, prompts, 12, generator=torch.Generator().manual_seed(0))
    study = off.cache_study(trace, capacities=[2, 4], policies=("lru", "belady"))
    for i, c in enumerate((2, 4)):
        for policy in ("lru", "belady"):
            per_seq = off.sequence_hit_rates(trace, c, policy)
            assert per_seq.shape == (3,)
            assert per_seq.mean() == pytest.approx(study.overall(policy)[i].item(), abs=1e-6)
    pooled = off.concat_traces([trace, trace])
    assert pooled.experts.shape[0] == 6
    assert off.cache_study(pooled, [3]).overall("lru") == pytest.approx(
        off.cache_study(trace, [3]).overall("lru")
    )


def test_sequence_recall_by_hand():
    experts = torch.tensor([[[[0, 1], [2, 3]]], [[[4, 5], [6, 7]]]])  # (S=2, T=1, L=2, k=2)
    guesses = torch.tensor([[[[-1, -1], [3, 0]]], [[[-1, -1], [7, 6]]]])
    assert off.sequence_recall(guesses, experts).tolist() == [0.5, 1.0]  # layer 0 has no guess
    with pytest.raises(ValueError, match="guesses"):
        off.sequence_recall(guesses[0], experts[0])
