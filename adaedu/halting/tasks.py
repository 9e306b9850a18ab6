"""The parity task of Graves (2016, Sec. 3.1) and Banino et al. (2021, Sec. 3.1).

Each example is a vector of ``n_bits`` entries: a random number ``k`` of them, at random
positions, are set to +1 or -1 with equal probability, the rest are 0. The target is the parity of
the number of +1 entries (1 if it is odd). Because the number of nonzero entries can be restricted
to a range, the same generator gives PonderNet's extrapolation split (train on few nonzero
entries, test on more).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ParityBatch(NamedTuple):
    """``x``: (B, n_bits) in {-1, 0, 1}; ``y``: (B,) float parity; ``k``: (B,) nonzero counts."""

    x: Tensor
    y: Tensor
    k: Tensor


def parity_batch(
    batch_size: int,
    n_bits: int,
    min_nonzero: int = 1,
    max_nonzero: int | None = None,
    generator: torch.Generator | None = None,
) -> ParityBatch:
    """Draw ``batch_size`` parity examples with a nonzero count uniform in [min_nonzero, max_nonzero].

    Graves (2016): "a random number of bits between 1 and 64 set to 1 or -1 and the rest set to
    0"; the target is 1 if the vector holds an odd number of ones (the +1 entries), else 0.
    ``max_nonzero`` defaults to ``n_bits``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; allowed values: >= 1")
    if n_bits < 1:
        raise ValueError(f"n_bits={n_bits}; allowed values: >= 1")
    max_nonzero = n_bits if max_nonzero is None else max_nonzero
    if not 1 <= min_nonzero <= n_bits:
        raise ValueError(f"min_nonzero={min_nonzero}; allowed values: 1..{n_bits}")
    if not min_nonzero <= max_nonzero <= n_bits:
        raise ValueError(f"max_nonzero={max_nonzero}; allowed values: {min_nonzero}..{n_bits}")
    k = torch.randint(min_nonzero, max_nonzero + 1, (batch_size,), generator=generator)
    # random positions: the k smallest of n_bits random keys mark the nonzero entries
    ranks = torch.rand(batch_size, n_bits, generator=generator).argsort(dim=1).argsort(dim=1)
    nonzero = ranks < k[:, None]
    signs = torch.randint(0, 2, (batch_size, n_bits), generator=generator) * 2 - 1
    x = (signs * nonzero).float()
    y = ((x == 1).sum(dim=1) % 2).float()
    return ParityBatch(x, y, k)
