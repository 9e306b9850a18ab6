"""Run profiles: how big each notebook's experiment is.

``ADAEDU_PROFILE`` selects one of

- ``smoke``: seconds per notebook; every cell runs, results are meaningless (the tests use it);
- ``cpu``: what a learner without a GPU gets; reproduces the claim in about 5 minutes on 2 cores;
- ``gpu``: larger runs for one GPU.

Unset, it is ``gpu`` when CUDA is available and ``cpu`` otherwise. Each notebook declares its
sizes for all three profiles in one visible cell with :func:`sizes`.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import torch

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "ADAEDU_PROFILE"


def current_profile() -> str:
    """The active profile: ``$ADAEDU_PROFILE``, else ``gpu`` with CUDA, else ``cpu``."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not a profile; allowed values: {', '.join(PROFILES)}"
        )
    return value


def sizes(
    *,
    smoke: dict[str, Any],
    cpu: dict[str, Any],
    gpu: dict[str, Any],
    profile: str | None = None,
    show: bool = True,
) -> SimpleNamespace:
    """Pick the experiment sizes of the active profile.

    All three dictionaries must have the same keys, so that no profile silently lacks a setting.
    Returns a namespace (``S.epochs``...) that also carries ``S.profile``; with ``show`` it prints
    a one-line summary, so that a reader sees which sizes produced the results below.
    """
    profile = current_profile() if profile is None else profile
    if profile not in PROFILES:
        raise ValueError(
            f"profile={profile!r} is not a profile; allowed values: {', '.join(PROFILES)}"
        )
    table = {"smoke": smoke, "cpu": cpu, "gpu": gpu}
    keys = set(cpu)
    for name, values in table.items():
        if set(values) != keys:
            diff = sorted(set(values) ^ keys)
            raise ValueError(
                f"sizes(): profile {name!r} does not set the same keys as 'cpu' (differs in: {diff})"
            )
    chosen = dict(table[profile])
    if show:
        settings = ", ".join(f"{k}={v}" for k, v in chosen.items())
        print(f"profile: {profile} | {settings}")
    return SimpleNamespace(profile=profile, **chosen)
