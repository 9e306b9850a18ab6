"""Part 1 of the course: the precursors of sparse mixtures of experts.

- :mod:`adaedu.precursors.local_experts`: Jacobs, Jordan, Nowlan & Hinton (1991), adaptive
  mixtures of local experts (notebook 1.1).
"""

from adaedu.precursors.local_experts import (
    MLP,
    MixtureOfExperts,
    System,
    competitive_loss,
    cooperative_loss,
    epochs_to_criterion,
    evaluate,
    experts_in_use,
    experts_per_case,
    gate_partition,
    gate_usage,
    gaussian_mixture_loss,
    hit_rate,
    mixture_output,
    responsibilities,
    select_learning_rate,
    train_snapshots,
    train_to_criterion,
    tune_and_train,
    vowel_split,
    vowel_systems,
)

__all__ = [
    "MLP",
    "MixtureOfExperts",
    "System",
    "competitive_loss",
    "cooperative_loss",
    "epochs_to_criterion",
    "evaluate",
    "experts_in_use",
    "experts_per_case",
    "gate_partition",
    "gate_usage",
    "gaussian_mixture_loss",
    "hit_rate",
    "mixture_output",
    "responsibilities",
    "select_learning_rate",
    "train_snapshots",
    "train_to_criterion",
    "tune_and_train",
    "vowel_split",
    "vowel_systems",
]
