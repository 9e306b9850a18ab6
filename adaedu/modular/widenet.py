"""WideNet (Xue et al., "Go Wider Instead of Deeper", AAAI 2022, arXiv:2107.11817): share
parameters across depth, as ALBERT and the Universal Transformer do, and win back the capacity
that sharing loses by going wider with a mixture of experts.

Three ways to spend the depth of the course's :class:`~adaedu.modular.vit.TinyViT`:

- **ViT** (Dosovitskiy et al. 2021): every block has its own attention, FFN and LayerNorms.
- **ALBERT-style sharing** (Lan et al. 2020): one whole block, LayerNorms included, applied
  ``n_layers`` times (:func:`make_albert`).
- **WideNet** (Xue et al., sec. 3): one multi-head attention and one MoE layer shared by all
  blocks, each block with its **own** two LayerNorms (:func:`make_widenet`). Here the MoE layer,
  its router included, is the same module in every block; only the LayerNorms are per block (our
  reading of the paper's sec. 3, to be checked against it [r]). Since each block normalises its
  input with its own LayerNorm, the shared router sees a differently scaled and shifted input at
  each depth and can route the same token to different experts in different blocks. The paper's
  argument (abstract, sec. 3) is that individual LayerNorms transform the representations of
  different depths in a parameter-efficient way: 2 d parameters per LayerNorm.

Sharing is done by putting the *same* module object in several blocks: PyTorch then holds one
copy of its parameters (``model.parameters()`` yields each shared tensor once), and every block's
gradient flows into it. The MoE layer's auxiliary losses are summed over the blocks by
:func:`adaedu.modular.vit.aux_loss`, as the paper sums its balance loss over blocks.
"""

from __future__ import annotations

from torch import nn

from adaedu.modular.vit import TinyViT, ViTConfig
from adaedu.moe.layer import make_moe


def share_across_depth(model: TinyViT, *, norms: bool) -> TinyViT:
    """Make every block of ``model`` use block 0's attention and FFN (and, with ``norms``, its
    two LayerNorms too); returns ``model``. The other blocks' own attention and FFN are dropped."""
    if not isinstance(model, TinyViT):
        raise ValueError(f"model is a {type(model).__name__}; allowed values: a TinyViT")
    first = model.blocks[0]
    for block in model.blocks[1:]:
        block.attn, block.ffn = first.attn, first.ffn  # one module, referenced by every block
        if norms:
            block.attn_norm, block.ffn_norm = first.attn_norm, first.ffn_norm
    return model


def make_albert(config: ViTConfig) -> TinyViT:
    """ALBERT-style cross-layer sharing: one dense block, LayerNorms included, for all depths."""
    return share_across_depth(TinyViT(config), norms=True)


def make_widenet(
    config: ViTConfig,
    n_experts: int = 4,
    k: int = 2,
    capacity_factor: float = 1.2,
    loss_weights: dict[str, float] | None = None,
) -> TinyViT:
    """WideNet: one attention and one top-``k`` MoE layer (``n_experts`` experts of width
    ``config.d_ff``, routed per image) shared by every block; individual LayerNorms per block.
    The defaults (capacity factor 1.2, balance-loss weight 0.01 as in Switch, Fedus et al. eq. 4)
    are the course's choices, not the paper's ViT settings."""
    weights = {"balance": 0.01, "z": 0.0} if loss_weights is None else dict(loss_weights)
    moe = make_moe(
        "topk",
        config.d_model,
        config.d_ff,
        n_experts,
        k=k,
        capacity_factor=capacity_factor,
        expert="mlp",
        group="sequence",  # one image = one group: capacity per image
        loss_weights=weights,
    )
    return share_across_depth(TinyViT(config, lambda layer: moe), norms=False)


def shared_modules(model: nn.Module) -> dict[str, list[int]]:
    """How many blocks use each distinct attention, FFN and LayerNorm module of a TinyViT, largest
    first: ``{"attn": [4], "attn_norm": [1, 1, 1, 1], ...}`` for WideNet over 4 blocks."""
    if not isinstance(model, TinyViT):
        raise ValueError(f"model is a {type(model).__name__}; allowed values: a TinyViT")
    counts: dict[str, list[int]] = {}
    for part in ("attn", "ffn", "attn_norm", "ffn_norm"):
        ids = [id(getattr(block, part)) for block in model.blocks]
        counts[part] = sorted((ids.count(i) for i in dict.fromkeys(ids)), reverse=True)
    return counts
