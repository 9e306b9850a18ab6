"""Exercises of notebook 2.1 (Shazeer et al., 2017): top-k gates, the importance loss, P(x, i)."""

from __future__ import annotations

import torch
from torch import Tensor

from adaedu.exercises import Exercise
from adaedu.moe.noisy_topk import importance_loss, load_probability, top_k_gates


def _close(a: object, b: Tensor, atol: float = 1e-4) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.float(), b, atol=atol)


# --- q1: KeepTopK + softmax (eq. 4-5) ---------------------------------------------------------------


def _gates_inputs(gen: torch.Generator) -> tuple:
    n, e = (
        torch.randint(2, 7, (1,), generator=gen).item(),
        torch.randint(4, 9, (1,), generator=gen).item(),
    )
    k = torch.randint(2, e, (1,), generator=gen).item()  # 2 <= k < e: the mistakes show
    return 3 * torch.randn(n, e, generator=gen), k


def _gates_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    logits, k = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    got = got.float()
    if _close(got, torch.softmax(logits, dim=-1)):
        return (
            "your gates are a softmax over all experts, so every gate is nonzero: keep the k "
            "largest logits first (set the others to -inf), then take the softmax"
        )
    dense = torch.softmax(logits, dim=-1)
    if _close(got, torch.where(expected > 0, dense, torch.zeros_like(dense))):
        return (
            "you took the softmax over all experts and then zeroed the others, so your kept "
            "gates sum to less than 1: the softmax must run over the k kept logits only"
        )
    if _close(got, top_k_gates(-logits, k)):
        return "you kept the k smallest logits: KeepTopK keeps the k largest"
    nonzero = (got != 0).sum(dim=-1)
    if (nonzero != k).any():
        return f"each row must have exactly k={k} nonzero gates; yours has {nonzero.tolist()}"
    return None


q1 = Exercise(
    title="Exercise 1 (top-k gates, eq. 4-5)",
    reference=top_k_gates,
    make_inputs=_gates_inputs,
    hints=[
        "eq. 4: KeepTopK(v, k)_i = v_i for the k largest entries of v, and -inf for the others",
        "`logits.topk(k, dim=-1)` gives the values and indices; `torch.full_like(logits, "
        "float('-inf')).scatter(-1, indices, values)` builds KeepTopK",
        "eq. 5: softmax over the last dimension of KeepTopK(logits, k); exp(-inf) = 0 does the rest",
    ],
    diagnose=_gates_diagnose,
)


# --- q2: the importance loss (eq. 6-7) --------------------------------------------------------------


def _importance_inputs(gen: torch.Generator) -> tuple:
    n, e = (
        torch.randint(6, 20, (1,), generator=gen).item(),
        torch.randint(3, 9, (1,), generator=gen).item(),
    )
    k = torch.randint(1, e, (1,), generator=gen).item()
    skew = torch.linspace(0, 2, e)  # some experts are favoured, so the CV is clearly > 0
    gates = top_k_gates(torch.randn(n, e, generator=gen) + skew, k)
    weight = round(0.05 + torch.rand(1, generator=gen).item(), 3)
    return gates, weight


def _importance_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    gates, w = args
    try:
        g = float(got)
    except (TypeError, ValueError):
        return None
    imp = gates.sum(dim=0)
    e = imp.numel()

    def near(value: float) -> bool:
        return abs(g - value) <= 1e-5 + 1e-4 * abs(value) and abs(g - float(expected)) > 1e-6

    sample_cv2 = (imp.std(unbiased=True) / imp.mean()) ** 2
    if near(w * float(sample_cv2)):
        return (
            f"you used the sample variance (divide by E-1 = {e - 1}): the E experts are the "
            f"whole population, so divide by E = {e} (`unbiased=False`, or mean of squares)"
        )
    if near(float(expected) / w):
        return "you forgot to multiply by the loss weight w_importance"
    if near(w * float(expected / w) ** 0.5):
        return "you returned w * CV; the loss is w * CV squared"
    if near(0.0):
        return (
            "your loss is 0: did you sum the gates over the experts (dim=1)? Every row sums "
            "to 1; Importance(X) sums over the batch (dim=0), one value per expert"
        )
    return None


q2 = Exercise(
    title="Exercise 2 (importance loss, eq. 6-7)",
    reference=importance_loss,
    make_inputs=_importance_inputs,
    hints=[
        "eq. 6: Importance(X) = gates.sum(dim=0), one number per expert",
        "CV = std / mean of those E numbers, with the population std (divide by E)",
        "eq. 7: multiply CV squared by the weight",
    ],
    diagnose=_importance_diagnose,
)


# --- q3: the smooth load estimator P(x, i) (eq. 8-9) ------------------------------------------------


def _load_inputs(gen: torch.Generator) -> tuple:
    n, e = (
        torch.randint(3, 8, (1,), generator=gen).item(),
        torch.randint(4, 9, (1,), generator=gen).item(),
    )
    k = torch.randint(1, e, (1,), generator=gen).item()
    clean = torch.randn(n, e, generator=gen)
    noise_std = torch.nn.functional.softplus(torch.randn(n, e, generator=gen))
    noisy = clean + torch.randn(n, e, generator=gen) * noise_std
    return clean, noisy, noise_std, k


def _load_diagnose(args: tuple, expected: Tensor, got: object) -> str | None:
    clean, noisy, std, k = args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    got = got.float()
    normal = torch.distributions.Normal(0.0, 1.0)
    kth = noisy.topk(k, dim=-1).values[:, -1:]
    if _close(got, normal.cdf((clean - kth) / std)):
        return (
            "you compared every expert with the k-th largest H(x) including itself: for an "
            "expert inside the top k the threshold is the k-th largest of the *other* "
            "experts, i.e. the (k+1)-th largest of H(x)"
        )
    top = noisy.topk(k + 1, dim=-1).values
    threshold = torch.where(noisy >= top[:, k - 1 : k], top[:, k : k + 1], top[:, k - 1 : k])
    if _close(got, normal.cdf((noisy - threshold) / std)):
        return (
            "you used the noisy logit H(x)_i in the numerator: P(x, i) integrates over a "
            "fresh draw of expert i's noise, so the numerator is the clean logit (x W_g)_i"
        )
    if _close(got, normal.cdf(clean - threshold)):
        return "you forgot to divide by the noise std Softplus((x W_noise)_i)"
    if _close(got, torch.sigmoid((clean - threshold) / std)):
        return "you used a sigmoid: the noise is Gaussian, so use the normal CDF Phi"
    return None


q3 = Exercise(
    title="Exercise 3 (the smooth load estimator P(x, i), eq. 8-9)",
    reference=load_probability,
    make_inputs=_load_inputs,
    hints=[
        "expert i is chosen iff clean_i + z * std_i > kth_excluding(H(x), k, i), z ~ N(0, 1); "
        "solve for z and use the normal CDF Phi(z) = 0.5 * (1 + erf(z / sqrt(2)))",
        "kth_excluding(H, k, i): take the k+1 largest values of each row with `topk(k + 1)`; an "
        "expert inside the top k compares with the (k+1)-th, the others with the k-th",
        "the numerator uses the clean logit (x W_g)_i, not H(x)_i",
    ],
    diagnose=_load_diagnose,
)
