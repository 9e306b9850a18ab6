"""Wall-clock speed-up of speculative sampling over plain sampling with the same target.

For a target TinyLM and 2-3 drafts of different sizes, and gamma in {1, 2, 4, 8}: the median (over
repeats) time to continue a fixed set of prompts with plain autoregressive sampling from the target
(``adaedu.decoding.sampling.sample``) and with speculative sampling
(``adaedu.decoding.speculative.speculative_sample``), next to the factor Leviathan et al. (2023,
Theorem 3.8) predict from the acceptance rate and the cost ratio c measured in the same run.

The models are trained here on the shipped text (a few minutes on 2 cores) and cached in /tmp
(``--cache``); ``--retrain`` ignores the cache. Threads are fixed (``--threads``) and printed.

    .venv/bin/python benchmarks/speculative.py            # = make benchmark-speculative
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from adaedu.compute import count_parameters
from adaedu.data import char_tokenizer, text_corpus
from adaedu.decoding.sampling import sample
from adaedu.decoding.speculative import (
    BigramLM,
    SpeculativeStats,
    cost_ratio,
    speculative_sample,
    walltime_factor,
)
from adaedu.device import seed_everything
from adaedu.lm import TinyLM, TinyLMConfig, lm_loss
from adaedu.train import train

BLOCK = 512
TARGET = (8, 128)  # (layers, d_model)
DRAFTS = {"1 layer, d=32": (1, 32), "2 layers, d=64": (2, 64)}


def make_lm(vocab: int, layers: int, d: int) -> TinyLM:
    heads = 4 if d >= 64 else 2
    return TinyLM(TinyLMConfig(vocab, d_model=d, n_layers=layers, n_heads=heads, block_size=BLOCK))


def bigram_draft(corpus, vocab: int) -> BigramLM:
    """The cheapest draft: character bigram counts of the training text (add-0.5 smoothing)."""
    counts = torch.full((vocab, vocab), 0.5)
    for tokens in corpus.tokens.values():
        pairs = tokens[:-1] * vocab + tokens[1:]
        counts += torch.bincount(pairs, minlength=vocab * vocab).reshape(vocab, vocab).float()
    return BigramLM.from_probs(counts / counts.sum(-1, keepdim=True), block_size=BLOCK)


def build_models(steps: int, cache: Path, retrain: bool) -> tuple[TinyLM, dict]:
    tok = char_tokenizer()
    corpus = text_corpus()
    seed_everything(0)
    target = make_lm(tok.vocab_size, *TARGET)
    drafts = {name: make_lm(tok.vocab_size, *size) for name, size in DRAFTS.items()}
    if cache.exists() and not retrain:
        state = torch.load(cache)
        if state["steps"] == steps:
            target.load_state_dict(state["target"])
            for name, model in drafts.items():
                model.load_state_dict(state["drafts"][name])
            print(f"loaded the models from {cache}")
            return target.eval(), {"bigram (counts)": bigram_draft(corpus, tok.vocab_size)} | {
                n: m.eval() for n, m in drafts.items()
            }
    for i, (name, model) in enumerate([("target", target), *drafts.items()]):
        start = time.perf_counter()
        history = train(
            model,
            lm_loss,
            corpus.batches(32, 128, seed=i + 1),
            steps=steps,
            optimizer=torch.optim.AdamW(model.parameters(), lr=3e-3 if model is target else 1e-2),
            log_every=steps,
            progress=False,
        )
        print(
            f"trained {name}: {steps} steps in {time.perf_counter() - start:.0f} s, "
            f"loss {history.last('loss'):.2f}"
        )
    torch.save(
        {
            "steps": steps,
            "target": target.state_dict(),
            "drafts": {n: m.state_dict() for n, m in drafts.items()},
        },
        cache,
    )
    all_drafts = {"bigram (counts)": bigram_draft(corpus, tok.vocab_size)}
    return target.eval(), all_drafts | {n: m.eval() for n, m in drafts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=400, help="training steps of every model")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gammas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/adaedu_speculative_bench.pt"))
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, torch threads {torch.get_num_threads()}"
    )
    target, drafts = build_models(args.steps, args.cache, args.retrain)
    gen = torch.Generator().manual_seed(0)
    val = text_corpus(["verse", "code"], split="validation")
    prompts = [val.batch(1, 32, gen).x for _ in range(args.prompts)]
    context = 32 + args.tokens // 2
    print(
        f"target: {TARGET[0]} layers, d={TARGET[1]}, {count_parameters(target):,} parameters; "
        f"{args.prompts} prompts x {args.tokens} new tokens; median of {args.repeats} repeats"
    )
    costs = {name: cost_ratio(d, target, context, repeats=50) for name, d in drafts.items()}

    print(
        "\n| temperature | draft | c | gamma | alpha | plain (s) | speculative (s) | speed-up "
        "| theory (Thm 3.8) | measured / theory |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for temperature in args.temperatures:
        for name, draft in drafts.items():
            for gamma in args.gammas:
                stats = SpeculativeStats()
                plain, spec = [], []
                for rep in range(args.repeats):  # interleave, so that background load hits both
                    g1 = torch.Generator().manual_seed(rep)
                    g2 = torch.Generator().manual_seed(rep)
                    start = time.perf_counter()
                    for p in prompts:
                        sample(target, p, args.tokens, temperature, generator=g1)
                    plain.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    for p in prompts:
                        speculative_sample(
                            target,
                            draft,
                            p,
                            args.tokens,
                            gamma,
                            temperature,
                            generator=g2,
                            stats=stats,
                        )
                    spec.append(time.perf_counter() - start)
                c = costs[name]
                alpha = stats.alpha
                speedup = statistics.median(plain) / statistics.median(spec)
                theory = walltime_factor(min(alpha, 1.0), gamma, c)
                print(
                    f"| {temperature:g} | {name} | {c:.3f} | {gamma} | {alpha:.3f} | "
                    f"{statistics.median(plain):.2f} | {statistics.median(spec):.2f} | "
                    f"{speedup:.2f}x | {theory:.2f}x | {speedup / theory:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
