"""Part 2 of the course: sparse mixtures of experts.

- :mod:`adaedu.moe.noisy_topk`  noisy top-k gating, importance and load losses, the sparse MoE
  layer (Shazeer et al., 2017; notebook 2.1);
- :mod:`adaedu.moe.tasks`       synthetic tasks on which experts can specialise;

and the MoE library that the later notebooks of the chapter share (import from the modules):

- :mod:`adaedu.moe.routers`   the ``Routing`` structure and the routers: Shazeer's noisy top-k,
  top-k (Mixtral), Switch top-1 with capacity, hash, expert choice, soft MoE;
- :mod:`adaedu.moe.experts`   MLP and SwiGLU experts, FLOP-matched dense widths;
- :mod:`adaedu.moe.dispatch`  sorted dispatch (one matrix product per expert), reference loops;
- :mod:`adaedu.moe.losses`    Switch load balancing, router z-loss, importance and load;
- :mod:`adaedu.moe.stats`     routing statistics (load, drops, entropy, experts per token);
- :mod:`adaedu.moe.layer`     ``MoEFeedForward`` for the tiny LM's FFN slot, ``MixtralMoE``;

and the experiment helpers of each notebook: :mod:`adaedu.moe.switch_lm` (2.2),
:mod:`adaedu.moe.hashing` (2.3), :mod:`adaedu.moe.expert_choice_experiments` (2.5),
:mod:`adaedu.moe.offload` (2.13), :mod:`adaedu.moe.mixtral` (2.15).
"""

from adaedu.moe.noisy_topk import (
    NoisyTopKRouter,
    RouterOutput,
    RoutingStats,
    SparseMoE,
    cv,
    expert_counts,
    expert_mlp,
    flop_matched_dense,
    importance,
    importance_loss,
    keep_top_k,
    load,
    load_loss,
    load_probability,
    routing_stats,
    top_k_gates,
)
from adaedu.moe.tasks import ClusterTask, evaluate, fit, make_cluster_task

__all__ = [
    "ClusterTask",
    "NoisyTopKRouter",
    "RouterOutput",
    "RoutingStats",
    "SparseMoE",
    "cv",
    "evaluate",
    "expert_counts",
    "expert_mlp",
    "fit",
    "flop_matched_dense",
    "importance",
    "importance_loss",
    "keep_top_k",
    "load",
    "load_loss",
    "load_probability",
    "make_cluster_task",
    "routing_stats",
    "top_k_gates",
]
