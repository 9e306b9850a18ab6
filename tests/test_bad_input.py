"""Impossible arguments to adaedu's public API give an error that names the parameter (issue 10).

Every public callable of adaedu (a module's ``__all__``, else its public functions and classes;
later chapters' modules are found automatically) must appear in exactly one of:

- ``CASES``: impossible calls, each of which must raise ValueError / TypeError whose message names
  the parameter and says what is allowed ("allowed", "must" or "expected"); or, for empty input,
  return the natural empty result (``EMPTY``);
- ``EXEMPT``: callables that take no impossible argument, with the reason;
- ``BACKLOG``: callables not covered yet (listed, so that the gap is visible and a NEW public
  callable without an entry fails ``test_every_public_callable_has_an_entry``).

Result records (dataclasses and NamedTuples, built by the package) are exempt as a class.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import adaedu


def _public_callables() -> dict[str, object]:
    found: dict[str, object] = {}
    modules = ["adaedu"] + [m.name for m in pkgutil.walk_packages(adaedu.__path__, "adaedu.")]
    for name in modules:
        if name.startswith("adaedu.exercises."):
            continue  # exercise references: covered by tests/test_exercise_battery.py
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [
                n
                for n, o in vars(module).items()
                if not n.startswith("_")
                and (inspect.isfunction(o) or inspect.isclass(o))
                and getattr(o, "__module__", None) == name
            ]
        for n in names:
            obj = getattr(module, n)
            if callable(obj) and getattr(obj, "__module__", "").startswith("adaedu"):
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


def _is_record(obj: object) -> bool:
    return inspect.isclass(obj) and (
        (dataclasses.is_dataclass(obj) and not hasattr(obj, "__post_init__"))
        or hasattr(obj, "_fields")
        or issubclass(obj, Exception)
    )


PUBLIC = _public_callables()

# --- the impossible calls ---------------------------------------------------------------------------


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def _bigram():
    from adaedu.decoding.ngram import BigramLM

    return BigramLM(torch.zeros(3, 3))


def _tiny_lm():
    from adaedu.lm import TinyLM, TinyLMConfig

    torch.manual_seed(0)
    return TinyLM(TinyLMConfig(vocab_size=7, d_model=8, n_layers=1, n_heads=2, block_size=16))


def _routing():
    from adaedu.moe.routers import TopKRouter

    return TopKRouter(4, 3, 1)(_x(1, 5, 4))


def _experts():
    from adaedu.moe.experts import make_experts

    return make_experts("swiglu", 3, 4, 8)


def _mixtral():
    from adaedu.moe.layer import MixtralMoE

    return MixtralMoE(8, 16, n_experts=4, k=2)


NAN = float("nan")

#: key -> list of (parameter named in the message, the impossible call)
CASES: dict[str, list[tuple[str, Callable[[], object]]]] = {
    # adaedu.device, adaedu.profiles, adaedu.train, adaedu.compute
    "adaedu.device.seed_everything": [
        ("seed", lambda: adaedu.seed_everything(-1)),
        ("seed", lambda: adaedu.seed_everything(2**70)),
        ("seed", lambda: adaedu.seed_everything(1.5)),
    ],
    "adaedu.device.get_device": [("prefer", lambda: adaedu.get_device("tpu"))],
    "adaedu.profiles.sizes": [
        ("profile", lambda: adaedu.sizes(smoke={}, cpu={}, gpu={}, profile="huge", show=False)),
    ],
    "adaedu.train.train": [
        ("steps", lambda: _train(steps=2.5)),
        ("steps", lambda: _train(steps=0)),
        ("steps", lambda: _train(steps=5, batches=iter([1, 2]))),
        ("log_every", lambda: _train(steps=2, log_every=0)),
        ("batches", lambda: _train(steps=2, batches=[1, 2])),
    ],
    "adaedu.compute.forward_flops": [("input", lambda: _forward_flops())],
    # adaedu.claims
    "adaedu.claims.mean_interval": [
        ("values", lambda: _claims().mean_interval([])),
        ("values", lambda: _claims().mean_interval([1.0, NAN])),
        ("level", lambda: _claims().mean_interval([1.0, 2.0], level=1.5)),
        ("method", lambda: _claims().mean_interval([1.0, 2.0], method="magic")),
        ("n_boot", lambda: _claims().mean_interval([1.0, 2.0], method="bootstrap", n_boot=3)),
    ],
    "adaedu.parallel.map_runs": [
        (
            "workers",
            lambda: importlib.import_module("adaedu.parallel").map_runs(abs, [1], workers=0),
        ),
        (
            "threads",
            lambda: importlib.import_module("adaedu.parallel").map_runs(abs, [1], threads=0),
        ),
        ("fn", lambda: importlib.import_module("adaedu.parallel").map_runs(None, [1])),
    ],
    "adaedu.claims.bootstrap_interval": [
        ("units", lambda: _claims().bootstrap_interval(lambda: 0.0, [])),
        (
            "units",
            lambda: _claims().bootstrap_interval(lambda a, b: 0.0, [torch.rand(3), torch.rand(2)]),
        ),
        ("units", lambda: _claims().bootstrap_interval(lambda a: 0.0, [torch.rand(1)])),
        ("level", lambda: _claims().bootstrap_interval(lambda a: 0.0, [torch.rand(3)], level=1.5)),
        ("n_boot", lambda: _claims().bootstrap_interval(lambda a: 0.0, [torch.rand(3)], n_boot=5)),
        ("statistic", lambda: _claims().bootstrap_interval("median", [torch.rand(3)])),
        ("nan_as", lambda: _claims().bootstrap_interval(lambda a: float("nan"), [torch.rand(3)])),
    ],
    "adaedu.claims.paired_interval": [
        ("level", lambda: _claims().paired_interval([1.0, 2.0], [0.0, 1.0], level=0.0)),
    ],
    "adaedu.claims.decide": [
        ("above", lambda: _claims().decide(_claims().mean_interval([1.0, 2.0]))),
    ],
    "adaedu.claims.precondition": [
        ("description", lambda: _claims().precondition("", measured="1", met=True)),
    ],
    # adaedu.moe.routers
    "adaedu.moe.routers.expert_capacity": [
        ("tokens_per_group", lambda: _r().expert_capacity(0, 4, 1.0)),
        ("n_experts", lambda: _r().expert_capacity(8, 0, 1.0)),
        ("capacity_factor", lambda: _r().expert_capacity(8, 4, NAN)),
        ("k", lambda: _r().expert_capacity(8, 4, 1.0, k=0)),
    ],
    "adaedu.moe.routers.keep_within_capacity": [
        ("expert", lambda: _r().keep_within_capacity(torch.tensor([0, 1]), 2, 1)),
        ("capacity", lambda: _r().keep_within_capacity(torch.tensor([[0, 1]]), 2, -1)),
        ("expert", lambda: _r().keep_within_capacity(torch.tensor([[0, 5]]), 2, 1)),
    ],
    "adaedu.moe.routers.token_choice_routing": [
        (
            "chosen",
            lambda: _r().token_choice_routing(
                torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), 2, None
            ),
        ),
    ],
    "adaedu.moe.routers.TopKRouter": [
        ("k", lambda: _r().TopKRouter(4, 3, k=4)),
        ("capacity_factor", lambda: _r().TopKRouter(4, 3, 1, capacity_factor=0.0)),
        ("x", lambda: _r().TopKRouter(4, 3, 1)(_x(2, 5))),
        ("x", lambda: _r().TopKRouter(4, 3, 1)(_x(1, 5, 6))),
        ("x", lambda: _r().TopKRouter(4, 3, 1, capacity_factor=1.0)(_nan_tokens())),
    ],
    "adaedu.moe.routers.SwitchRouter": [
        ("capacity_factor", lambda: _r().SwitchRouter(4, 3, capacity_factor=-1.0)),
        ("x", lambda: _r().SwitchRouter(4, 3)(_x(1, 5, 6))),
        ("x", lambda: _r().SwitchRouter(4, 3, capacity_factor=1.0)(_nan_tokens())),
    ],
    "adaedu.moe.routers.ShazeerRouter": [
        ("k", lambda: _r().ShazeerRouter(4, 3, k=0)),
        ("x", lambda: _r().ShazeerRouter(4, 3, 1, capacity_factor=1.0).eval()(_nan_tokens())),
    ],
    "adaedu.moe.routers.HashRouter": [
        ("table", lambda: _r().HashRouter(torch.tensor([0, 5]), 3)),
        ("table", lambda: _r().HashRouter(torch.tensor([0.0, 1.0]), 3)),
        ("token_ids", lambda: _r().HashRouter(torch.tensor([0, 1]), 3)(_x(1, 2, 4), None)),
    ],
    "adaedu.moe.routers.ExpertChoiceRouter": [
        ("capacity_factor", lambda: _r().ExpertChoiceRouter(4, 3, capacity_factor=4.0)),
        ("x", lambda: _r().ExpertChoiceRouter(4, 3)(_nan_tokens())),
    ],
    "adaedu.moe.routers.SoftMoERouter": [
        ("slots_per_expert", lambda: _r().SoftMoERouter(4, 3, slots_per_expert=0)),
        ("x", lambda: _r().SoftMoERouter(4, 3)(_nan_tokens())),
    ],
    # adaedu.moe.losses
    "adaedu.moe.losses.switch_balance_loss": [
        ("chosen", lambda: _l().switch_balance_loss(torch.rand(4, 3), torch.zeros(4, 1))),
        ("chosen", lambda: _l().switch_balance_loss(torch.rand(4, 3), torch.zeros(5, 1).long())),
        ("chosen", lambda: _l().switch_balance_loss(torch.rand(4, 3), torch.full((4, 1), 3))),
        ("probs", lambda: _l().switch_balance_loss(torch.rand(4), torch.zeros(4, 1).long())),
        (
            "alpha",
            lambda: _l().switch_balance_loss(torch.rand(4, 3), torch.zeros(4, 1).long(), NAN),
        ),
    ],
    "adaedu.moe.losses.router_z_loss": [("logits", lambda: _l().router_z_loss(torch.rand(4)))],
    "adaedu.moe.losses.routing_losses": [("routing", lambda: _l().routing_losses("routing"))],
    # adaedu.moe.noisy_topk
    "adaedu.moe.noisy_topk.keep_top_k": [("k", lambda: _n().keep_top_k(_x(2, 3), 4))],
    "adaedu.moe.noisy_topk.top_k_gates": [("k", lambda: _n().top_k_gates(_x(2, 3), 0))],
    "adaedu.moe.noisy_topk.importance_loss": [
        ("weight", lambda: _n().importance_loss(torch.rand(4, 3), -1.0)),
    ],
    "adaedu.moe.noisy_topk.load_loss": [("weight", lambda: _n().load_loss(torch.rand(4, 3), NAN))],
    "adaedu.moe.noisy_topk.cv": [("values", lambda: _n().cv(torch.empty(0)))],
    "adaedu.moe.noisy_topk.NoisyTopKRouter": [
        ("d_model", lambda: _n().NoisyTopKRouter(0, 3, 1)),
        ("k", lambda: _n().NoisyTopKRouter(4, 3, 4)),
        ("x", lambda: _n().NoisyTopKRouter(4, 3, 1)(_x(2, 5))),
    ],
    "adaedu.moe.noisy_topk.SparseMoE": [("x", lambda: _n().SparseMoE(4, 2, 8, 3, 1)(_x(2, 5)))],
    "adaedu.moe.noisy_topk.expert_counts": [
        ("n_experts", lambda: _n().expert_counts(torch.zeros(2, 1).long(), 0)),
        ("top_indices", lambda: _n().expert_counts(torch.full((2, 1), 5), 3)),
    ],
    "adaedu.moe.noisy_topk.flop_matched_dense": [("moe", lambda: _n().flop_matched_dense("moe"))],
    # adaedu.moe.experts, dispatch, layer
    "adaedu.moe.experts.make_expert": [("kind", lambda: _e().make_expert("relu9", 4, 8))],
    "adaedu.moe.experts.make_experts": [
        ("n_experts", lambda: _e().make_experts("swiglu", 0, 4, 8))
    ],
    "adaedu.moe.experts.SwiGLU": [("d_model", lambda: _e().SwiGLU(0, 8))],
    "adaedu.moe.experts.matched_dense_hidden": [
        ("kind", lambda: _e().matched_dense_hidden("relu9", 4, 8, 1.0, 0.0)),
    ],
    "adaedu.moe.dispatch.dispatch": [
        ("routing", lambda: _d().dispatch(_x(5, 4), "routing", _experts())),
        ("x", lambda: _d().dispatch(_x(6, 4), _routing(), _experts())),
    ],
    "adaedu.moe.dispatch.dispatch_per_token": [
        ("x", lambda: _d().dispatch_per_token(_x(6, 4), _routing(), _experts())),
    ],
    "adaedu.moe.dispatch.dispatch_per_expert_mask": [
        ("x", lambda: _d().dispatch_per_expert_mask(_x(6, 4), _routing(), _experts())),
    ],
    "adaedu.moe.dispatch.soft_dispatch": [
        ("routing", lambda: _d().soft_dispatch(_x(1, 5, 4), _routing(), _experts())),
    ],
    "adaedu.moe.layer.MoEFeedForward": [
        ("router", lambda: _ly().MoEFeedForward("router", _experts())),
        ("group", lambda: _ly().MoEFeedForward(_r().TopKRouter(4, 3, 1), _experts(), group="x")),
        (
            "balance_weight",
            lambda: _ly().MoEFeedForward(_r().TopKRouter(4, 3, 1), _experts(), balance_weight=NAN),
        ),
    ],
    "adaedu.moe.layer.make_router": [("router", lambda: _ly().make_router("magic", 4, 3))],
    "adaedu.moe.layer.make_moe": [("router", lambda: _ly().make_moe("magic", 4, 8, 3))],
    "adaedu.moe.layer.MixtralMoE": [
        ("x", lambda: _mixtral()(_x(2, 3, 8, dtype=torch.float64))),
        ("x", lambda: _mixtral()(_x(2, 3, 8).long())),
        ("x", lambda: _mixtral()(_x(2, 3, 4))),
        ("x", lambda: _mixtral()(_x(8))),
    ],
    # adaedu.halting
    "adaedu.halting.ponder.halting_probabilities": [
        ("lambdas", lambda: _p().halting_probabilities(torch.tensor([[1.5, -0.5, 0.2]]))),
        ("lambdas", lambda: _p().halting_probabilities(torch.tensor([[NAN, 0.5]]))),
        ("lambdas", lambda: _p().halting_probabilities(torch.rand(3))),
    ],
    "adaedu.halting.ponder.truncated_geometric": [
        ("lambda_p", lambda: _p().truncated_geometric(NAN, 3)),
        ("n_max", lambda: _p().truncated_geometric(0.5, 2.5)),
    ],
    "adaedu.halting.ponder.kl_divergence": [
        (
            "prior",
            lambda: _p().kl_divergence(torch.full((1, 3), 1 / 3), torch.tensor([0.5, NAN, 0.5])),
        ),
        ("prior", lambda: _p().kl_divergence(torch.full((1, 3), 1 / 3), torch.full((4,), 0.25))),
    ],
    "adaedu.halting.ponder.ponder_loss": [
        ("beta", lambda: _p().ponder_loss(torch.rand(2, 3), torch.full((2, 3), 1 / 3), 0.5, NAN)),
        ("beta", lambda: _p().ponder_loss(torch.rand(2, 3), torch.full((2, 3), 1 / 3), 0.5, -1.0)),
        ("step_losses", lambda: _p().ponder_loss(torch.rand(2, 4), torch.rand(2, 3), 0.5, 0.1)),
    ],
    "adaedu.halting.ponder.PonderNet": [
        ("n_max", lambda: _p().PonderNet(3, 8, 1, n_max=0)),
        ("x", lambda: _p().PonderNet(3, 8, 1, n_max=2)(_x(2, 5))),
        ("x", lambda: _p().PonderNet(3, 8, 1, n_max=2).sample(_x(2, 5))),
    ],
    "adaedu.halting.ponder.halt_at_threshold": [
        ("threshold", lambda: _p().halt_at_threshold(None, 1.5)),
        ("threshold", lambda: _p().halt_at_threshold(None, NAN)),
    ],
    "adaedu.halting.act.act_loss": [
        ("tau", lambda: _a().act_loss(torch.tensor(1.0), torch.ones(2), NAN)),
        ("tau", lambda: _a().act_loss(torch.tensor(1.0), torch.ones(2), -0.1)),
    ],
    "adaedu.halting.act.halting_distribution": [
        ("eps", lambda: _a().halting_distribution(torch.rand(2, 3), eps=1.0)),
        ("h", lambda: _a().halting_distribution(torch.rand(3), eps=0.1)),
    ],
    "adaedu.halting.act.ACT": [
        ("cap", lambda: _a().ACT(3, 8, 1, cap=0)),
        ("eps", lambda: _a().ACT(3, 8, 1, eps=-0.5)),
        ("x", lambda: _a().ACT(3, 8, 1, cap=2)(_x(2, 5))),
        ("state", lambda: _a().ACT(3, 8, 1, cap=2)(_x(2, 3), _x(2, 5))),
    ],
    # adaedu.decoding
    "adaedu.decoding.sampling.check_sampling_args": [
        ("temperature", lambda: _s().check_sampling_args(-1.0, None, None)),
        ("top_k", lambda: _s().check_sampling_args(1.0, 0, None)),
        ("top_p", lambda: _s().check_sampling_args(1.0, None, 1.5)),
    ],
    "adaedu.decoding.sampling.apply_temperature": [
        ("temperature", lambda: _s().apply_temperature(_x(1, 3), -1.0)),
    ],
    "adaedu.decoding.sampling.top_k_filter": [("top_k", lambda: _s().top_k_filter(_x(1, 3), 0))],
    "adaedu.decoding.sampling.top_p_filter": [("top_p", lambda: _s().top_p_filter(_x(1, 3), 0.0))],
    "adaedu.decoding.sampling.next_token_distribution": [
        ("top_p", lambda: _s().next_token_distribution(_x(1, 3), 1.0, top_p=2.0)),
    ],
    "adaedu.decoding.sampling.next_token": [
        ("temperature", lambda: _s().next_token(_x(1, 3), temperature=NAN)),
    ],
    "adaedu.decoding.sampling.sample": [
        ("max_new_tokens", lambda: _s().sample(_tiny_lm(), torch.tensor([[1, 2]]), 100)),
    ],
    "adaedu.decoding.speculative.residual_distribution": [
        ("q", lambda: _sp().residual_distribution(torch.rand(3), torch.rand(4))),
    ],
    "adaedu.decoding.speculative.expected_tokens_per_call": [
        ("alpha", lambda: _sp().expected_tokens_per_call(1.5, 2)),
        ("gamma", lambda: _sp().expected_tokens_per_call(0.5, 0)),
    ],
    "adaedu.decoding.speculative.walltime_factor": [
        ("gamma", lambda: _sp().walltime_factor(0.5, 2.5, 0.1)),
    ],
    "adaedu.decoding.speculative.speculative_sample": [
        (
            "gamma",
            lambda: _sp().speculative_sample(_bigram(), _bigram(), torch.tensor([[0]]), 3, 0),
        ),
    ],
    "adaedu.decoding.speculative.exactness_test": [
        ("first_token", lambda: _sp().exactness_test(_bigram(), _bigram(), 7, 2, 1, 10)),
        ("first_token", lambda: _sp().exactness_test(_bigram(), _bigram(), -1, 2, 1, 10)),
        ("n_tokens", lambda: _sp().exactness_test(_bigram(), _bigram(), 0, 9, 1, 10)),
    ],
    "adaedu.decoding.ngram.NGramLM": [
        ("logits", lambda: _ng().NGramLM(torch.zeros(3, 4))),
        ("pad", lambda: _ng().NGramLM(torch.zeros(3, 3), pad=5)),
        ("idx", lambda: _ng().NGramLM(torch.zeros(3, 3))(torch.tensor([[0, 7]]))),
        ("idx", lambda: _ng().NGramLM(torch.zeros(3, 3))(torch.tensor([[0, -1]]))),
        ("idx", lambda: _ng().NGramLM(torch.zeros(3, 3))(torch.tensor([[0.0, 1.0]]))),
    ],
    "adaedu.decoding.ngram.BigramLM": [
        ("logits", lambda: _ng().BigramLM(torch.zeros(3, 3, 3))),
        ("idx", lambda: _bigram()(torch.tensor([[3]]))),
    ],
    "adaedu.decoding.ngram.TokenCache": [("n", lambda: _ng().TokenCache().truncate(1))],
}


def M(name: str):
    """A module of adaedu, imported when a case runs."""
    return importlib.import_module(name)


def _config():
    """One cascade configuration: accuracy 0.8 at mean cost 1 (FrugalGPT, notebook 5.3)."""
    return M("adaedu.decoding.cascade").Config((0,), (), 0.8, 1.0)


def _lm():
    return _tiny_lm()


def _chars():
    return M("adaedu.lm.tokenizers").CharTokenizer("ab")  # ids 0 (UNK), 1 "a", 2 "b"


def _vit_cfg():
    return M("adaedu.modular.vit").ViTConfig()


DATA_ERROR = (importlib.import_module("adaedu.data").DataFileError,)  # names the file; RuntimeError

CASES.update(
    {
        "adaedu.lm.model.TinyLMConfig": [
            ("d_model", lambda: M("adaedu.lm").TinyLMConfig(vocab_size=7, d_model=30, n_heads=4)),
            ("vocab_size", lambda: M("adaedu.lm").TinyLMConfig(vocab_size=0)),
        ],
        "adaedu.halting.universal.coordinate_embedding": [
            (
                "d_model",
                lambda: M("adaedu.halting.universal").coordinate_embedding(torch.arange(4), 1, 3),
            ),
        ],
        "adaedu.halting.universal.EncoderLayer": [
            ("n_heads", lambda: M("adaedu.halting.universal").EncoderLayer(30, 4, 64)),
        ],
        "adaedu.halting.universal.UniversalTransformer": [
            (
                "threshold",
                lambda: M("adaedu.halting.universal").UniversalTransformer(10, threshold=1.5),
            ),
            (
                "max_steps",
                lambda: M("adaedu.halting.universal").UniversalTransformer(10, max_steps=0),
            ),
        ],
        "adaedu.halting.universal.VanillaEncoder": [
            ("n_layers", lambda: M("adaedu.halting.universal").VanillaEncoder(10, n_layers=0)),
        ],
        "adaedu.halting.universal.halting_step": [
            (
                "threshold",
                lambda: M("adaedu.halting.universal").halting_step(
                    torch.rand(2, 3), torch.rand(2, 3), 1.5
                ),
            ),
        ],
        "adaedu.halting.universal.algorithmic_batch": [
            (
                "task",
                lambda: M("adaedu.halting.universal").algorithmic_batch(
                    "sort9", 2, 3, 4, torch.Generator()
                ),
            ),
            (
                "length",
                lambda: M("adaedu.halting.universal").algorithmic_batch(
                    "copy", 2, 0, 4, torch.Generator()
                ),
            ),
        ],
        "adaedu.halting.universal.sequence_accuracy": [
            (
                "targets",
                lambda: M("adaedu.halting.universal").sequence_accuracy(
                    _x(2, 3, 4), torch.zeros(2, 5).long()
                ),
            ),
        ],
        "adaedu.halting.universal.set_threshold": [
            (
                "threshold",
                lambda: M("adaedu.halting.universal").set_threshold(
                    M("adaedu.halting.universal").UniversalTransformer(10), 1.5
                ),
            ),
        ],
        "adaedu.halting.universal.train_algorithmic": [
            (
                "task",
                lambda: M("adaedu.halting.universal").train_algorithmic(
                    M("adaedu.halting.universal").UniversalTransformer(10), "sort9", steps=1
                ),
            ),
        ],
        "adaedu.halting.universal.evaluate_lengths": [
            (
                "task",
                lambda: M("adaedu.halting.universal").evaluate_lengths(
                    M("adaedu.halting.universal").UniversalTransformer(10), "sort9", [3]
                ),
            ),
        ],
        "adaedu.halting.skipnet.GatedResMLP": [
            ("n_blocks", lambda: M("adaedu.halting.skipnet").GatedResMLP(4, 8, 3, 0)),
            ("static", lambda: M("adaedu.halting.skipnet").GatedResMLP(4, 8, 3, 2, static=5)),
        ],
        "adaedu.halting.skipnet.fit_skipnet": [
            (
                "steps",
                lambda: M("adaedu.halting.skipnet").fit_skipnet(
                    M("adaedu.halting.skipnet").GatedResMLP(4, 8, 3, 2),
                    _x(5, 4),
                    torch.zeros(5).long(),
                    0,
                ),
            ),
            (
                "alpha",
                lambda: M("adaedu.halting.skipnet").fit_skipnet(
                    M("adaedu.halting.skipnet").GatedResMLP(4, 8, 3, 2),
                    _x(5, 4),
                    torch.zeros(5).long(),
                    1,
                    alpha=-1.0,
                ),
            ),
        ],
        "adaedu.modular.vit.aux_loss": [("out", lambda: M("adaedu.modular.vit").aux_loss("out"))],
        "adaedu.data.TextCorpus": [
            (
                "split",
                lambda: M("adaedu.data").TextCorpus({}, M("adaedu.data").char_tokenizer(), "nope"),
            ),
            ("tokens", lambda: M("adaedu.data").TextCorpus({}, None, "train")),
            (
                "tokens",
                lambda: M("adaedu.data").TextCorpus({"a": torch.zeros(2, 3)}, None, "train"),
            ),
        ],
        "adaedu.moe.switch_lm.verse_bpe_corpora": [
            ("vocab_size", lambda: M("adaedu.moe.switch_lm").verse_bpe_corpora(0)),
        ],
        "adaedu.claims.Claims": [("notebook", lambda: M("adaedu.claims").Claims("", "paper"))],
        "adaedu.claims.outcome_cell": [
            ("outcome", lambda: M("adaedu.claims").outcome_cell("maybe"))
        ],
        "adaedu.claims.tally": [
            ("claims", lambda: M("adaedu.claims").tally([1, 2])),
            ("claims", lambda: M("adaedu.claims").tally([{"outcome": "holds"}])),
        ],
        "adaedu.checks.check_int": [
            ("n", lambda: M("adaedu.checks").check_int("n", 0)),
            ("n", lambda: M("adaedu.checks").check_int("n", True)),
            ("n", lambda: M("adaedu.checks").check_int("n", 2.0)),
            ("n", lambda: M("adaedu.checks").check_int("n", 5, 0, 4)),
        ],
        "adaedu.compute.count_parameters": [
            ("module", lambda: M("adaedu.compute").count_parameters("model"))
        ],
        "adaedu.compute.active_parameters": [
            ("model", lambda: M("adaedu.compute").active_parameters("model"))
        ],
        "adaedu.data.data_path": [
            ("name", lambda: M("adaedu.data").data_path("no-such-file.bin"), DATA_ERROR)
        ],
        "adaedu.data.load_digits_split": [
            ("test_fraction", lambda: M("adaedu.data").load_digits_split(1.5))
        ],
        "adaedu.data.load_text": [("domains", lambda: M("adaedu.data").load_text("klingon"))],
        "adaedu.data.load_vowels": [("vowels", lambda: M("adaedu.data").load_vowels(("zz",)))],
        "adaedu.data.manifest": [("folder", lambda: M("adaedu.data").manifest("no-such-folder"))],
        "adaedu.data.split_by_speaker": [
            (
                "n_train",
                lambda: M("adaedu.data").split_by_speaker(__import__("numpy").arange(10), -1),
            )
        ],
        "adaedu.data.text_corpus": [
            ("split", lambda: M("adaedu.data").text_corpus("verse", split="nope"))
        ],
        "adaedu.data.text_of": [("domain", lambda: M("adaedu.data").text_of("klingon"))],
        "adaedu.data.text_path": [("split", lambda: M("adaedu.data").text_path("verse", "nope"))],
        "adaedu.data.load_text_files": [
            ("files", lambda: M("adaedu.data").load_text_files({"x": "no-such.txt"}), DATA_ERROR)
        ],
        "adaedu.decoding.beam.length_penalty": [
            ("a", lambda: M("adaedu.decoding.beam").length_penalty(3, -1.0)),
            ("length", lambda: M("adaedu.decoding.beam").length_penalty(-3, 1.0)),
        ],
        "adaedu.decoding.beam.top_extensions": [
            (
                "width",
                lambda: M("adaedu.decoding.beam").top_extensions(
                    torch.zeros(1), torch.zeros(1, 3), 0
                ),
            )
        ],
        "adaedu.decoding.beam.beam_search": [
            (
                "width",
                lambda: M("adaedu.decoding.beam").beam_search(
                    M("adaedu.decoding.beam").LMScorer(_lm()), [1], 0, 3
                ),
            ),
            (
                "max_new_tokens",
                lambda: M("adaedu.decoding.beam").beam_search(
                    M("adaedu.decoding.beam").LMScorer(_lm()), [1], 2, -1
                ),
            ),
        ],
        "adaedu.decoding.beam.greedy_decode": [
            (
                "max_new_tokens",
                lambda: M("adaedu.decoding.beam").greedy_decode(
                    M("adaedu.decoding.beam").LMScorer(_lm()), [1], -1
                ),
            ),
            (
                "prompt",
                lambda: M("adaedu.decoding.beam").greedy_decode(
                    M("adaedu.decoding.beam").LMScorer(_lm()), [], 3
                ),
            ),
        ],
        "adaedu.decoding.beam.LMScorer": [
            ("model", lambda: M("adaedu.decoding.beam").LMScorer("model"))
        ],
        "adaedu.decoding.beam.PrefixScorer": [
            ("fn", lambda: M("adaedu.decoding.beam").PrefixScorer(3))
        ],
        "adaedu.decoding.contrastive.plausible_mask": [
            ("alpha", lambda: M("adaedu.decoding.contrastive").plausible_mask(_x(1, 4), 1.5))
        ],
        "adaedu.decoding.contrastive.contrastive_scores": [
            (
                "alpha",
                lambda: M("adaedu.decoding.contrastive").contrastive_scores(
                    _x(1, 4), _x(1, 4), -0.1
                ),
            ),
            (
                "amateur_logits",
                lambda: M("adaedu.decoding.contrastive").contrastive_scores(_x(1, 4), _x(1, 5)),
            ),
        ],
        "adaedu.decoding.contrastive.decode": [
            (
                "method",
                lambda: M("adaedu.decoding.contrastive").decode(
                    _lm(), torch.tensor([[1]]), 3, "magic"
                ),
            )
        ],
        "adaedu.decoding.contrastive.continuation_nll": [
            (
                "prompt_len",
                lambda: M("adaedu.decoding.contrastive").continuation_nll(
                    _lm(), torch.tensor([[1, 2, 3]]), 5
                ),
            )
        ],
        "adaedu.decoding.contrastive.ngrams": [
            ("n", lambda: M("adaedu.decoding.contrastive").ngrams(["a", "b"], 0))
        ],
        "adaedu.decoding.contrastive.repetition": [
            ("n", lambda: M("adaedu.decoding.contrastive").repetition("a b c", 0))
        ],
        "adaedu.decoding.contrastive.diversity": [
            ("texts", lambda: M("adaedu.decoding.contrastive").diversity([]))
        ],
        "adaedu.decoding.contrastive.words": [
            ("text", lambda: M("adaedu.decoding.contrastive").words(3))
        ],
        "adaedu.decoding.sampling.check_room": [
            ("max_new_tokens", lambda: M("adaedu.decoding.sampling").check_room(_lm(), 3, 100)),
            ("max_new_tokens", lambda: M("adaedu.decoding.sampling").check_room(_lm(), 3, -1)),
        ],
        "adaedu.decoding.sampling.draw": [
            (
                "temperature",
                lambda: M("adaedu.decoding.sampling").draw(torch.full((3,), 1 / 3), -1.0),
            ),
            ("probs", lambda: M("adaedu.decoding.sampling").draw(torch.tensor([0.5, NAN]), 1.0)),
        ],
        "adaedu.decoding.sampling.sample_from": [
            ("probs", lambda: M("adaedu.decoding.sampling").sample_from(torch.tensor([-0.5, 1.5]))),
            ("probs", lambda: M("adaedu.decoding.sampling").sample_from(torch.zeros(3))),
        ],
        "adaedu.decoding.speculative.acceptance_rate": [
            (
                "q",
                lambda: M("adaedu.decoding.speculative").acceptance_rate(
                    torch.rand(3), torch.rand(4)
                ),
            )
        ],
        "adaedu.decoding.speculative.total_variation": [
            (
                "q",
                lambda: M("adaedu.decoding.speculative").total_variation(
                    torch.rand(3), torch.rand(4)
                ),
            )
        ],
        "adaedu.decoding.speculative.chi_square_test": [
            (
                "probs",
                lambda: M("adaedu.decoding.speculative").chi_square_test(
                    torch.ones(3), torch.ones(4) / 4
                ),
            )
        ],
        "adaedu.decoding.speculative.verify": [
            (
                "drafts",
                lambda: M("adaedu.decoding.speculative").verify(
                    torch.full((3, 3), 1 / 3), torch.full((2, 3), 1 / 3), torch.tensor([0, 5])
                ),
            )
        ],
        "adaedu.decoding.speculative.wrong_verify_resample_from_p": [
            (
                "drafts",
                lambda: M("adaedu.decoding.speculative").wrong_verify_resample_from_p(
                    torch.full((3, 3), 1 / 3), torch.full((2, 3), 1 / 3), torch.tensor([0, 5])
                ),
            )
        ],
        "adaedu.decoding.speculative.call_time": [
            ("context", lambda: M("adaedu.decoding.speculative").call_time(_lm(), -1)),
            ("repeats", lambda: M("adaedu.decoding.speculative").call_time(_lm(), 2, 1, 0)),
        ],
        "adaedu.decoding.speculative.cost_ratio": [
            ("block_size", lambda: M("adaedu.decoding.speculative").cost_ratio(_lm(), _lm(), 100))
        ],
        "adaedu.decoding.speculative.verification_cost": [
            ("gamma", lambda: M("adaedu.decoding.speculative").verification_cost(_lm(), 0, 2))
        ],
        "adaedu.decoding.speculative.gamma_sweep": [
            (
                "gamma",
                lambda: M("adaedu.decoding.speculative").gamma_sweep(
                    _lm(), _lm(), [torch.tensor([[1]])], 3, [0]
                ),
            )
        ],
        "adaedu.decoding.speculative.distill_step": [
            (
                "target_probs",
                lambda: M("adaedu.decoding.speculative").distill_step(
                    _lm(),
                    torch.tensor([[1, 2, 3]]),
                    torch.rand(5, 7),
                    torch.optim.SGD(_lm().parameters(), 0.1),
                ),
            )
        ],
        "adaedu.decoding.speculative.online_speculative_decoding": [
            (
                "gamma",
                lambda: M("adaedu.decoding.speculative").online_speculative_decoding(
                    _lm(), _lm(), [torch.tensor([[1]])], 3, 0, None
                ),
            )
        ],
        "adaedu.decoding.speculative.timed_speedup": [
            (
                "gamma",
                lambda: M("adaedu.decoding.speculative").timed_speedup(
                    _lm(), _lm(), [torch.tensor([[1]])], 3, 0
                ),
            )
        ],
        "adaedu.decoding.spelling.below_100": [
            ("n", lambda: M("adaedu.decoding.spelling").below_100(150, "-"))
        ],
        "adaedu.decoding.spelling.variants": [
            ("n", lambda: M("adaedu.decoding.spelling").variants(-5))
        ],
        "adaedu.decoding.spelling.most_likely": [
            ("n", lambda: M("adaedu.decoding.spelling").most_likely(-5))
        ],
        "adaedu.decoding.spelling.sample_spelling": [
            (
                "n",
                lambda: M("adaedu.decoding.spelling").sample_spelling(
                    -5, __import__("random").Random(0)
                ),
            )
        ],
        "adaedu.decoding.spelling.split_numbers": [
            ("test_size", lambda: M("adaedu.decoding.spelling").split_numbers(-1))
        ],
        "adaedu.decoding.spelling.make_text": [
            ("n_lines", lambda: M("adaedu.decoding.spelling").make_text([1, 2], -1))
        ],
        "adaedu.decoding.spelling.clipped_matches": [
            ("n", lambda: M("adaedu.decoding.spelling").clipped_matches(["a"], ["a"], 0))
        ],
        "adaedu.decoding.spelling.corpus_bleu": [
            ("references", lambda: M("adaedu.decoding.spelling").corpus_bleu(["a b"], [])),
            ("max_n", lambda: M("adaedu.decoding.spelling").corpus_bleu(["a b"], ["a b"], 0)),
        ],
        "adaedu.decoding.spelling.bleu_stats": [
            ("max_n", lambda: M("adaedu.decoding.spelling").bleu_stats("a b", "a b", 0))
        ],
        "adaedu.decoding.spelling.bleu_from_stats": [
            ("stats", lambda: M("adaedu.decoding.spelling").bleu_from_stats([1.0]))
        ],
        "adaedu.exercises.describe_difference": [
            ("atol", lambda: M("adaedu.exercises").describe_difference(1.0, 1.0, -1.0, 0.0))
        ],
        "adaedu.halting.baselines.RepeatRNN": [
            ("k", lambda: M("adaedu.halting.baselines").RepeatRNN(3, 8, 1, k=0)),
            ("x", lambda: M("adaedu.halting.baselines").RepeatRNN(3, 8, 1)(_x(2, 5))),
        ],
        "adaedu.halting.baselines.cell_step_flops": [
            ("cell", lambda: M("adaedu.halting.baselines").cell_step_flops(3, 8, 1, "lstm9"))
        ],
        "adaedu.halting.baselines.make_cell": [
            ("cell", lambda: M("adaedu.halting.baselines").make_cell(3, 8, "lstm9"))
        ],
        "adaedu.halting.baselines.with_flag": [
            ("x", lambda: M("adaedu.halting.baselines").with_flag(_x(3), True))
        ],
        "adaedu.halting.experiments.penalty_schedule": [
            ("steps", lambda: M("adaedu.halting.experiments").penalty_schedule(1, 0)),
            ("warmup", lambda: M("adaedu.halting.experiments").penalty_schedule(1, 10, warmup=1.5)),
        ],
        "adaedu.halting.experiments.spearman": [
            ("b", lambda: M("adaedu.halting.experiments").spearman(_x(5), _x(4)))
        ],
        "adaedu.halting.experiments.fit_parity": [
            (
                "steps",
                lambda: M("adaedu.halting.experiments").fit_parity(
                    M("adaedu.halting.act").ACT(5, 8, 1), 4, 0
                ),
            )
        ],
        "adaedu.halting.experiments.parity_loss": [
            (
                "tau",
                lambda: M("adaedu.halting.experiments").parity_loss(
                    M("adaedu.halting.act").ACT(4, 8, 1, cap=2), _x(4, 4), torch.zeros(4), tau=-1.0
                ),
            )
        ],
        "adaedu.halting.multi_exit.Block": [("d", lambda: M("adaedu.halting.multi_exit").Block(0))],
        "adaedu.halting.multi_exit.Head": [
            ("n_classes", lambda: M("adaedu.halting.multi_exit").Head(4, 0))
        ],
        "adaedu.halting.multi_exit.MultiExitMLP": [
            ("n_layers", lambda: M("adaedu.halting.multi_exit").MultiExitMLP(n_layers=0)),
            ("n_classes", lambda: M("adaedu.halting.multi_exit").MultiExitMLP(n_classes=1)),
        ],
        "adaedu.halting.multi_exit.Patience": [
            ("t", lambda: M("adaedu.halting.multi_exit").Patience(0))
        ],
        "adaedu.halting.multi_exit.EntropyThreshold": [
            ("threshold", lambda: M("adaedu.halting.multi_exit").EntropyThreshold(-1.0)),
            ("threshold", lambda: M("adaedu.halting.multi_exit").EntropyThreshold(NAN)),
        ],
        "adaedu.halting.multi_exit.Similarity": [
            ("kind", lambda: M("adaedu.halting.multi_exit").Similarity(0.1, kind="l2")),
            ("t", lambda: M("adaedu.halting.multi_exit").Similarity(0.1, t=0)),
        ],
        "adaedu.halting.multi_exit.FixedDepth": [
            ("layer", lambda: M("adaedu.halting.multi_exit").FixedDepth(0))
        ],
        "adaedu.halting.multi_exit.divergence": [
            ("kind", lambda: M("adaedu.halting.multi_exit").divergence(_x(2, 3), _x(2, 3), "l2")),
            ("q_logits", lambda: M("adaedu.halting.multi_exit").divergence(_x(2, 3), _x(2, 4))),
        ],
        "adaedu.halting.multi_exit.entropy": [
            ("logits", lambda: M("adaedu.halting.multi_exit").entropy(torch.tensor([1, 2])))
        ],
        "adaedu.halting.multi_exit.pabee_loss": [
            (
                "labels",
                lambda: M("adaedu.halting.multi_exit").pabee_loss(
                    _x(3, 4, 5), torch.zeros(3).long()
                ),
            )
        ],
        "adaedu.halting.multi_exit.simulate_exits": [
            (
                "logits",
                lambda: M("adaedu.halting.multi_exit").simulate_exits(
                    _x(4, 5), M("adaedu.halting.multi_exit").Patience(1)
                ),
            )
        ],
        "adaedu.halting.multi_exit.early_exit_inference": [
            (
                "policy",
                lambda: M("adaedu.halting.multi_exit").early_exit_inference(
                    M("adaedu.halting.multi_exit").MultiExitMLP(n_layers=2), _x(3, 64), "patience"
                ),
            )
        ],
        "adaedu.halting.multi_exit.all_head_logits": [
            (
                "x",
                lambda: M("adaedu.halting.multi_exit").all_head_logits(
                    M("adaedu.halting.multi_exit").MultiExitMLP(n_layers=2), _x(3, 5)
                ),
            )
        ],
        "adaedu.halting.multi_exit.exit_flops": [
            (
                "exit_layer",
                lambda: M("adaedu.halting.multi_exit").exit_flops(
                    M("adaedu.halting.multi_exit").MultiExitMLP(n_layers=2), torch.tensor([0, 3])
                ),
            )
        ],
        "adaedu.halting.multi_exit.head_accuracies": [
            (
                "labels",
                lambda: M("adaedu.halting.multi_exit").head_accuracies(
                    _x(3, 4, 5), torch.zeros(7).long()
                ),
            )
        ],
        "adaedu.halting.multi_exit.overthinking_mask": [
            (
                "labels",
                lambda: M("adaedu.halting.multi_exit").overthinking_mask(
                    _x(3, 4, 5), torch.zeros(7).long()
                ),
            )
        ],
        "adaedu.halting.multi_exit.overthinking_rate": [
            (
                "labels",
                lambda: M("adaedu.halting.multi_exit").overthinking_rate(
                    _x(3, 4, 5), torch.zeros(7).long()
                ),
            )
        ],
        "adaedu.halting.multi_exit.sweep": [
            (
                "policies",
                lambda: M("adaedu.halting.multi_exit").sweep(
                    _x(3, 4, 5), torch.zeros(4).long(), []
                ),
            )
        ],
        "adaedu.halting.multi_exit.select_on_validation": [
            (
                "policies",
                lambda: M("adaedu.halting.multi_exit").select_on_validation(
                    _x(3, 4, 5), torch.zeros(4).long(), []
                ),
            ),
            (
                "tolerance",
                lambda: M("adaedu.halting.multi_exit").select_on_validation(
                    _x(3, 4, 5),
                    torch.zeros(4).long(),
                    [M("adaedu.halting.multi_exit").Patience(1)],
                    tolerance=2.0,
                ),
            ),
        ],
        "adaedu.halting.multi_exit.static_exit_accuracy": [
            (
                "mean_layers",
                lambda: M("adaedu.halting.multi_exit").static_exit_accuracy(torch.rand(4), 9.0),
            )
        ],
        "adaedu.halting.multi_exit.load_noisy_digits": [
            ("noise", lambda: M("adaedu.halting.multi_exit").load_noisy_digits(noise=-1.0)),
            (
                "val_fraction",
                lambda: M("adaedu.halting.multi_exit").load_noisy_digits(val_fraction=1.5),
            ),
        ],
        "adaedu.halting.multi_exit.layer_flops": [
            ("model", lambda: M("adaedu.halting.multi_exit").layer_flops("model"))
        ],
        "adaedu.halting.tasks.parity_batch": [
            ("batch_size", lambda: M("adaedu.halting.tasks").parity_batch(0, 4)),
            ("max_nonzero", lambda: M("adaedu.halting.tasks").parity_batch(4, 4, max_nonzero=9)),
            ("min_nonzero", lambda: M("adaedu.halting.tasks").parity_batch(4, 4, min_nonzero=5)),
        ],
        "adaedu.moe.hashing.token_counts": [
            ("vocab_size", lambda: M("adaedu.moe.hashing").token_counts(torch.tensor([0, 1]), 0)),
            ("ids", lambda: M("adaedu.moe.hashing").token_counts(torch.tensor([0, 5]), 3)),
        ],
        "adaedu.moe.hashing.rank_frequency": [
            ("ids", lambda: M("adaedu.moe.hashing").rank_frequency(torch.tensor([0.0, 1.0]), 3))
        ],
        "adaedu.moe.hashing.zipf_fit": [
            ("freqs", lambda: M("adaedu.moe.hashing").zipf_fit(torch.tensor([0.5]))),
            (
                "max_rank",
                lambda: M("adaedu.moe.hashing").zipf_fit(torch.tensor([0.5, 0.3, 0.2]), max_rank=9),
            ),
        ],
        "adaedu.moe.hashing.expert_loads": [
            (
                "n_experts",
                lambda: M("adaedu.moe.hashing").expert_loads(
                    torch.tensor([0, 3]), torch.tensor([0, 1]), 2
                ),
            ),
            (
                "token_ids",
                lambda: M("adaedu.moe.hashing").expert_loads(
                    torch.tensor([0, 1]), torch.tensor([0, 5]), 2
                ),
            ),
        ],
        "adaedu.moe.hashing.max_mean": [("loads", lambda: M("adaedu.moe.hashing").max_mean([]))],
        "adaedu.moe.hashing.greedy_balanced_table": [
            (
                "n_experts",
                lambda: M("adaedu.moe.hashing").greedy_balanced_table(torch.tensor([3, 2]), 0),
            ),
            ("counts", lambda: M("adaedu.moe.hashing").greedy_balanced_table(torch.tensor([]), 2)),
        ],
        "adaedu.moe.hashing.random_table_max_mean": [
            (
                "n_tables",
                lambda: M("adaedu.moe.hashing").random_table_max_mean(
                    torch.tensor([0, 1]), 3, 2, n_tables=0
                ),
            )
        ],
        "adaedu.moe.hashing.make_routed_lm": [
            (
                "kind",
                lambda: M("adaedu.moe.hashing").make_routed_lm(
                    "magic",
                    10,
                    d_model=8,
                    n_layers=1,
                    n_heads=2,
                    block_size=8,
                    n_experts=2,
                    d_expert=8,
                ),
            )
        ],
        "adaedu.moe.hashing.validation_windows": [
            ("block_size", lambda: M("adaedu.moe.hashing").validation_windows(None, 0))
        ],
        "adaedu.moe.layer.dense_equivalent": [
            ("layer", lambda: M("adaedu.moe.layer").dense_equivalent("layer"))
        ],
        "adaedu.moe.layer.routing_token_ids": [
            ("token_ids", lambda: M("adaedu.moe.layer").routing_token_ids(_lm(), "ids").__enter__())
        ],
        "adaedu.moe.mixtral.mixtral_parameters": [
            (
                "n_kv_heads",
                lambda: M("adaedu.moe.mixtral").mixtral_parameters(8, 1, 4, 16, 4, 3, 10, 4, 2),
            ),
            (
                "top_k",
                lambda: M("adaedu.moe.mixtral").mixtral_parameters(8, 1, 4, 16, 4, 2, 10, 4, 5),
            ),
            (
                "dim",
                lambda: M("adaedu.moe.mixtral").mixtral_parameters(0, 1, 4, 16, 4, 2, 10, 4, 2),
            ),
        ],
        "adaedu.moe.mixtral.tiny_mixtral": [
            ("k", lambda: M("adaedu.moe.mixtral").tiny_mixtral(10, n_experts=4, k=5)),
            ("vocab_size", lambda: M("adaedu.moe.mixtral").tiny_mixtral(0)),
        ],
        "adaedu.moe.mixtral.routed_experts": [
            ("idx", lambda: M("adaedu.moe.mixtral").routed_experts(_lm(), torch.tensor([1, 2]))),
            (
                "model",
                lambda: M("adaedu.moe.mixtral").routed_experts(_lm(), torch.tensor([[1, 2]])),
            ),
        ],
        "adaedu.moe.mixtral.repetition_rates": [
            ("chosen", lambda: M("adaedu.moe.mixtral").repetition_rates(torch.rand(2, 3, 2))),
            (
                "chosen",
                lambda: M("adaedu.moe.mixtral").repetition_rates(torch.zeros(2, 1, 2).long()),
            ),
        ],
        "adaedu.moe.mixtral.uniform_chance_rates": [
            ("k", lambda: M("adaedu.moe.mixtral").uniform_chance_rates(4, 5)),
            ("n_experts", lambda: M("adaedu.moe.mixtral").uniform_chance_rates(0, 1)),
        ],
        "adaedu.moe.mixtral.chance_rates": [
            ("n_experts", lambda: M("adaedu.moe.mixtral").chance_rates(torch.full((2, 3, 2), 5), 4))
        ],
        "adaedu.moe.mixtral.expert_shares": [
            (
                "domain",
                lambda: M("adaedu.moe.mixtral").expert_shares(
                    torch.zeros(2, 3, 2).long(), torch.zeros(5).long(), 2, 4
                ),
            )
        ],
        "adaedu.moe.mixtral.hf_parity": [("k", lambda: M("adaedu.moe.mixtral").hf_parity(k=9))],
        "adaedu.moe.noisy_topk.expert_mlp": [
            ("hidden", lambda: M("adaedu.moe.noisy_topk").expert_mlp(3, 0, 2))
        ],
        "adaedu.moe.noisy_topk.importance": [
            ("gates", lambda: M("adaedu.moe.noisy_topk").importance(torch.rand(3)))
        ],
        "adaedu.moe.noisy_topk.load": [
            ("load_probs", lambda: M("adaedu.moe.noisy_topk").load(torch.rand(3)))
        ],
        "adaedu.moe.noisy_topk.load_probability": [
            (
                "k",
                lambda: M("adaedu.moe.noisy_topk").load_probability(
                    _x(2, 3), _x(2, 3), torch.ones(2, 3), 4
                ),  # k = n_experts is legitimate (every expert chosen, P = 1)
            ),
            (
                "noise_std",
                lambda: M("adaedu.moe.noisy_topk").load_probability(
                    _x(2, 3), _x(2, 3), torch.ones(2, 4), 1
                ),
            ),
        ],
        "adaedu.moe.noisy_topk.routing_stats": [
            ("route", lambda: M("adaedu.moe.noisy_topk").routing_stats("route"))
        ],
        "adaedu.moe.experts.expert_kind": [
            ("expert", lambda: M("adaedu.moe.experts").expert_kind(torch.nn.ReLU()))
        ],
        "adaedu.moe.offload.belady_victim": [
            ("candidates", lambda: M("adaedu.moe.offload").belady_victim([], [1.0])),
            ("next_use", lambda: M("adaedu.moe.offload").belady_victim([3], [1.0])),
        ],
        "adaedu.moe.offload.simulate_cache": [
            (
                "policy",
                lambda: M("adaedu.moe.offload").simulate_cache(torch.tensor([[0, 1]]), 2, "magic"),
            ),
            ("capacity", lambda: M("adaedu.moe.offload").simulate_cache(torch.tensor([[0, 1]]), 0)),
            ("requests", lambda: M("adaedu.moe.offload").simulate_cache(torch.tensor([0, 1]), 2)),
        ],
        "adaedu.moe.offload.chance_hit_rate": [
            ("capacity", lambda: M("adaedu.moe.offload").chance_hit_rate(4, 9))
        ],
        "adaedu.moe.offload.chance_any_hit": [
            ("k", lambda: M("adaedu.moe.offload").chance_any_hit(4, 9, 2))
        ],
        "adaedu.moe.offload.next_uses": [
            ("requests", lambda: M("adaedu.moe.offload").next_uses(torch.tensor([[0, 9]]), 4))
        ],
        "adaedu.moe.offload.concat_traces": [
            ("traces", lambda: M("adaedu.moe.offload").concat_traces([]))
        ],
        "adaedu.moe.offload.speculative_recall": [
            (
                "experts",
                lambda: M("adaedu.moe.offload").speculative_recall(
                    torch.zeros(2, 3, 2).long(), torch.zeros(2, 4, 2).long()
                ),
            )
        ],
        "adaedu.moe.offload.sequence_recall": [
            (
                "experts",
                lambda: M("adaedu.moe.offload").sequence_recall(
                    torch.zeros(2, 3, 2).long(), torch.zeros(2, 4, 2).long()
                ),
            )
        ],
        "adaedu.moe.offload.tokens_per_second": [
            ("compute_seconds", lambda: M("adaedu.moe.offload").tokens_per_second(1.0, -1.0, 1.0)),
            ("misses_per_token", lambda: M("adaedu.moe.offload").tokens_per_second(-1.0, 1.0, 1.0)),
        ],
        "adaedu.moe.offload.copy_seconds": [
            ("n_bytes", lambda: M("adaedu.moe.offload").copy_seconds(-1, "cpu")),
            ("repeats", lambda: M("adaedu.moe.offload").copy_seconds(16, "cpu", 0)),
        ],
        "adaedu.moe.offload.layer_seconds": [
            (
                "compute_seconds",
                lambda: M("adaedu.moe.offload").layer_seconds(
                    torch.ones(2), torch.ones(2), -1.0, 1.0
                ),
            )
        ],
        "adaedu.moe.offload.record_expert_trace": [
            (
                "model",
                lambda: M("adaedu.moe.offload").record_expert_trace(
                    _lm(), torch.tensor([[1]]), 2, temperature=-1.0
                ),
            )
        ],
        "adaedu.moe.offload.forced_expert_trace": [
            (
                "model",
                lambda: M("adaedu.moe.offload").forced_expert_trace(_lm(), torch.tensor([1, 2]), 1),
            )
        ],
        "adaedu.moe.stats.moe_stats": [
            ("routing", lambda: M("adaedu.moe.stats").moe_stats("routing"))
        ],
        "adaedu.moe.switch_lm.experts_alive": [
            ("threshold", lambda: M("adaedu.moe.switch_lm").experts_alive([1, 2], -1.0)),
            ("counts", lambda: M("adaedu.moe.switch_lm").experts_alive([])),
        ],
        "adaedu.moe.switch_lm.moe_layers": [
            ("model", lambda: M("adaedu.moe.switch_lm").moe_layers("model"))
        ],
        "adaedu.moe.switch_lm.capacity_factor": [
            (
                "capacity_factor",
                lambda: M("adaedu.moe.switch_lm").capacity_factor(_lm(), -1.0).__enter__(),
            )
        ],
        "adaedu.moe.switch_lm.dense_lm": [
            (
                "n_experts",
                lambda: M("adaedu.moe.switch_lm").dense_lm(
                    M("adaedu.lm").TinyLMConfig(
                        vocab_size=7, d_model=8, n_layers=1, n_heads=2, block_size=16
                    ),
                    n_experts=0,
                ),
            )
        ],
        "adaedu.moe.switch_lm.switch_lm": [
            (
                "capacity_factor",
                lambda: M("adaedu.moe.switch_lm").switch_lm(
                    M("adaedu.lm").TinyLMConfig(
                        vocab_size=7, d_model=8, n_layers=1, n_heads=2, block_size=16
                    ),
                    4,
                    8,
                    capacity_factor=-1.0,
                    balance_weight=0.0,
                ),
            ),
            (
                "layers",
                lambda: M("adaedu.moe.switch_lm").switch_lm(
                    M("adaedu.lm").TinyLMConfig(
                        vocab_size=7, d_model=8, n_layers=1, n_heads=2, block_size=16
                    ),
                    4,
                    8,
                    layers=[5],
                    balance_weight=0.0,
                ),
            ),
        ],
        "adaedu.moe.tasks.make_cluster_task": [
            ("n_clusters", lambda: M("adaedu.moe.tasks").make_cluster_task(0, 3, 2)),
            ("spread", lambda: M("adaedu.moe.tasks").make_cluster_task(3, 3, 2, spread=-1.0)),
        ],
        "adaedu.grading.grade": [
            ("submissions", lambda: M("adaedu.grading").grade("/no/such/folder")),
            ("timeout", lambda: M("adaedu.grading").grade(".", timeout=0)),
        ],
        "adaedu.grading.grade_notebook": [
            (
                "timeout",
                lambda: M("adaedu.grading").grade_notebook(
                    M("adaedu.course").course_notebooks()[0],
                    M("adaedu.course").course_notebooks()[0],
                    "learner",
                    timeout=-1,
                ),
            )
        ],
        "adaedu.grading.spec_of": [
            ("nb", lambda: M("adaedu.grading").spec_of(M("nbformat").v4.new_notebook()))
        ],
        "adaedu.site.build_site": [
            ("out", lambda: M("adaedu.site").build_site(M("adaedu.course").ROOT)),
            ("out", lambda: M("adaedu.site").build_site(M("adaedu.course").ROOT / "README.md")),
        ],
        "adaedu.site.stage": [("src", lambda: M("adaedu.site").stage(M("adaedu.course").ROOT))],
        "adaedu.site.part_of": [("path", lambda: M("adaedu.site").part_of("notes.ipynb"))],
        "adaedu.site.site_notebook": [
            (
                "repo",
                lambda: M("adaedu.site").site_notebook(M("nbformat").v4.new_notebook(), "no-slash"),
            )
        ],
        "adaedu.modular.widenet.make_albert": [
            ("config", lambda: M("adaedu.modular.widenet").make_albert(None))
        ],
        "adaedu.modular.widenet.make_widenet": [
            (
                "n_experts",
                lambda: M("adaedu.modular.widenet").make_widenet(_vit_cfg(), n_experts=0),
            ),
            ("k", lambda: M("adaedu.modular.widenet").make_widenet(_vit_cfg(), n_experts=4, k=9)),
        ],
        "adaedu.modular.widenet.share_across_depth": [
            (
                "model",
                lambda: M("adaedu.modular.widenet").share_across_depth(
                    torch.nn.Linear(2, 2), norms=True
                ),
            )
        ],
        "adaedu.modular.widenet.shared_modules": [
            ("model", lambda: M("adaedu.modular.widenet").shared_modules(torch.nn.Linear(2, 2)))
        ],
        "adaedu.modular.widenet_experiments.build": [
            ("name", lambda: M("adaedu.modular.widenet_experiments").build("resnet", None))
        ],
        "adaedu.modular.widenet_experiments.held_out": [
            ("setup", lambda: M("adaedu.modular.widenet_experiments").held_out(None, None))
        ],
        "adaedu.modular.widenet_experiments.run_one": [
            (
                "name",
                lambda: M("adaedu.modular.widenet_experiments").run_one(("resnet", 0), None, None),
            )
        ],
        "adaedu.modular.widenet_experiments.run_comparison": [
            (
                "seeds",
                lambda: M("adaedu.modular.widenet_experiments").run_comparison([], None, None),
            )
        ],
        "adaedu.moe.smear.SMEARLayer": [
            ("n_experts", lambda: M("adaedu.moe.smear").SMEARLayer(6, 10, 0)),
            ("x", lambda: M("adaedu.moe.smear").SMEARLayer(6, 10, 2)(torch.randn(5, 6))),
        ],
        "adaedu.moe.smear.ensemble_output": [
            (
                "probs",
                lambda: M("adaedu.moe.smear").ensemble_output(
                    M("adaedu.moe.smear").SMEARLayer(6, 10, 2),
                    torch.randn(2, 3, 6),
                    torch.ones(2, 3),
                ),
            )
        ],
        "adaedu.modular.fff.FastFeedForward": [
            ("depth", lambda: M("adaedu.modular.fff").FastFeedForward(5, 4, -1)),
            ("leaf_width", lambda: M("adaedu.modular.fff").FastFeedForward(5, 0, 2)),
            ("x", lambda: M("adaedu.modular.fff").FastFeedForward(5, 4, 2)(torch.randn(3, 4))),
        ],
        "adaedu.moe.tasks.run_fits": [
            (
                "jobs",
                lambda: M("adaedu.moe.tasks").run_fits(
                    [], M("adaedu.moe.tasks").make_cluster_task(3, 3, 2), None, None, fit_kw={}
                ),
            )
        ],
        "adaedu.moe.tasks.fit": [
            (
                "steps",
                lambda: M("adaedu.moe.tasks").fit(
                    M("adaedu.moe.noisy_topk").SparseMoE(3, 2, 4, 3, 1),
                    M("adaedu.moe.tasks").make_cluster_task(3, 3, 2),
                    steps=0,
                    batch_size=4,
                    lr=0.1,
                ),
            )
        ],
        "adaedu.moe.tasks.evaluate": [
            (
                "x",
                lambda: M("adaedu.moe.tasks").evaluate(
                    M("adaedu.moe.noisy_topk").SparseMoE(3, 2, 4, 3, 1),
                    _x(4, 5),
                    torch.zeros(4).long(),
                ),
            )
        ],
        "adaedu.moe.expert_choice_experiments.train_specs": [
            (
                "tasks",
                lambda: M("adaedu.moe.expert_choice_experiments").train_specs(
                    [], None, None, model_kw={}, train_kw={}
                ),
            )
        ],
        "adaedu.moe.expert_choice_experiments.expert_choice_gates": [
            (
                "capacity_factor",
                lambda: M("adaedu.moe.expert_choice_experiments").expert_choice_gates(
                    _x(5, 3), -1.0
                ),
            ),
            (
                "logits",
                lambda: M("adaedu.moe.expert_choice_experiments").expert_choice_gates(_x(5), 1.0),
            ),
        ],
        "adaedu.moe.expert_choice_experiments.experts_per_token_hist": [
            (
                "token",
                lambda: M("adaedu.moe.expert_choice_experiments").experts_per_token_hist(
                    torch.tensor([0, 9]), 3, 2
                ),
            )
        ],
        "adaedu.moe.expert_choice_experiments.smooth": [
            ("beta", lambda: M("adaedu.moe.expert_choice_experiments").smooth([1.0, 2.0], 1.5))
        ],
        "adaedu.moe.expert_choice_experiments.steps_to_reach": [
            (
                "steps",
                lambda: M("adaedu.moe.expert_choice_experiments").steps_to_reach(
                    [1, 2], [1.0], 0.5
                ),
            )
        ],
        "adaedu.moe.expert_choice_experiments.top1_max_mean_load": [
            ("logits", lambda: M("adaedu.moe.expert_choice_experiments").top1_max_mean_load(_x(5)))
        ],
        "adaedu.moe.expert_choice_experiments.make_moe_ffn": [
            (
                "router",
                lambda: M("adaedu.moe.expert_choice_experiments").make_moe_ffn(
                    "magic", "batch", 8, 16, 4
                ),
            ),
            (
                "grouping",
                lambda: M("adaedu.moe.expert_choice_experiments").make_moe_ffn(
                    "top1", "magic", 8, 16, 4
                ),
            ),
        ],
        "adaedu.moe.expert_choice_experiments.future_leak": [
            (
                "position",
                lambda: M("adaedu.moe.expert_choice_experiments").future_leak(
                    _lm(), torch.tensor([[1, 2, 3]]), 9, 1
                ),
            )
        ],
        "adaedu.moe.expert_choice_experiments.PositionGroupedMoE": [
            ("moe", lambda: M("adaedu.moe.expert_choice_experiments").PositionGroupedMoE("moe"))
        ],
        "adaedu.modular.vit.patchify": [
            ("patch", lambda: M("adaedu.modular.vit").patchify(_x(2, 8, 8), 3)),
            ("images", lambda: M("adaedu.modular.vit").patchify(_x(8), 2)),
        ],
        "adaedu.modular.vit.patch_grid": [
            ("patch", lambda: M("adaedu.modular.vit").patch_grid(_x(16), 8, 3))
        ],
        "adaedu.modular.vit.ViTConfig": [
            ("patch", lambda: M("adaedu.modular.vit").ViTConfig(image_size=8, patch=3)),
            ("d_model", lambda: M("adaedu.modular.vit").ViTConfig(d_model=30, n_heads=4)),
        ],
        "adaedu.modular.vit.SelfAttention": [
            ("n_heads", lambda: M("adaedu.modular.vit").SelfAttention(30, 4)),
            ("d_model", lambda: M("adaedu.modular.vit").SelfAttention(0, 4)),
        ],
        "adaedu.modular.vit.TinyViT": [
            ("images", lambda: M("adaedu.modular.vit").TinyViT(_vit_cfg())(_x(2, 9, 9)))
        ],
        "adaedu.modular.vit.classification_loss": [
            (
                "labels",
                lambda: M("adaedu.modular.vit").classification_loss(
                    M("adaedu.modular.vit").TinyViT(_vit_cfg()), _x(2, 8, 8), torch.zeros(3).long()
                ),
            )
        ],
        "adaedu.modular.digits_moe.method_kwargs": [
            ("method", lambda: M("adaedu.modular.digits_moe").method_kwargs("magic", 1, 16, 4))
        ],
        "adaedu.modular.digits_moe.make_vit": [
            ("method", lambda: M("adaedu.modular.digits_moe").make_vit("magic", 1, _vit_cfg()))
        ],
        "adaedu.modular.digits_moe.load_canvas_digits": [
            ("test_fraction", lambda: M("adaedu.modular.digits_moe").load_canvas_digits(1.5))
        ],
        "adaedu.modular.digits_moe.shift_digits": [
            (
                "canvas",
                lambda: M("adaedu.modular.digits_moe").shift_digits(
                    _x(2, 8, 8), 4, torch.Generator()
                ),
            )
        ],
        "adaedu.precursors.local_experts.MLP": [
            ("hidden", lambda: M("adaedu.precursors.local_experts").MLP(2, 0, 4))
        ],
        "adaedu.precursors.local_experts.LogisticMLP": [
            ("hidden", lambda: M("adaedu.precursors.local_experts").LogisticMLP(2, 0, 4))
        ],
        "adaedu.precursors.local_experts.MixtureOfExperts": [
            (
                "expert_outputs",
                lambda: M("adaedu.precursors.local_experts").MixtureOfExperts(2, 4, 3, "magic"),
            ),
            ("x", lambda: M("adaedu.precursors.local_experts").MixtureOfExperts(2, 4, 3)(_x(5, 3))),
        ],
        "adaedu.precursors.local_experts.mixture_output": [
            (
                "expert_outputs",
                lambda: M("adaedu.precursors.local_experts").mixture_output(
                    torch.rand(2, 3), torch.rand(2, 4, 5)
                ),
            )
        ],
        "adaedu.precursors.local_experts.cooperative_loss": [
            (
                "labels",
                lambda: M("adaedu.precursors.local_experts").cooperative_loss(
                    torch.rand(2, 3), torch.rand(2, 3, 4), torch.tensor([0, 9])
                ),
            )
        ],
        "adaedu.precursors.local_experts.competitive_loss": [
            (
                "labels",
                lambda: M("adaedu.precursors.local_experts").competitive_loss(
                    torch.rand(2, 3), torch.rand(2, 3, 4), torch.tensor([0.0, 1.0])
                ),
            )
        ],
        "adaedu.precursors.local_experts.gaussian_mixture_loss": [
            (
                "gates",
                lambda: M("adaedu.precursors.local_experts").gaussian_mixture_loss(
                    torch.rand(2), torch.rand(2, 3, 4), torch.tensor([0, 1])
                ),
            )
        ],
        "adaedu.precursors.local_experts.squared_error": [
            (
                "outputs",
                lambda: M("adaedu.precursors.local_experts").squared_error(
                    torch.rand(2), torch.tensor([0, 1])
                ),
            )
        ],
        "adaedu.precursors.local_experts.responsibilities": [
            (
                "labels",
                lambda: M("adaedu.precursors.local_experts").responsibilities(
                    torch.rand(2, 3), torch.rand(2, 3, 4), torch.tensor([0])
                ),
            )
        ],
        "adaedu.precursors.local_experts.gate_usage": [
            ("gates", lambda: M("adaedu.precursors.local_experts").gate_usage(torch.rand(0, 3)))
        ],
        "adaedu.precursors.local_experts.experts_in_use": [
            (
                "threshold",
                lambda: M("adaedu.precursors.local_experts").experts_in_use(torch.rand(2, 3), 1.5),
            )
        ],
        "adaedu.precursors.local_experts.experts_per_case": [
            ("gates", lambda: M("adaedu.precursors.local_experts").experts_per_case(torch.rand(3)))
        ],
        "adaedu.precursors.local_experts.hit_rate": [
            (
                "scores",
                lambda: M("adaedu.precursors.local_experts").hit_rate(
                    torch.rand(3), torch.tensor([0, 1, 2])
                ),
            )
        ],
        "adaedu.precursors.local_experts.epochs_to_criterion": [
            (
                "criterion",
                lambda: M("adaedu.precursors.local_experts").epochs_to_criterion(
                    torch.rand(2, 5), 1.5
                ),
            )
        ],
        "adaedu.precursors.local_experts.evaluate": [
            (
                "objective",
                lambda: M("adaedu.precursors.local_experts").evaluate(
                    M("adaedu.precursors.local_experts").MLP(2, 3, 4),
                    "magic",
                    _x(3, 2),
                    torch.zeros(3).long(),
                ),
            )
        ],
        "adaedu.precursors.local_experts.select_learning_rate": [
            (
                "lrs",
                lambda: M("adaedu.precursors.local_experts").select_learning_rate(
                    torch.rand(2, 3), [0.1]
                ),
            )
        ],
        "adaedu.precursors.local_experts.gate_partition": [
            (
                "model",
                lambda: M("adaedu.precursors.local_experts").gate_partition(
                    "model", None, torch.ones(2), torch.ones(2)
                ),
            )
        ],
        "adaedu.precursors.local_experts.System": [
            (
                "objective",
                lambda: M("adaedu.precursors.local_experts").System("s", lambda: None, "magic"),
            )
        ],
        "adaedu.precursors.local_experts.median": [
            ("values", lambda: M("adaedu.precursors.local_experts").median(torch.empty(0)))
        ],
        "adaedu.precursors.local_experts.vowel_split": [
            (
                "n_train",
                lambda: M("adaedu.precursors.local_experts").vowel_split(
                    M("adaedu.data").load_vowels(), -1
                ),
            )
        ],
        "adaedu.precursors.local_experts.train_snapshots": [
            (
                "lr",
                lambda: M("adaedu.precursors.local_experts").train_snapshots(
                    None, None, seed=0, lr=-1.0, epochs=[1]
                ),
            )
        ],
        "adaedu.show.source_of": [("obj", lambda: M("adaedu.show").source_of(3))],
        "adaedu.lm.norm.RMSNorm": [
            ("dim", lambda: M("adaedu.lm.norm").RMSNorm(0)),
            ("eps", lambda: M("adaedu.lm.norm").RMSNorm(4, eps=-1.0)),
        ],
        "adaedu.lm.model.TinyLM": [
            ("idx", lambda: _lm()(torch.tensor([[1, 9]]))),
            ("idx", lambda: _lm()(torch.tensor([[-1, 2]]))),
            ("idx", lambda: _lm()(torch.tensor([[1.0]]))),
            ("block_size", lambda: _lm()(torch.zeros(1, 20).long())),
        ],
        "adaedu.lm.attention.CausalSelfAttention": [
            ("n_heads", lambda: M("adaedu.lm.attention").CausalSelfAttention(30, 4, 16))
        ],
        "adaedu.lm.attention.KVCache": [("n_layers", lambda: M("adaedu.lm.attention").KVCache(0))],
        "adaedu.lm.attention.causal_mask": [
            ("t", lambda: M("adaedu.lm.attention").causal_mask(5, 3)),
            ("s", lambda: M("adaedu.lm.attention").causal_mask(0, -1)),
        ],
        "adaedu.lm.rope.RotaryEmbedding": [
            ("dim", lambda: M("adaedu.lm.rope").RotaryEmbedding(3, 16))
        ],
        "adaedu.lm.rope.rotary_angles": [
            ("dim", lambda: M("adaedu.lm.rope").rotary_angles(torch.arange(4), 3))
        ],
        "adaedu.lm.rope.apply_rotary": [
            ("cos", lambda: M("adaedu.lm.rope").apply_rotary(_x(1, 2, 4, 8), _x(4, 3), _x(4, 3))),
            ("sin", lambda: M("adaedu.lm.rope").apply_rotary(_x(1, 2, 4, 8), _x(4, 4), _x(4, 3))),
            ("x", lambda: M("adaedu.lm.rope").apply_rotary(_x(1, 2, 4, 7), _x(4, 3), _x(4, 3))),
        ],
        "adaedu.lm.ffn.default_d_ff": [
            ("kind", lambda: M("adaedu.lm.ffn").default_d_ff("magic", 8))
        ],
        "adaedu.lm.ffn.MLP": [
            ("d_ff", lambda: M("adaedu.lm.ffn").MLP(8, 0)),
            ("d_model", lambda: M("adaedu.lm.ffn").MLP(8.0, 16)),
        ],
        "adaedu.lm.ffn.SwiGLU": [("d_ff", lambda: M("adaedu.lm.ffn").SwiGLU(8, 0))],
        "adaedu.lm.ffn.split_ffn_output": [
            ("FFN", lambda: M("adaedu.lm.ffn").split_ffn_output("out"))
        ],
        "adaedu.lm.tokenizers.CharTokenizer": [
            ("chars", lambda: M("adaedu.lm.tokenizers").CharTokenizer(3)),
            ("chars", lambda: M("adaedu.lm.tokenizers").CharTokenizer([1, 2])),
            ("chars", lambda: M("adaedu.lm.tokenizers").CharTokenizer(["ab"])),
        ],
        "adaedu.lm.tokenizers.BPETokenizer": [
            (
                "merges",
                lambda: M("adaedu.lm.tokenizers").BPETokenizer(
                    M("adaedu.lm.tokenizers").CharTokenizer("ab"), [(0, 9)]
                ),
            ),
            ("merges", lambda: M("adaedu.lm.tokenizers").BPETokenizer(_chars(), [(1, 2), (3, 4)])),
            ("base", lambda: M("adaedu.lm.tokenizers").BPETokenizer("ab", [])),
        ],
        "adaedu.lm.tokenizers.merge_pair": [
            ("pair", lambda: M("adaedu.lm.tokenizers").merge_pair([1, 2], (1,), 3)),
            ("pair", lambda: M("adaedu.lm.tokenizers").merge_pair([1, 2], [1, 2], 3)),
        ],
        "adaedu.lm.tokenizers.pretokenize": [
            ("text", lambda: M("adaedu.lm.tokenizers").pretokenize(3))
        ],
        "adaedu.lm.model.lm_loss": [
            ("batch", lambda: M("adaedu.lm.model").lm_loss(_lm(), [torch.tensor([[1, 2]])])),
            ("batch", lambda: M("adaedu.lm.model").lm_loss(_lm(), {"x": torch.ones(1, 3).long()})),
        ],
        "adaedu.lm.model.Block": [
            (
                "layer",
                lambda: M("adaedu.lm.model").Block(
                    M("adaedu.lm").TinyLMConfig(
                        vocab_size=7, d_model=8, n_layers=1, n_heads=2, block_size=16
                    ),
                    5,
                ),
            )
        ],
        "adaedu.lm.training.evaluate_lm": [
            ("batches", lambda: M("adaedu.lm.training").evaluate_lm(_lm(), []))
        ],
        "adaedu.lm.training.validation_batches": [
            ("n_batches", lambda: M("adaedu.lm.training").validation_batches(None, 0, 2, 4))
        ],
        "adaedu.lm.training.train_lm": [
            (
                "steps",
                lambda: M("adaedu.lm.training").train_lm(
                    _lm(), None, steps=0, batch_size=2, block_size=4
                ),
            )
        ],
        "adaedu.lm.training.moe_aux_loss": [
            ("aux", lambda: M("adaedu.lm.training").moe_aux_loss("aux"))
        ],
        "adaedu.lm.training.lm_objective": [
            ("batch", lambda: M("adaedu.lm.training").lm_objective(_lm(), [torch.tensor([[1, 2]])]))
        ],
        "adaedu.decoding.cascade.route": [
            (
                "thresholds",
                lambda: M("adaedu.decoding.cascade").route(torch.rand(3, 5), torch.rand(5)),
            )
        ],
        "adaedu.decoding.cascade.answer_features": [
            ("probs", lambda: M("adaedu.decoding.cascade").answer_features(torch.rand(5)))
        ],
        "adaedu.decoding.cascade.evaluate_cascade": [
            (
                "thresholds",
                lambda: M("adaedu.decoding.cascade").evaluate_cascade(
                    torch.ones(3, 5).bool(), torch.rand(3, 5), torch.ones(3), torch.rand(5)
                ),
            )
        ],
        "adaedu.decoding.cascade.cheapest_meeting": [
            ("configs", lambda: M("adaedu.decoding.cascade").cheapest_meeting([], 0.5)),
            ("configs", lambda: M("adaedu.decoding.cascade").cheapest_meeting([_config()], 0.9)),
            ("target", lambda: M("adaedu.decoding.cascade").cheapest_meeting([_config()], 0.9)),
        ],
        "adaedu.decoding.cascade.best_under_budget": [
            ("configs", lambda: M("adaedu.decoding.cascade").best_under_budget([], 0.5)),
            ("configs", lambda: M("adaedu.decoding.cascade").best_under_budget([_config()], 0.5)),
            ("budget", lambda: M("adaedu.decoding.cascade").best_under_budget([_config()], 0.5)),
        ],
        "adaedu.decoding.cascade.pareto_front": [
            ("configs", lambda: M("adaedu.decoding.cascade").pareto_front("configs"))
        ],
        "adaedu.decoding.cascade.shift_into_canvas": [
            (
                "canvas",
                lambda: M("adaedu.decoding.cascade").shift_into_canvas(
                    _x(2, 8, 8), 4, torch.Generator()
                ),
            )
        ],
        "adaedu.decoding.cascade.make_models": [
            ("canvas", lambda: M("adaedu.decoding.cascade").make_models(canvas=0))
        ],
        "adaedu.decoding.cascade.load_frugal_splits": [
            ("canvas", lambda: M("adaedu.decoding.cascade").load_frugal_splits(canvas=4))
        ],
        "adaedu.decoding.cascade.search_thresholds": [
            (
                "grid",
                lambda: M("adaedu.decoding.cascade").search_thresholds(
                    torch.ones(3, 5).bool(), torch.rand(3, 5), torch.ones(3), torch.tensor([])
                ),
            )
        ],
        "adaedu.decoding.cascade.predict_proba": [
            (
                "x",
                lambda: M("adaedu.decoding.cascade").predict_proba(torch.nn.Linear(4, 2), _x(3, 5)),
            )
        ],
        "adaedu.decoding.cascade.fit_scorer": [
            (
                "steps",
                lambda: M("adaedu.decoding.cascade").fit_scorer(
                    _x(5, 3), torch.ones(5).bool(), steps=0
                ),
            )
        ],
        "adaedu.decoding.experiments.arithmetic_problems": [
            ("n", lambda: M("adaedu.decoding.experiments").arithmetic_problems("1+1=2\n", -1))
        ],
        "adaedu.decoding.experiments.line_prompts": [
            (
                "length",
                lambda: M("adaedu.decoding.experiments").line_prompts(
                    "abc\ndef\n", M("adaedu.lm.tokenizers").CharTokenizer("abcdef\n"), 1, 0
                ),
            )
        ],
        "adaedu.decoding.experiments.token_prompts": [
            (
                "length",
                lambda: M("adaedu.decoding.experiments").token_prompts(
                    torch.arange(10), M("adaedu.lm.tokenizers").CharTokenizer("ab"), 1, 0
                ),
            )
        ],
        "adaedu.decoding.experiments.paired_bleu_interval": [
            (
                "references",
                lambda: M("adaedu.decoding.experiments").paired_bleu_interval(["a"], ["a"], []),
            )
        ],
        "adaedu.halting.universal.sinusoid": [
            ("d_model", lambda: M("adaedu.halting.universal").sinusoid(torch.arange(4), 3))
        ],
    }
)

#: key -> (the call on empty input, a check of its result)
EMPTY: dict[str, tuple[Callable[[], object], Callable[[object], bool]]] = {
    "adaedu.grading.totals": (lambda: M("adaedu.grading").totals([]), lambda t: t == {}),
    "adaedu.grading.write_tables": (
        lambda: M("adaedu.grading").write_tables([], Path(M("tempfile").mkdtemp())),
        lambda paths: (
            paths[0].read_text().count("\n") == 1 and "| learner |" in paths[1].read_text()
        ),
    ),
    "adaedu.site.toc_markdown": (
        lambda: M("adaedu.site").toc_markdown([]),
        lambda text: text.count("{toctree}") == 1 and "RESULTS" in text,
    ),
    "adaedu.moe.layer.MixtralMoE": (
        lambda: _mixtral()(torch.randn(0, 5, 8))[0],
        lambda y: tuple(y.shape) == (0, 5, 8),
    ),
    "adaedu.moe.stats.moe_stats": (
        lambda: M("adaedu.moe.stats").moe_stats(_r().SoftMoERouter(4, 3)(torch.randn(0, 5, 4))),
        lambda s: s.tokens_per_expert == [0, 0, 0] and s.experts_per_token_hist == [0] * 4,
    ),
}

EXEMPT: dict[str, str] = {
    "adaedu.profiles.current_profile": "takes no argument",
    "adaedu.claims.machine_description": "takes no argument",
    "adaedu.claims.results_dir": "takes no argument",
    "adaedu.data.char_tokenizer": "takes no argument",
    "adaedu.plotting.use_style": "takes no argument (display helper)",
    "adaedu.precursors.local_experts.vowel_systems": "takes no argument",
    "adaedu.decoding.speculative.Cache": "a typing Protocol, not called",
    "adaedu.decoding.speculative.Decoder": "a typing Protocol, not called",
    "adaedu.decoding.beam.Scorer": "a typing Protocol, not called",
    "adaedu.data.Tokenizer": "a typing Protocol, not called",
    "adaedu.moe.routers.Router": "abstract base class; its subclasses have entries",
    "adaedu.course.main": "the command-line entry point (argparse reports bad arguments)",
    "adaedu.show.show": "display helper: shows any object (source_of has the entries)",
    "adaedu.plotting.paper_line": "display helper (matplotlib reports bad axes)",
    "adaedu.plotting.explorer": "display helper (ipywidgets reports bad controls)",
    "adaedu.moe.stats.plot_tokens_per_expert": "display helper",
    "adaedu.moe.stats.plot_experts_per_token": "display helper",
    "adaedu.halting.multi_exit.ExitPolicy": "abstract base class; its subclasses have entries",
}


# lazy module handles, so that collection stays cheap
def _r():
    return importlib.import_module("adaedu.moe.routers")


def _l():
    return importlib.import_module("adaedu.moe.losses")


def _n():
    return importlib.import_module("adaedu.moe.noisy_topk")


def _e():
    return importlib.import_module("adaedu.moe.experts")


def _d():
    return importlib.import_module("adaedu.moe.dispatch")


def _ly():
    return importlib.import_module("adaedu.moe.layer")


def _p():
    return importlib.import_module("adaedu.halting.ponder")


def _a():
    return importlib.import_module("adaedu.halting.act")


def _s():
    return importlib.import_module("adaedu.decoding.sampling")


def _sp():
    return importlib.import_module("adaedu.decoding.speculative")


def _ng():
    return importlib.import_module("adaedu.decoding.ngram")


def _claims():
    return importlib.import_module("adaedu.claims")


def _nan_tokens():
    x = _x(1, 6, 4)
    x[0, 2] = NAN
    return x


def _train(steps, batches=None, log_every=1):
    from adaedu.train import train

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = (lambda step: torch.ones(3, 2)) if batches is None else batches
    return train(
        model,
        lambda m, b: m(torch.ones(3, 2)).pow(2).mean(),
        batches,
        steps=steps,
        optimizer=opt,
        log_every=log_every,
        progress=False,
    )


def _forward_flops():
    from adaedu.compute import forward_flops

    return forward_flops(torch.nn.Linear(2, 1))


#: whole modules exempt, with the reason
EXEMPT_MODULES: dict[str, str] = {
    "adaedu.course": "course build tooling behind the `adaedu` command (run, student, results): "
    "it runs on the repository's own notebooks and records, learners never call it",
}


def _exempt(key: str) -> bool:
    return key in EXEMPT or any(key.startswith(m + ".") for m in EXEMPT_MODULES)


def _backlog_names() -> set[str]:
    covered = set(CASES) | set(EMPTY)
    return {
        k for k, o in PUBLIC.items() if not _is_record(o) and k not in covered and not _exempt(k)
    }


#: impossible calls that do not yet give a clear error (issue 10, left: files of other owners).
#: strict xfail: when one is fixed its test passes, fails as XPASS, and the entry must go.
KNOWN_GAPS: dict[str, str] = {}

#: public callables with no impossible-call entry yet (issue 10, left): mostly notebook
#: experiment drivers that need trained models or data; a NEW public callable must not be added.
BACKLOG_LIST: frozenset[str] = frozenset(
    {
        "adaedu.decoding.cascade.fit_classifier",
        "adaedu.decoding.cascade.gap_by_base_image",
        "adaedu.decoding.cascade.on_split",
        "adaedu.decoding.cascade.run_frugal",
        "adaedu.decoding.cascade.scorer_probability",
        "adaedu.decoding.experiments.arithmetic_accuracy",
        "adaedu.decoding.experiments.beam_sweep",
        "adaedu.decoding.experiments.coherence",
        "adaedu.decoding.experiments.compare_decoders",
        "adaedu.decoding.experiments.generation_report",
        "adaedu.decoding.experiments.trained_lm",
        "adaedu.halting.experiments.error_by_count",
        "adaedu.halting.experiments.evaluate_parity",
        "adaedu.halting.multi_exit.run_seeds",
        "adaedu.halting.multi_exit.sweep_runs",
        "adaedu.halting.multi_exit.train_multi_exit",
        "adaedu.halting.skipnet.evaluate_skipnet",
        "adaedu.halting.skipnet.masked_reference_logits",
        "adaedu.halting.universal.sequence_loss",
        "adaedu.halting.universal.train_to_bar",
        "adaedu.halting.ut_experiments.load_models",
        "adaedu.halting.ut_experiments.make_models",
        "adaedu.halting.ut_experiments.run_seed",
        "adaedu.halting.ut_experiments.run_seeds",
        "adaedu.modular.digits_moe.correct_per_image",
        "adaedu.modular.digits_moe.evaluate_vit",
        "adaedu.modular.digits_moe.make_ffn_factory",
        "adaedu.modular.digits_moe.moe_layers_of",
        "adaedu.modular.digits_moe.run_stream_comparison",
        "adaedu.modular.digits_moe.shifted_test_set",
        "adaedu.modular.digits_moe.train_vit_stream",
        "adaedu.modular.vit.ViTBlock",
        "adaedu.moe.expert_choice_experiments.make_moe_lm",
        "adaedu.moe.expert_choice_experiments.prefix_loss",
        "adaedu.moe.hashing.evaluate_routed",
        "adaedu.moe.hashing.train_routed_lm",
        "adaedu.moe.hashing.validation_loss",
        "adaedu.moe.offload.cache_study",
        "adaedu.moe.offload.prefetch_split",
        "adaedu.moe.offload.sequence_hit_rates",
        "adaedu.moe.offload.shuffle_trace",
        "adaedu.moe.offload.speculative_guesses",
        "adaedu.precursors.local_experts.train_to_criterion",
        "adaedu.precursors.local_experts.tune_and_train",
    }
)


# --- the tests ---------------------------------------------------------------------------------------

ALLOWED = re.compile(r"allowed|must|expected|needs", re.IGNORECASE)
CALLS = [
    (key, i, case[0], case[1], case[2] if len(case) > 2 else (ValueError, TypeError))
    for key, calls in CASES.items()
    for i, case in enumerate(calls)
]


def _marks(key: str, i: int) -> list:
    reason = KNOWN_GAPS.get(f"{key}#{i}")
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.mark.parametrize(
    "key, param, call, errors",
    [pytest.param(k, p, c, e, id=f"{k}#{i}", marks=_marks(k, i)) for k, i, p, c, e in CALLS],
)
def test_an_impossible_call_names_the_parameter(key, param, call, errors):
    assert key in PUBLIC, f"{key} is not a public callable of adaedu (renamed?)"
    with pytest.raises(errors) as info:
        call()
    message = str(info.value)
    assert re.search(rf"\b{re.escape(param)}\b", message), f"{key}: {message!r} misses {param!r}"
    assert ALLOWED.search(message), f"{key}: {message!r} does not say what is allowed"


@pytest.mark.parametrize("key", sorted(EMPTY))
def test_empty_input_gives_the_natural_empty_result(key):
    call, ok = EMPTY[key]
    assert ok(call())


def test_every_public_callable_has_an_entry():
    assert len(PUBLIC) > 300
    stale = (set(CASES) | set(EMPTY) | set(EXEMPT) | BACKLOG_LIST) - set(PUBLIC)
    assert not stale, f"entries for callables that are no longer public: {sorted(stale)}"
    missing = _backlog_names() - BACKLOG_LIST
    assert not missing, (
        "public callables with no impossible-call entry (add them to CASES, or to EXEMPT with a "
        f"reason): {sorted(missing)}"
    )
    assert not (BACKLOG_LIST & set(CASES)), "remove covered callables from BACKLOG_LIST"


def test_coverage_counts(capsys):
    records = sum(_is_record(o) for o in PUBLIC.values())
    covered = len(set(CASES) | set(EMPTY))
    print(
        f"public callables: {len(PUBLIC)} ({records} result records); with impossible calls: "
        f"{covered}; exempt: {len(EXEMPT)}; backlog: {len(BACKLOG_LIST)}; calls: {len(CALLS)}"
    )
    assert covered >= 80


# --- the specific fixes of the issue, with their behaviour -----------------------------------------


@pytest.mark.parametrize(
    "router", ["noisy_topk", "topk", "switch", "expert_choice", "soft", "hash"]
)
@pytest.mark.parametrize("shape", [(0, 5, 8), (2, 0, 8), (0, 8)])
def test_moe_layers_on_empty_input_return_empty_output(router, shape):
    from adaedu.moe.layer import make_moe

    kwargs = {"vocab_size": 10} if router == "hash" else {}
    if router in ("topk", "switch"):
        kwargs["capacity_factor"] = 1.0  # the capacity path complained about tokens_per_group=0
    layer = make_moe(router, 8, 16, 4, group="sequence", **kwargs)
    y, aux = layer(torch.randn(*shape), torch.zeros(shape[:-1], dtype=torch.long))
    assert tuple(y.shape) == shape
    assert all(math.isfinite(float(v)) for v in aux.losses.values())  # empty: losses are 0
    assert float(aux.loss) == 0.0


def test_mixtral_moe_on_empty_input_matches_hf_shape():
    layer = _mixtral()
    for shape in [(0, 5, 8), (2, 0, 8)]:
        assert tuple(layer(torch.randn(*shape))[0].shape) == shape


@pytest.mark.parametrize("router", ["switch", "topk", "expert_choice", "soft"])
def test_a_nan_token_cannot_take_a_slot_from_clean_tokens(router):
    from adaedu.moe.layer import make_moe

    kwargs = {"capacity_factor": 1.0} if router in ("switch", "topk") else {}
    layer = make_moe(router, 4, 8, 3, group="sequence", **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        layer(_nan_tokens())


def test_dropless_routing_keeps_a_nan_token_to_itself():
    layer = _mixtral()
    x = torch.randn(1, 6, 8)
    clean = layer(x)[0]
    x[0, 2] = NAN
    out = layer(x)[0]
    keep = torch.arange(6) != 2
    assert torch.allclose(out[0, keep], clean[0, keep], atol=1e-6) and out[0, 2].isnan().all()


def test_empty_routing_losses_are_zero_and_keep_the_graph():
    from adaedu.moe.losses import router_z_loss, switch_balance_loss

    probs = torch.rand(0, 3, requires_grad=True)
    loss = switch_balance_loss(probs, torch.zeros(0, 1, dtype=torch.long)) + router_z_loss(probs)
    assert loss.item() == 0.0
    loss.backward()
    # and on non-empty input the value is unchanged: loss 1 at perfect balance
    p = torch.full((4, 2), 0.5)
    assert switch_balance_loss(p, torch.tensor([[0], [1], [0], [1]])).item() == pytest.approx(1.0)


def test_train_with_a_short_iterator_names_steps():
    with pytest.raises(ValueError, match=r"steps=5.*after 2 batches|after 2 batches.*steps=5"):
        _train(steps=5, batches=iter([1, 2]))
    assert _train(steps=2, batches=iter([1, 2])).steps == [1, 2]


def test_ponder_and_act_report_the_width_without_the_flag():
    from adaedu.halting.act import ACT
    from adaedu.halting.ponder import PonderNet

    for model in (ACT(3, 8, 1, cap=2), PonderNet(3, 8, 1, n_max=2)):
        with pytest.raises(ValueError, match=r"\(2, 5\).*d_in=3"):
            model(torch.randn(2, 5))
        model(torch.randn(2, 3))  # the right width still runs


def test_halting_probabilities_still_accept_the_boundaries():
    from adaedu.halting.ponder import halting_probabilities

    p = halting_probabilities(torch.tensor([[0.0, 1.0, 0.5]]))
    assert torch.equal(p, torch.tensor([[0.0, 1.0, 0.0]]))


def test_seed_everything_accepts_the_largest_seed_torch_takes():
    adaedu.seed_everything(2**63 - 1)
    adaedu.seed_everything(0)


@pytest.mark.parametrize("shape", [(0, 5, 4), (2, 0, 4)])
def test_moe_stats_of_an_empty_soft_routing_is_empty(shape):
    from adaedu.moe.routers import SoftMoERouter
    from adaedu.moe.stats import moe_stats

    stats = moe_stats(SoftMoERouter(4, 3)(torch.randn(*shape)))
    assert stats.experts_per_token_hist == [0] * 4  # no token reached any expert
    assert math.isnan(stats.experts_per_token) and math.isnan(stats.router_entropy)  # mean of none
    routing = SoftMoERouter(4, 3)(torch.randn(2, 5, 4))  # and on tokens: the entropy of (N, E S)
    expected = -(routing.combine * routing.combine.log()).sum((-2, -1)).mean().detach()
    assert moe_stats(routing).router_entropy == pytest.approx(float(expected), rel=1e-5)


def test_lm_checks_accept_the_boundaries():
    from adaedu.lm.attention import causal_mask
    from adaedu.lm.tokenizers import BPETokenizer, CharTokenizer

    model = _lm()
    V = model.config.vocab_size
    assert model(torch.tensor([[0, V - 1]])).logits.shape == (1, 2, V)
    assert model(torch.zeros(2, 0, dtype=torch.long)).logits.shape == (2, 0, V)  # empty: empty
    assert causal_mask(3, 3).equal(torch.ones(3, 3, dtype=torch.bool).tril())
    assert causal_mask(0, 4).shape == (0, 4)
    bpe = BPETokenizer(CharTokenizer("ab"), [(1, 2), (3, 3)])  # a merge may use an earlier one
    assert bpe.encode("abab") == [4] and CharTokenizer("aab").itos == CharTokenizer("ab").itos
