"""A tiny vision transformer (ViT) with a pluggable feed-forward slot (notebook 3.2).

After Dosovitskiy et al. (2021), *An Image is Worth 16x16 Words*, https://arxiv.org/abs/2010.11929
(eq. 1-4), at the scale of sklearn's 8x8 digits::

    z_0 = [x_1 E; ...; x_n E] + E_pos            patches as tokens (eq. 1), no class token
    z_l = z_{l-1} + MSA(LN(z_{l-1}))             full (non-causal) self-attention (eq. 2)
    z_l = z_l + FFN_l(LN(z_l))                   dense MLP or any MoE layer (eq. 3)
    logits = LN(mean_i z_L,i) W_head             global average pooling, then a linear head

The FFN of block l is built by a factory ``ffn(layer)``; it returns a tensor or ``(y, aux)``
(the protocol of :mod:`adaedu.lm.ffn`), and the model hands every layer's ``aux`` back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.checks import check_int
from adaedu.lm.ffn import split_ffn_output
from adaedu.moe.experts import make_expert

#: ``factory(layer) -> nn.Module``: the FFN of block ``layer`` (0-based), or None for the dense MLP.
FFNFactory = Callable[[int], "nn.Module | None"]


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")


def patchify(images: Tensor, patch: int) -> Tensor:
    """Cut (B, H, W) grey images into non-overlapping patch x patch squares: (B, n, patch^2),
    patches in row-major order (left to right, then top to bottom), n = (H / patch)(W / patch)."""
    if not isinstance(images, Tensor) or images.dim() != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images has shape {shape}; allowed values: (B, H, W)")
    _positive_int("patch", patch)
    B, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f"patch={patch}; allowed values: a divisor of H={H} and W={W}")
    x = images.reshape(B, H // patch, patch, W // patch, patch)  # (B, rows, p, cols, p)
    return x.permute(0, 1, 3, 2, 4).reshape(B, (H // patch) * (W // patch), patch * patch)


def patch_grid(values: Tensor, image_size: int, patch: int) -> Tensor:
    """One value per patch (n,) painted back onto the image: (image_size, image_size), each
    patch's pixels carrying its value (the inverse layout of :func:`patchify`)."""
    _positive_int("image_size", image_size)
    _positive_int("patch", patch)
    side = image_size // patch
    if image_size % patch or not isinstance(values, Tensor) or values.shape != (side * side,):
        raise ValueError(
            f"values must have shape ({side * side},) for image_size={image_size}, patch={patch}"
        )
    grid = values.reshape(side, side)
    return grid.repeat_interleave(patch, dim=0).repeat_interleave(patch, dim=1)


@dataclass(frozen=True)
class ViTConfig:
    """Sizes of a :class:`TinyViT`. ``d_ff`` is the hidden width of the default dense MLP."""

    image_size: int = 8
    patch: int = 2
    d_model: int = 32
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 64
    n_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("image_size", "patch", "d_model", "n_layers", "n_heads", "d_ff", "n_classes"):
            _positive_int(name, getattr(self, name))
        if self.image_size % self.patch:
            raise ValueError(
                f"patch={self.patch}; allowed values: a divisor of image_size={self.image_size}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"n_heads={self.n_heads}; allowed values: a divisor of d_model={self.d_model}"
            )

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens of an image (ViT eq. 2): not causal."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        check_int("d_model", d_model)
        check_int("n_heads", n_heads)
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads}; allowed values: a divisor of d_model={d_model}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, n, d = x.shape
        q, k, v = self.qkv(x).view(B, n, 3, self.n_heads, d // self.n_heads).unbind(dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, n, head_dim)
        scores = q @ k.transpose(-2, -1) / (d // self.n_heads) ** 0.5  # q k^T / sqrt(d_h)
        y = torch.softmax(scores, dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(B, n, d))


class ViTBlock(nn.Module):
    """Pre-norm block: ``z + MSA(LN(z))``, then ``z + FFN(LN(z))`` (ViT eq. 2-3)."""

    def __init__(self, config: ViTConfig, ffn: nn.Module) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config.d_model, config.n_heads)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = ffn

    def forward(self, z: Tensor) -> tuple[Tensor, Any]:
        z = z + self.attn(self.attn_norm(z))
        y, aux = split_ffn_output(self.ffn(self.ffn_norm(z)))
        return z + y, aux


@dataclass
class ViTOutput:
    """What :meth:`TinyViT.forward` returns."""

    logits: Tensor  # (B, n_classes)
    aux: list[Any]  # one entry per block: its FFN's aux (an MoEAux for MoE layers), or None


class TinyViT(nn.Module):
    """The vision transformer of the module docstring; ``ffn(layer)`` builds block ``layer``'s
    FFN (None or a missing factory: a dense Linear-ReLU-Linear MLP of width ``config.d_ff``)."""

    def __init__(self, config: ViTConfig, ffn: FFNFactory | None = None) -> None:
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise ValueError(f"config is a {type(config).__name__}; allowed values: a ViTConfig")
        self.config = config
        d = config.d_model
        self.embed = nn.Linear(config.patch**2, d)  # E, the patch embedding
        self.pos = nn.Parameter(torch.randn(config.n_tokens, d) * 0.02)  # E_pos, learned
        blocks = []
        for layer in range(config.n_layers):
            module = ffn(layer) if ffn is not None else None
            module = make_expert("mlp", d, config.d_ff) if module is None else module
            blocks.append(ViTBlock(config, module))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.n_classes)

    def forward(self, images: Tensor) -> ViTOutput:
        """Class logits for (B, H, W) images (already normalised)."""
        size = self.config.image_size
        if not isinstance(images, Tensor) or images.shape[1:] != (size, size):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images has shape {shape}; allowed values: (B, {size}, {size})")
        z = self.embed(patchify(images, self.config.patch)) + self.pos  # eq. 1
        aux = []
        for block in self.blocks:
            z, layer_aux = block(z)
            aux.append(layer_aux)
        return ViTOutput(self.head(self.norm(z.mean(dim=1))), aux)


def aux_loss(out: ViTOutput) -> Tensor:
    """The sum of the MoE layers' weighted auxiliary losses (``aux.loss``), 0 without MoE."""
    if not isinstance(out, ViTOutput):
        raise TypeError(
            f"out is a {type(out).__name__}; allowed values: a ViTOutput (what TinyViT returns)"
        )
    total = torch.zeros((), device=out.logits.device)
    for a in out.aux:
        if a is not None:
            total = total + a.loss
    return total


def classification_loss(model: TinyViT, images: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy plus the MoE auxiliary losses."""
    out = model(images)
    n = out.logits.shape[0]
    if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.dtype != torch.long:
        got = (
            f"shape {tuple(labels.shape)}, dtype {labels.dtype}"
            if isinstance(labels, Tensor)
            else f"a {type(labels).__name__}"
        )
        raise ValueError(f"labels has {got}; allowed values: a long tensor of shape ({n},)")
    return F.cross_entropy(out.logits, labels) + aux_loss(out)
