"""The tiny decoder-only language model of adaedu.lm."""

import math

import pytest
import torch
from torch import nn

from adaedu import data, seed_everything
from adaedu.compute import forward_flops
from adaedu.decoding.sampling import sample
from adaedu.lm import (
    MLP,
    KVCache,
    RMSNorm,
    SwiGLU,
    TinyLM,
    TinyLMConfig,
    apply_rotary,
    default_d_ff,
    lm_loss,
    rotary_angles,
)
from adaedu.train import train

V = 23


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and immune to oversubscribed CPUs (pytest -n 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides) -> TinyLM:
    torch.manual_seed(0)
    config = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, block_size=24)
    return TinyLM(TinyLMConfig(**{**config, **overrides})).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(V, (b, t), generator=torch.Generator().manual_seed(seed))


# --- the pieces ----------------------------------------------------------------------------------


def test_rmsnorm_matches_a_hand_computation():
    norm = RMSNorm(2, eps=1e-12)
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    rms = torch.tensor([[math.sqrt((9 + 16) / 2)], [math.sqrt(4 / 2)]])  # sqrt(mean x_i^2)
    torch.testing.assert_close(norm(x), x / rms)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(norm(x), x / rms * torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(norm(10 * x), norm(x))  # scale-invariant (eq. 4)


def test_rope_rotates_pairs_as_in_the_paper():
    d, m = 4, 3
    cos, sin = rotary_angles(torch.tensor([m]), d)
    theta = [1.0, 10000 ** (-2 / d)]  # theta_i = 10000^(-2(i-1)/d)
    rotation = torch.zeros(d, d)  # eq. 15: block-diagonal 2x2 rotations by m theta_i
    for i, th in enumerate(theta):
        c, s = math.cos(m * th), math.sin(m * th)
        rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]])
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(apply_rotary(x, cos, sin), x @ rotation.T)
    cos0, sin0 = rotary_angles(torch.tensor([0]), d)
    torch.testing.assert_close(apply_rotary(x, cos0, sin0), x)  # position 0: no rotation


def test_rope_scores_depend_only_on_the_offset():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)

    def score(m: int, n: int) -> float:
        (cq, sq), (ck, sk) = (
            rotary_angles(torch.tensor([m]), 16),
            rotary_angles(torch.tensor([n]), 16),
        )
        return float(apply_rotary(q, cq, sq) @ apply_rotary(k, ck, sk).T)

    for m, n in [(5, 2), (2, 5), (7, 7)]:
        for shift in (1, 13, 100):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)  # but it does depend on it


def test_ffn_sizes():
    assert default_d_ff("mlp", 128) == 512 and default_d_ff("swiglu", 128) == 344
    mlp, glu = MLP(128, 512), SwiGLU(128, 344)
    assert (
        abs(sum(p.numel() for p in glu.parameters()) / sum(p.numel() for p in mlp.parameters()) - 1)
        < 0.01
    )


# --- the model -----------------------------------------------------------------------------------


def test_shapes_and_outputs():
    model = tiny()
    x = tokens(3, 10)
    out = model(x)
    assert out.logits.shape == (3, 10, V) and out.loss is None and out.cache is None
    assert out.aux == [None, None]
    out = model(x, targets=tokens(3, 10, seed=1))
    assert out.loss.shape == () and abs(out.loss.item() - math.log(V)) < 0.1  # near uniform at init
    assert model.head.weight is model.embed.weight
    untied = tiny(tie_embeddings=False, ffn="mlp")
    assert untied.head.weight is not untied.embed.weight
    assert isinstance(untied.blocks[0].ffn, MLP) and isinstance(model.blocks[0].ffn, SwiGLU)


def test_a_future_token_does_not_change_past_logits():
    model = tiny()
    x = tokens(2, 12)
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % V
    a, b = model(x).logits, model(y).logits
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_kv_cache_gives_the_logits_of_a_full_pass():
    model = tiny()
    x = tokens(2, 20)
    full = model(x).logits
    cache = model.new_cache()
    parts = [model(x[:, :8], cache=cache).logits]  # prefill
    parts += [model(x[:, t : t + 1], cache=cache).logits for t in range(8, 15)]  # one at a time
    parts.append(model(x[:, 15:], cache=cache).logits)  # and a chunk
    assert cache.length == 20 and cache.keys[0].shape == (2, 4, 20, 8)
    assert (torch.cat(parts, dim=1) - full).abs().max() < 1e-5


def test_cache_rollback_and_reorder():
    model = tiny()
    x, draft = tokens(2, 16), tokens(2, 5, seed=7)
    cache = model.new_cache()
    model(x[:, :10], cache=cache)
    model(draft, cache=cache)  # speculate 5 tokens ...
    cache.truncate(10)  # ... reject them all
    assert cache.length == 10
    resumed = model(x[:, 10:], cache=cache).logits
    assert (resumed - model(x).logits[:, 10:]).abs().max() < 1e-5
    cache.reorder(torch.tensor([1, 1, 0]))  # beams: row 1 twice, then row 0
    cache.truncate(14)
    nxt = model(x[[1, 1, 0], 14:15], cache=cache).logits
    assert (nxt - model(x[[1, 1, 0], :15]).logits[:, 14:]).abs().max() < 1e-5
    cache.truncate(0)
    assert cache.length == 0 and cache.keys == [None, None]
    with pytest.raises(ValueError, match="n=3; allowed values: 0..0"):
        cache.truncate(3)


