"""Exercises of notebook 5.4, beam search (Sutskever et al., 2014) and BLEU."""

from __future__ import annotations

import torch

from adaedu.decoding.beam import top_extensions
from adaedu.decoding.spelling import clipped_matches
from adaedu.exercises import Exercise


def beam_step(totals: torch.Tensor, logp: torch.Tensor, width: int):
    """The ``width`` most likely extensions of all hypotheses: (parents, tokens, new_totals)."""
    return top_extensions(totals, logp, width)


def _step_inputs(gen: torch.Generator) -> tuple:
    beams, vocab = (
        int(torch.randint(2, 5, (1,), generator=gen)),
        int(torch.randint(4, 9, (1,), generator=gen)),
    )
    totals = -torch.rand(beams, generator=gen, dtype=torch.float64) * 6  # very different totals
    logp = torch.randn(beams, vocab, generator=gen, dtype=torch.float64).log_softmax(-1)
    return totals, logp, int(torch.randint(2, beams + 2, (1,), generator=gen))


def _step_diagnose(args: tuple, expected, got) -> str | None:
    if not isinstance(got, tuple | list) or len(got) != 3:
        return "return three tensors: (parents, tokens, new_totals)"
    totals, logp, width = args
    p, t, v = got
    if not isinstance(v, torch.Tensor) or v.shape != expected[2].shape:
        return None
    if torch.allclose(v.double(), logp.flatten().topk(width).values):
        return "you ranked by the next token's log-probability alone: add each hypothesis' total"
    if v.numel() == expected[2].numel() and torch.allclose(
        v.double().sort(descending=True).values, expected[2]
    ):
        if not torch.allclose(v.double(), expected[2]):
            return "right extensions, wrong order: return them best first"
    return None


q1 = Exercise(
    title="Exercise 1 (one beam step)",
    reference=beam_step,
    make_inputs=_step_inputs,
    hints=[
        "candidate scores: totals[:, None] + logp, shape (B, V)",
        "flatten them and take .topk(width): the hypotheses compete with each other",
        "flat index i is hypothesis i // V and token i % V",
    ],
    diagnose=_step_diagnose,
)


def modified_precision(hypothesis: list[str], reference: list[str], n: int) -> float:
    """Papineni et al. (2002), sec. 2.1: clipped n-gram matches / n-grams of the hypothesis
    (0.0 if the hypothesis has no n-gram)."""
    m, t = clipped_matches(hypothesis, reference, n)
    return m / t if t else 0.0


WORDS = "one two three hundred thousand and twelve".split()


def _prec_inputs(gen: torch.Generator) -> tuple:
    def sentence(k, choices):
        return [WORDS[i] for i in torch.randint(0, choices, (k,), generator=gen).tolist()]

    hyp = sentence(int(torch.randint(5, 9, (1,), generator=gen)), 2)  # many repeated words
    ref = sentence(int(torch.randint(3, 7, (1,), generator=gen)), 4)
    return hyp, ref, int(torch.randint(1, 3, (1,), generator=gen))


def _prec_diagnose(args: tuple, expected, got) -> str | None:
    hyp, ref, n = args
    grams = [tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1)]
    ref_grams = {tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)}
    unclipped = sum(g in ref_grams for g in grams) / len(grams) if grams else 0.0
    try:
        value = float(got)
    except (TypeError, ValueError):
        return None
    if abs(value - unclipped) < 1e-9 and abs(value - expected) > 1e-9:
        return (
            "an n-gram of the hypothesis may count only as often as it occurs in the reference "
            "(clip the counts): 'the the the' against 'the cat' has precision 1/3, not 1"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (BLEU's modified precision)",
    reference=modified_precision,
    make_inputs=_prec_inputs,
    hints=[
        "count the n-grams of both sentences with collections.Counter of tuples",
        "matches = sum over the hypothesis' n-grams g of min(count_hyp[g], count_ref[g])",
        "divide by the number of n-grams of the hypothesis",
    ],
    diagnose=_prec_diagnose,
)
