"""Switch Transformer experiments on the course's tiny LMs (notebook 2.2).

Fedus, Zoph & Shazeer (2021), *Switch Transformers*, https://arxiv.org/abs/2101.03961, and the
router z-loss of Zoph et al. (2022), *ST-MoE*, https://arxiv.org/abs/2202.08906.

- :func:`switch_lm` / :func:`dense_lm`  a :class:`adaedu.lm.TinyLM` whose FFNs are Switch layers
  (top-1, capacity factor, balance and z losses) or dense FFNs of the same active compute (or
  ``scale`` times wider, e.g. parameter-matched);
- :func:`verse_bpe_corpora`  the BPE verse data of notebook 2.3 (where FFN parameters pay);
- :func:`capacity_factor`    a context manager that evaluates a model at another capacity factor;
- :func:`moe_layers`         the Switch layers of a model;
- :func:`experts_alive`      how many experts receive a fair fraction of the choices.

Training and validation are :func:`adaedu.lm.training.train_lm` and
:func:`adaedu.lm.training.evaluate_lm`, shared by every LM notebook.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from torch import nn

from adaedu.data import TextCorpus, char_tokenizer, text_corpus, text_of
from adaedu.lm import BPETokenizer, TinyLM, TinyLMConfig
from adaedu.moe.experts import expert_kind, make_expert
from adaedu.moe.layer import MoEFeedForward, dense_equivalent, make_moe
from adaedu.moe.routers import SwitchRouter, _check_capacity_factor

__all__ = [
    "capacity_factor",
    "dense_lm",
    "experts_alive",
    "moe_layers",
    "switch_lm",
    "verse_bpe_corpora",
]


def _check_layers(layers: Sequence[int], n_layers: int) -> tuple[int, ...]:
    chosen = tuple(layers)
    if (
        not chosen
        or len(set(chosen)) < len(chosen)
        or not all(isinstance(i, int) and 0 <= i < n_layers for i in chosen)
    ):
        raise ValueError(
            f"layers={layers!r}; allowed values: distinct block indices in 0..{n_layers - 1}"
        )
    return chosen


def switch_lm(
    config: TinyLMConfig,
    n_experts: int = 8,
    d_expert: int = 128,
    *,
    layers: Sequence[int] | None = None,
    capacity_factor: float | None = 1.25,
    balance_weight: float,
    z_weight: float = 0.0,
    expert: str = "mlp",
) -> TinyLM:
    """A TinyLM whose FFN in the blocks ``layers`` (default: all) is a Switch layer.

    Each Switch layer routes each token to one of ``n_experts`` experts (ReLU MLPs d -> d_expert
    -> d, as in T5), with ``capacity_factor`` (eq. 3; None = dropless) per batch,
    ``balance_weight`` alpha (eq. 4, required: 0 for a no-aux arm, 0.01 in the paper) and
    ``z_weight`` c_z (ST-MoE eq. 5). The other blocks keep a
    dense MLP of width ``d_expert`` (the same kind as one expert).
    """
    moe_at = _check_layers(range(config.n_layers) if layers is None else layers, config.n_layers)

    def ffn(cfg: TinyLMConfig, layer: int) -> nn.Module:
        moe = make_moe(
            "switch",
            cfg.d_model,
            d_expert,
            n_experts,
            expert=expert,
            group="batch",
            loss_weights={"balance": balance_weight, "z": z_weight},
            capacity_factor=capacity_factor,
        )
        if layer in moe_at:
            return moe
        return moe.experts[0]  # a dense FFN of one expert's size

    return TinyLM(replace(config, ffn=ffn))


def dense_lm(
    config: TinyLMConfig,
    n_experts: int = 8,
    d_expert: int = 128,
    expert: str = "mlp",
    scale: float = 1.0,
) -> TinyLM:
    """The dense TinyLM with the same multiply-adds per token as :func:`switch_lm` (all layers
    Switch): each FFN is :func:`adaedu.moe.layer.dense_equivalent` of a Switch layer, i.e. one
    expert widened by the router's cost (width d_expert + E / 2 for a ReLU MLP). ``scale``
    multiplies that width (for a quality-vs-compute curve of dense models)."""
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale={scale!r}; allowed values: a number > 0")

    def ffn(cfg: TinyLMConfig, layer: int) -> nn.Module:
        moe = make_moe("switch", cfg.d_model, d_expert, n_experts, expert=expert)
        matched = dense_equivalent(moe)
        if scale == 1:
            return matched
        kind, d, hidden = expert_kind(matched)
        return make_expert(kind, d, max(1, round(scale * hidden)))

    return TinyLM(replace(config, ffn=ffn))


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """The MoE layers of ``model``, in order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; allowed: an nn.Module")
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


@contextmanager
def capacity_factor(model: nn.Module, factor: float | None) -> Iterator[None]:
    """Within the block, every Switch router of ``model`` uses ``factor`` (None: dropless);
    the training values come back afterwards. Switch Sec. 2.2 evaluates with a higher factor."""
    _check_capacity_factor(factor)
    routers = [m for m in model.modules() if isinstance(m, SwitchRouter)]
    saved = [r.capacity_factor for r in routers]
    for r in routers:
        r.capacity_factor = factor
    try:
        yield
    finally:
        for r, old in zip(routers, saved, strict=True):
            r.capacity_factor = old


def experts_alive(counts: Sequence[int], threshold: float = 0.1) -> int:
    """Experts asked for by at least ``threshold`` times an equal share of the choices
    ``counts`` (tokens per expert, e.g. ``LMEval.choice_counts[layer]``)."""
    if len(counts) == 0 or min(counts) < 0 or sum(counts) <= 0:
        raise ValueError("counts must be a non-empty sequence of token counts >= 0, not all zero")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold={threshold!r}; allowed values: a number in [0, 1]")
    mean = sum(counts) / len(counts)
    return sum(c >= threshold * mean for c in counts)


def verse_bpe_corpora(vocab_size: int = 512) -> tuple[BPETokenizer, TextCorpus, TextCorpus]:
    """Notebook 2.3's data: the shipped Shakespeare verse, a BPE tokenizer of ``vocab_size``
    symbols trained on the train split (Sennrich et al. 2016), and the train and validation
    corpora it tokenizes. Word pieces make the FFN store token-specific statistics, so extra
    expert parameters can pay at a few hundred steps (they cannot on characters)."""
    tokenizer = BPETokenizer.train(text_of("verse", "train"), vocab_size, base=char_tokenizer())
    return (
        tokenizer,
        text_corpus("verse", "train", tokenizer),
        text_corpus("verse", "validation", tokenizer),
    )
