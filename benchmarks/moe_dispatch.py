"""Forward time and peak memory of adaedu's dropless top-2 MoE layer against other dispatches.

    .venv/bin/python benchmarks/moe_dispatch.py [--threads 1] [--repeats 7] [--sizes tiny medium]

All implementations share one set of Mixtral-style weights (SwiGLU experts, top-2, softmax
over the two kept logits) and one input, and run under ``torch.no_grad()`` in float32:

- ``adaedu``            :class:`adaedu.moe.layer.MixtralMoE` (route, sort by expert, one call per expert);
- ``per-expert mask``   the same router, then for each expert a mask over all assignments
  (:func:`adaedu.moe.dispatch.dispatch_per_expert_mask`);
- ``per-token loop``    the same router, then a Python loop over (token, expert) pairs
  (:func:`adaedu.moe.dispatch.dispatch_per_token`);
- ``HF eager``          transformers' ``MixtralSparseMoeBlock`` as built from a config (its
  default experts implementation: a loop over the experts that received tokens);
- ``HF grouped_mm``     the same block with ``experts_implementation="grouped_mm"``.

Time: the median of the timed forward passes (101 tiny, 11 medium, 3 for the per-token loop)
after one warm-up pass each, with the interquartile range; the implementations take turns
(rotating who goes first), so that background load hits them alike.
Peak memory: from ``torch.profiler`` with ``profile_memory=True``: the largest running sum of
the CPU allocations minus frees recorded during one forward pass (tensors allocated by that
pass, not the weights or the input). tracemalloc would miss them: it sees only Python's own
allocator, not torch's CPU allocator. HF rows need ``pip install -e ".[parity]"``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from adaedu.moe.dispatch import dispatch_per_expert_mask, dispatch_per_token
from adaedu.moe.layer import MixtralMoE

SIZES = {  # name: (d_model, d_hidden, n_experts, k, batch, seq)
    "tiny": (64, 128, 8, 2, 1, 256),
    "medium": (512, 1024, 8, 2, 4, 1024),
}
REPEATS = {"tiny": 101, "medium": 11}  # timed passes per implementation (per-token loop: 3)
SLOW = "per-token loop"


def build(
    d: int, h: int, E: int, k: int, seed: int = 0
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The implementations to compare, all with the same weights."""
    torch.manual_seed(seed)
    ours = MixtralMoE(d, h, E, k).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, p.shape[-1] ** -0.5)

    def routed(dispatch_fn):
        def run(x):
            tokens = x.reshape(1, -1, d)
            routing = ours.router(tokens)
            return dispatch_fn(tokens[0], routing, ours.experts).reshape(x.shape)

        return run

    impls = {
        "adaedu": lambda x: ours(x)[0],
        "per-expert mask": routed(dispatch_per_expert_mask),
        "per-token loop": routed(dispatch_per_token),
    }
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    except ImportError:
        print("transformers is not installed: no HF rows (pip install -e '.[parity]')")
        return impls
    for name, implementation in (("HF eager", None), ("HF grouped_mm", "grouped_mm")):
        config = MixtralConfig(
            hidden_size=d,
            intermediate_size=h,
            num_local_experts=E,
            num_experts_per_tok=k,
            router_jitter_noise=0.0,
        )
        config._experts_implementation = implementation
        hf = MixtralSparseMoeBlock(config).eval()
        with torch.no_grad():
            hf.gate.weight.copy_(ours.router.linear.weight)
            for e, expert in enumerate(ours.experts):
                hf.experts.gate_up_proj[e].copy_(expert.gate_up.weight)
                hf.experts.down_proj[e].copy_(expert.down.weight)
        impls[name] = hf
    return impls


def elapsed(fn: Callable, x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def peak_memory(fn: Callable, x: torch.Tensor) -> int:
    """Peak bytes allocated (and not yet freed) during one call, from torch.profiler events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running, peak = 0, 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def run_size(name: str, repeats: int) -> list[tuple[str, float, float, float, float]]:
    """Rows (implementation, median s, interquartile range s, peak bytes, max abs diff)."""
    d, h, E, k, batch, seq = SIZES[name]
    impls = build(d, h, E, k)
    x = torch.randn(batch, seq, d, generator=torch.Generator().manual_seed(1))
    names = list(impls)
    times: dict[str, list[float]] = {impl: [] for impl in names}
    with torch.no_grad():
        reference = impls["adaedu"](x)
        diffs = {
            impl: float((fn(x) - reference).abs().max()) for impl, fn in impls.items()
        }  # warm-up
        for r in range(repeats):
            for impl in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                if impl != SLOW or len(times[SLOW]) < 3:
                    times[impl].append(elapsed(impls[impl], x))
        peaks = {impl: peak_memory(fn, x) for impl, fn in impls.items()}
    print(
        f"\n{name}: d={d}, d_hidden={h}, E={E}, k={k}, tokens={batch * seq} ({batch} x {seq}), "
        f"{repeats} timed passes (per-token loop: {len(times[SLOW])})"
    )
    rows = []
    for impl in names:
        q1, median, q3 = (
            statistics.quantiles(times[impl], n=4) if len(times[impl]) > 1 else [times[impl][0]] * 3
        )
        rows.append((impl, median, q3 - q1, peaks[impl], diffs[impl]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"timed passes (default {REPEATS})"
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch.get_num_threads() = {torch.get_num_threads()}, "
        f"float32, no_grad, load average {os.getloadavg()[0]:.1f}"
    )
    for name in args.sizes:
        rows = run_size(name, args.repeats or REPEATS[name])
        base_t, base_m = rows[0][1], rows[0][3]
        print(
            "| implementation | forward, median (ms) | IQR (ms) | time / adaedu "
            "| peak extra memory (MiB) | memory / adaedu | max abs diff |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for impl, t, iqr, m, diff in rows:
            print(
                f"| {impl} | {1e3 * t:.2f} | {1e3 * iqr:.2f} | {t / base_t:.2f} | "
                f"{m / 2**20:.2f} | {m / base_m:.2f} | {diff:.1e} |"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
