"""Parity of adaedu's Mixtral block with HuggingFace transformers' ``MixtralSparseMoeBlock``.

Needs the optional ``parity`` dependencies (``pip install -e ".[parity]"``); skipped otherwise.
"""

import pytest
import torch

pytest.importorskip("transformers")
from transformers import MixtralConfig  # noqa: E402
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock  # noqa: E402
from transformers.models.switch_transformers.modeling_switch_transformers import (  # noqa: E402
    load_balancing_loss_func,
    router_z_loss_func,
)

from adaedu.moe.dispatch import dispatch_per_token  # noqa: E402
from adaedu.moe.layer import MixtralMoE  # noqa: E402
from adaedu.moe.losses import router_z_loss, switch_balance_loss  # noqa: E402

TOL = 1e-5


def hf_block(d: int, h: int, n_experts: int, k: int, seed: int) -> MixtralSparseMoeBlock:
    config = MixtralConfig(
        hidden_size=d,
        intermediate_size=h,
        num_local_experts=n_experts,
        num_experts_per_tok=k,
        router_jitter_noise=0.0,
    )
    block = MixtralSparseMoeBlock(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a fresh block's parameters are torch.empty: initialise them
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    return block


@pytest.mark.parametrize(
    ("d", "h", "n_experts", "k", "batch", "seq"),
    [(16, 32, 4, 2, 2, 7), (32, 64, 8, 2, 3, 33), (24, 40, 8, 1, 1, 50), (8, 16, 6, 3, 4, 5)],
)
def test_mixtral_block_matches_hf(d, h, n_experts, k, batch, seq):
    torch.manual_seed(0)
    hf = hf_block(d, h, n_experts, k, seed=d + n_experts)
    ours = MixtralMoE.from_hf(hf).eval()
    x = torch.randn(batch, seq, d)
    with torch.no_grad():
        expected = hf(x.clone())  # HF may scale its input in place (jitter); give it a copy
        hf_logits, hf_weights, hf_index = hf.gate(x.reshape(-1, d))
        y, aux = ours(x)
    routing = aux.routing
    assert y.shape == x.shape
    assert (y - expected).abs().max() < TOL
    assert (routing.logits - hf_logits).abs().max() < TOL
    assert torch.equal(routing.chosen, hf_index)
    # the combine weights, token by token and in HF's order (best expert first)
    weights = torch.zeros(batch * seq, n_experts).index_put_(
        (routing.token, routing.expert), routing.weight
    )
    assert (weights.gather(1, hf_index) - hf_weights).abs().max() < TOL
    # and the slow per-token reference agrees with both
    assert (
        dispatch_per_token(x.reshape(-1, d), routing, ours.experts).reshape_as(y) - expected
    ).abs().max() < TOL


def test_load_hf_checks_shapes_and_k():
    hf = hf_block(16, 32, 4, 2, seed=0)
    with pytest.raises(ValueError, match="gate_up_proj"):
        MixtralMoE(16, 48, 4, 2).load_hf(hf)  # wrong hidden width
    with pytest.raises(ValueError, match="top_k"):
        MixtralMoE(16, 32, 4, 1).load_hf(hf)
    with pytest.raises(ValueError, match="MixtralSparseMoeBlock"):
        MixtralMoE(16, 32, 4, 2).load_hf(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_switch_losses_match_hf_switch_transformers(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(1, 40, 6, generator=gen)  # one group of 40 tokens, 6 experts
    probs = torch.softmax(logits, dim=-1)
    chosen = logits.argmax(dim=-1)
    ours = switch_balance_loss(probs[0], chosen[0].unsqueeze(1))
    assert ours.item() == pytest.approx(load_balancing_loss_func(probs, chosen).item(), rel=1e-5)
    assert router_z_loss(logits[0]).item() == pytest.approx(
        router_z_loss_func(logits).item(), rel=1e-5
    )