def test_context_longer_than_block_size_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match="block_size=24"):
        model(tokens(1, 25))
    cache = model.new_cache()
    model(tokens(1, 20), cache=cache)
    with pytest.raises(ValueError, match="20 cached \\+ 5 new tokens"):
        model(tokens(1, 5), cache=cache)
    with pytest.raises(ValueError, match="idx must be"):
        model(torch.zeros(2, 3))


class Doubler(nn.Module):
    """A dummy FFN following the protocol: returns (y, aux)."""

    def __init__(self, config: TinyLMConfig, layer: int):
        super().__init__()
        self.layer, self.scale = layer, nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.scale * x, {"layer": self.layer, "loss": x.pow(2).mean()}


def test_pluggable_ffn_aux_is_collected_per_layer():
    calls = []

    def factory(config, layer):
        calls.append((config.d_model, layer))
        return Doubler(config, layer) if layer % 2 else SwiGLU(config.d_model, 40)

    model = tiny(ffn=factory, n_layers=4)
    assert calls == [(32, 0), (32, 1), (32, 2), (32, 3)]
    out = model(tokens(2, 6), targets=tokens(2, 6, seed=1))
    assert [a if a is None else a["layer"] for a in out.aux] == [None, 1, None, 3]
    total = out.loss + sum(a["loss"] for a in out.aux if a is not None)
    total.backward()
    assert model.blocks[1].ffn.scale.grad is not None  # the aux loss reaches the FFN
    assert model.blocks[1].ffn.scale.item() == 2.0  # a plugged-in FFN keeps its own init

    with pytest.raises(TypeError, match="returned list; allowed values: a tensor y or a tuple"):
        tiny(ffn=lambda config, layer: ListFFN())(tokens(1, 3))


class ListFFN(nn.Module):
    """Breaks the protocol: returns a list."""

    def forward(self, x):
        return [x]


def test_config_errors_name_the_parameter():
    cases = [
        (dict(n_heads=5), "n_heads=5; allowed values: a divisor of d_model=32"),
        (dict(d_model=12, n_heads=4), "n_heads=4 gives head size 3; allowed values"),
        (dict(vocab_size=0), "vocab_size=0; allowed values: an integer >= 1"),
        (dict(n_layers=2.5), "n_layers=2.5; allowed values"),
        (dict(ffn="moe"), "ffn='moe'; allowed values: mlp, swiglu or a callable"),
        (dict(dropout=1.0), "dropout=1.0; allowed values: 0 <= dropout < 1"),
        (dict(d_ff=0), "d_ff=0; allowed values"),
        (dict(rope_base=0.5), "rope_base=0.5; allowed values"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            TinyLMConfig(**{"vocab_size": V, "d_model": 32, **bad})
    TinyLMConfig(vocab_size=V, d_model=32, n_heads=16)  # head size 2 is fine


def test_cached_sampling_matches_full_passes():
    model = tiny()
    prompt = tokens(2, 5)
    out = sample(model, prompt, max_new_tokens=8, temperature=0)
    assert out.shape == (2, 13) and torch.equal(out[:, :5], prompt)
    seq = prompt
    for _ in range(8):  # the slow way: a full pass per token
        seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    a = sample(model, prompt, 10, temperature=0.7, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    seq = prompt
    for _ in range(10):  # the slow way, drawing from softmax(z / T) with the same generator
        probs = torch.softmax(model(seq).logits[:, -1] / 0.7, dim=-1)
        seq = torch.cat([seq, torch.multinomial(probs, 1, generator=g)], dim=1)
    assert torch.equal(a, seq) and a.shape == (2, 15)
    assert torch.equal(sample(model, prompt, 0), prompt)
    assert sample(model, prompt, 20).shape == (2, 25)  # 24 tokens are fed: fits block_size
    with pytest.raises(ValueError, match="max_new_tokens=21; allowed values: 0..20"):
        sample(model, prompt, 21)
    with pytest.raises(ValueError, match="temperature=-1"):
        sample(model, prompt, 2, temperature=-1)


def test_forward_flops_counts_the_matrix_products():
    model = tiny(ffn="mlp")
    b, t, d, L = 2, 10, 32, 2
    per_layer = (
        2 * t * (3 * d * d + d * d + 2 * d * 4 * d) + 2 * 2 * t * t * d
    )  # linear + attention
    expected = b * (L * per_layer + 2 * t * d * V)  # + the output head
    assert forward_flops(model, tokens(b, t), per_example=False) == expected


def test_short_training_on_arithmetic_reduces_the_loss():
    seed_everything(0)
    corpus = data.text_corpus("arithmetic", "train")
    held_out = data.text_corpus("arithmetic", "validation").batch(
        64, 32, torch.Generator().manual_seed(1)
    )
    model = TinyLM(TinyLMConfig(vocab_size=corpus.tokenizer.vocab_size, d_model=64, n_layers=2))
    with torch.no_grad():
        before = lm_loss(model, held_out).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    train(
        model,
        lm_loss,
        corpus.batches(32, 32, seed=0),
        steps=150,
        optimizer=optimizer,
        progress=False,
    )
    model.eval()
    with torch.no_grad():
        after = lm_loss(model, held_out).item()
    assert before > 4.0 and after < 2.3, (before, after)  # ln(97) = 4.57; digit unigram ~2.6


def test_kv_cache_requires_layers():
    with pytest.raises(ValueError, match="n_layers=0"):
        KVCache(0)
