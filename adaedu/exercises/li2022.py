"""Exercises of notebook 5.1, contrastive decoding (Li et al., 2022)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adaedu.decoding.contrastive import contrastive_scores, plausible_mask
from adaedu.exercises import Exercise


def cd_choice(expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float):
    """Li et al. (2022), eq. 3-4: the token of each row that maximises log p_EXP - log p_AMA
    over V_head = {x : p_EXP(x) >= alpha max p_EXP}."""
    return contrastive_scores(expert_logits, amateur_logits, alpha).argmax(dim=-1)


def _cd_inputs(gen: torch.Generator) -> tuple:
    rows, vocab = (
        int(torch.randint(2, 6, (1,), generator=gen)),
        int(torch.randint(5, 12, (1,), generator=gen)),
    )
    expert = torch.randn(rows, vocab, generator=gen) * 3
    amateur = expert * 0.5 + torch.randn(rows, vocab, generator=gen) * 2
    # make the unmasked log-ratio peak on a token the expert finds implausible
    expert[:, 0] = expert.min(dim=1).values - 6.0
    amateur[:, 0] = expert[:, 0] - 12.0
    return expert, amateur, float([0.1, 0.2, 0.05][int(torch.randint(3, (1,), generator=gen))])


def _cd_diagnose(args: tuple, expected, got) -> str | None:
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    if torch.equal(got.long(), expected):
        return None
    expert, amateur, alpha = args
    ratio = F.log_softmax(expert, -1) - F.log_softmax(amateur, -1)
    if torch.equal(got, ratio.argmax(-1)):
        return (
            "you maximised the log-ratio over ALL tokens: restrict it to the plausible set "
            "V_head (p_exp >= alpha * max p_exp), or CD picks tokens both models find absurd"
        )
    if torch.equal(got, expert.argmax(-1)):
        return "you returned the expert's greedy choice: subtract the amateur's log-probability"
    wrong_mask = plausible_mask(amateur, alpha)
    if torch.equal(got, ratio.masked_fill(~wrong_mask, -math.inf).argmax(-1)):
        return (
            "the plausibility mask is computed from the EXPERT's probabilities, not the amateur's"
        )
    return None


q1 = Exercise(
    title="Exercise 1 (the contrastive choice)",
    reference=cd_choice,
    make_inputs=_cd_inputs,
    hints=[
        "log-probabilities are F.log_softmax(logits, dim=-1); the score is their difference",
        "V_head: keep tokens with log p_exp >= log(alpha) + max log p_exp; give the others -inf",
        "return score.argmax(dim=-1), a LongTensor with one token per row",
    ],
    diagnose=_cd_diagnose,
)


def obrien_scores(
    expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float, beta: float
):
    """O'Brien & Lewis (2023), Algorithm 2: ``(1 + beta) s_e - beta s_a`` on the raw logits,
    -inf where ``s_e < log(alpha) + max s_e``."""
    return contrastive_scores(expert_logits, amateur_logits, alpha, beta)


def _ob_inputs(gen: torch.Generator) -> tuple:
    rows, vocab = (
        int(torch.randint(2, 5, (1,), generator=gen)),
        int(torch.randint(4, 10, (1,), generator=gen)),
    )
    expert = torch.randn(rows, vocab, generator=gen) * 2 + 1.0  # logits, not log-probabilities
    amateur = torch.randn(rows, vocab, generator=gen) * 2 - 0.5
    beta = float(torch.rand(1, generator=gen)) + 0.25
    return expert, amateur, 0.1, beta


def _ob_diagnose(args: tuple, expected, got) -> str | None:
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    expert, amateur, alpha, beta = args
    if not torch.equal(got.isinf(), expected.isinf()):
        if torch.equal(got.isinf(), (expert.softmax(-1) < alpha)):
            return (
                "the mask is relative: compare with alpha times the MAXIMUM probability, not alpha"
            )
        return "the -inf entries are wrong: mask where s_e < log(alpha) + max s_e, row by row"
    fin = expected.isfinite()
    if torch.allclose(got[fin], (expert - beta * amateur)[fin], atol=1e-4):
        return "the expert's logits are weighted by (1 + beta), not 1"
    if torch.allclose(
        got[fin],
        (F.log_softmax(expert, -1) * (1 + beta) - beta * F.log_softmax(amateur, -1))[fin],
        atol=1e-4,
    ):
        return "Algorithm 2 works on the raw logits; you used log-probabilities (same argmax, other values)"
    return None


q2 = Exercise(
    title="Exercise 2 (O'Brien & Lewis scores)",
    reference=obrien_scores,
    make_inputs=_ob_inputs,
    hints=[
        "cutoff = math.log(alpha) + expert_logits.max(dim=-1, keepdim=True).values",
        "scores = (1 + beta) * expert_logits - beta * amateur_logits",
        "scores.masked_fill(expert_logits < cutoff, float('-inf'))",
    ],
    diagnose=_ob_diagnose,
)
