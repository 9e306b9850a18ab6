"""The experiment of notebook 4.2 (Dehghani et al. 2019): one seed of "UT + ACT vs. vanilla
encoder on reversal", trained to an in-range accuracy bar, and several seeds in parallel processes.

Used by notebook 4.2 only; the models and the training loop live in
:mod:`adaedu.halting.universal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch

from adaedu.halting.universal import (
    FIRST_SYMBOL,
    LengthResult,
    TrainToBar,
    UniversalTransformer,
    VanillaEncoder,
    evaluate_lengths,
    train_to_bar,
)
from adaedu.parallel import map_runs


@dataclass(frozen=True)
class Config:
    """Sizes and settings of one run (the notebook's ``S`` plus the fixed hyper-parameters)."""

    d_model: int
    n_heads: int
    ut_max_steps: int  # ACT step cap of the UT
    n_layers: int  # depth of the vanilla encoder
    ut_cap: int  # training-step caps: stop there if the bar was not reached
    vanilla_cap: int
    check_every: int
    bar: float
    batch_size: int
    n_test: int
    n_val: int
    lengths: tuple[int, ...]
    lr: float = 1e-3  # learning rate of the UT
    vanilla_lr: float = 1e-3
    tau: float = 0.003  # ponder-cost weight of the UT
    threshold: float = 0.99  # 1 - eps
    n_symbols: int = 8
    max_position: int = 64
    train_lengths: tuple[int, int] = (1, 12)


@dataclass
class SeedResult:
    """Everything one seed produced: the two training runs (:class:`TrainToBar`), the test
    results per length of the trained UT, the vanilla encoder and the *untrained* UT of the same
    seed (the control for the ponder claim), and the trained weights."""

    seed: int
    ut_run: TrainToBar
    vanilla_run: TrainToBar
    results: dict[str, list[LengthResult]]
    ut_state: dict = field(repr=False, default_factory=dict)
    vanilla_state: dict = field(repr=False, default_factory=dict)


def make_models(cfg: Config) -> tuple[UniversalTransformer, VanillaEncoder]:
    """A fresh UT + ACT and a fresh vanilla encoder (same width, heads and transition size)."""
    vocab = FIRST_SYMBOL + cfg.n_symbols
    arch = dict(d_model=cfg.d_model, n_heads=cfg.n_heads, d_ff=2 * cfg.d_model)
    ut = UniversalTransformer(vocab, max_steps=cfg.ut_max_steps, threshold=cfg.threshold, **arch)
    return ut, VanillaEncoder(vocab, n_layers=cfg.n_layers, **arch)


def run_seed(seed: int, cfg: Config) -> SeedResult:
    """Train both models of one seed to the in-range bar (or their caps) on reversal and test
    them on every length in ``cfg.lengths``; the untrained UT of the same seed is tested too."""
    from adaedu.device import seed_everything

    torch.set_num_threads(1)  # tiny matrices: one thread per process is fastest
    seed_everything(seed)
    ut, _ = make_models(cfg)
    seed_everything(seed)
    _, vanilla = make_models(cfg)
    seed_everything(seed)
    control, _ = make_models(cfg)  # same initial weights as the UT, never trained

    def test(model: torch.nn.Module) -> list[LengthResult]:
        return evaluate_lengths(model, "reverse", list(cfg.lengths), cfg.n_test, cfg.n_symbols)

    results = {"untrained UT": test(control)}
    common = dict(
        bar=cfg.bar,
        check_every=cfg.check_every,
        n_val=cfg.n_val,
        batch_size=cfg.batch_size,
        train_lengths=cfg.train_lengths,
        n_symbols=cfg.n_symbols,
        max_position=cfg.max_position,
        seed=seed,
    )
    ut_run = train_to_bar(
        ut, "reverse", max_steps=cfg.ut_cap, lr=cfg.lr, ponder_weight=cfg.tau, **common
    )
    van_run = train_to_bar(
        vanilla,
        "reverse",
        max_steps=cfg.vanilla_cap,
        lr=cfg.vanilla_lr,
        ponder_weight=0.0,
        **common,
    )
    results["UT + ACT"], results["vanilla"] = test(ut), test(vanilla)
    return SeedResult(seed, ut_run, van_run, results, ut.state_dict(), vanilla.state_dict())


def run_seeds(seeds: list[int], cfg: Config, workers: int = 1) -> list[SeedResult]:
    """:func:`run_seed` for every seed, in ``workers`` parallel processes
    (:func:`adaedu.parallel.map_runs`; one CPU thread each; the results do not depend on
    ``workers``)."""
    if not seeds:
        raise ValueError("seeds is empty; allowed values: one or more integers")
    return map_runs(partial(run_seed, cfg=cfg), seeds, workers=workers)


def load_models(result: SeedResult, cfg: Config) -> tuple[UniversalTransformer, VanillaEncoder]:
    """The trained models of one seed, rebuilt from their weights (in eval mode)."""
    ut, vanilla = make_models(cfg)
    ut.load_state_dict(result.ut_state)
    vanilla.load_state_dict(result.vanilla_state)
    return ut.eval(), vanilla.eval()
