"""Wall-clock speed-up of speculative sampling over plain sampling with the same target.

For a target TinyLM and four drafts (character bigram and trigram counts, TinyLMs of 1 and 2
layers), gamma in {1, 2, 4, 8} and temperatures 1 and 0: the median (over repeats) time to continue
a fixed set of prompts with plain autoregressive sampling from the target
(``adaedu.decoding.sampling.sample``) and with speculative sampling
(``adaedu.decoding.speculative.speculative_sample``), next to two predictions:

- Leviathan et al. (2023, Theorem 3.8), ``(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))``,
  with the acceptance rate alpha and the cost ratio c (one-token forward call of the draft / of
  the target) measured in the same run; it assumes that the target scores gamma + 1 tokens in the
  time of one;
- the same argument with the costs this machine actually has, ``E[tokens per round] /
  (gamma c_step + v)`` (``walltime_factor`` with ``v``): ``v`` is the time of the target's
  verification call over gamma + 1 tokens divided by that of a one-token call, ``c_step`` the
  time of one plain decoding step of the draft (forward call, distribution, token) divided by
  one of the target.

The models are trained here on the shipped text (about 10 minutes on 2 cores, all cores used)
and cached in /tmp (``--cache``); ``--retrain`` ignores the cache. The timings run on a fixed
number of threads (``--threads``, printed).

    .venv/bin/python benchmarks/speculative.py            # = make benchmark-speculative
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adaedu.compute import count_parameters
from adaedu.data import char_tokenizer, text_corpus
from adaedu.decoding.ngram import NGramLM
from adaedu.decoding.sampling import sample
from adaedu.decoding.speculative import (
    SpeculativeStats,
    cost_ratio,
    speculative_sample,
    verification_cost,
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


def count_drafts(corpus, vocab: int) -> dict[str, NGramLM]:
    """The cheapest drafts: character bigram and trigram counts of the training text."""
    seqs = list(corpus.tokens.values())
    return {
        f"{name} (counts)": NGramLM.from_tokens(seqs, vocab, order, block_size=BLOCK)
        for name, order in (("bigram", 2), ("trigram", 3))
    }


def step_cost_ratio(draft, target, prompts, tokens: int, repeats: int = 3) -> float:
    """``c_step``: the time of plain sampling with the draft over that with the target (same
    prompts and lengths, temperature 1): one decoding step of each, sampling included."""
    times = {}
    for name, model in (("draft", draft), ("target", target)):
        runs = []
        for rep in range(repeats):
            gen = torch.Generator().manual_seed(rep)
            start = time.perf_counter()
            for p in prompts:
                sample(model, p, tokens, 1.0, generator=gen)
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs)
    return times["draft"] / times["target"]


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
            return target.eval(), count_drafts(corpus, tok.vocab_size) | {
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
    all_drafts = count_drafts(corpus, tok.vocab_size)
    return target.eval(), all_drafts | {n: m.eval() for n, m in drafts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000, help="training steps of every model")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gammas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/adaedu_speculative_bench.pt"))
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()

    target, drafts = build_models(args.steps, args.cache, args.retrain)  # all cores
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, torch threads {torch.get_num_threads()}"
    )
    val_batches = [
        text_corpus(split="validation").batch(16, 128, torch.Generator().manual_seed(i))
        for i in range(8)
    ]
    for name, model in {"target": target, **drafts}.items():
        with torch.no_grad():  # mean next-token cross-entropy on the validation split
            loss = statistics.mean(
                float(F.cross_entropy(model(b.x).logits.flatten(0, 1), b.y.flatten()))
                for b in val_batches
            )
        print(f"validation loss of {name}: {loss:.3f} nats/char")
    gen = torch.Generator().manual_seed(0)
    val = text_corpus(["verse", "code"], split="validation")
    prompts = [val.batch(1, 32, gen).x for _ in range(args.prompts)]
    context = 32 + args.tokens // 2
    print(
        f"target: {TARGET[0]} layers, d={TARGET[1]}, {count_parameters(target):,} parameters; "
        f"{args.prompts} prompts x {args.tokens} new tokens; median of {args.repeats} repeats"
    )
    costs = {name: cost_ratio(d, target, context, repeats=200) for name, d in drafts.items()}
    step_costs = {n: step_cost_ratio(d, target, prompts, args.tokens) for n, d in drafts.items()}
    verify_cost = {g: verification_cost(target, g, context, repeats=200) for g in args.gammas}
    print("c (one-token forward call, draft / target):", fmt(costs))
    print("c_step (one plain decoding step, draft / target):", fmt(step_costs))
    print("v (target call over gamma + 1 tokens / one token):", fmt(verify_cost))

    print(
        "\n| temperature | draft | c | gamma | alpha | tokens / round | plain (s) | speculative (s) "
        "| speed-up | Thm 3.8 | measured / Thm 3.8 | measured costs | measured / that |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
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
                c, alpha = costs[name], stats.alpha
                speedup = statistics.median(plain) / statistics.median(spec)
                theory = walltime_factor(min(alpha, 1.0), gamma, c)
                per_round = stats.tokens_per_round(gamma)
                # the theorem's argument with this machine's costs: v + gamma c_step per round
                costed = walltime_factor(
                    min(alpha, 1.0), gamma, step_costs[name], verify_cost[gamma]
                )
                print(
                    f"| {temperature:g} | {name} | {c:.3f} | {gamma} | {alpha:.3f} | "
                    f"{per_round:.2f} | {statistics.median(plain):.2f} | "
                    f"{statistics.median(spec):.2f} | {speedup:.2f}x | {theory:.2f}x | "
                    f"{speedup / theory:.2f} | {costed:.2f}x | {speedup / costed:.2f} |",
                    flush=True,
                )


def fmt(values: dict) -> str:
    return ", ".join(f"{k}: {v:.3f}" for k, v in values.items())


if __name__ == "__main__":
    main()
