"""One call to pick a device and one to seed everything; nothing here is CUDA-only."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def get_device(prefer: str = "auto") -> torch.device:
    """Return ``cuda`` if available, else ``mps`` (Apple silicon), else ``cpu``.

    ``prefer`` forces one of them (``"cpu"``, ``"cuda"``, ``"mps"``); asking for an accelerator
    that is not there is an error rather than a silent fall-back to the CPU.
    """
    if prefer not in DEVICES:
        raise ValueError(f"prefer={prefer!r}; allowed values: {', '.join(DEVICES)}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("prefer='cuda' but torch.cuda.is_available() is False on this machine")
    if prefer == "mps" and not has_mps:
        raise RuntimeError("prefer='mps' but the MPS backend is not available on this machine")
    return torch.device(prefer)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way.

    With ``deterministic`` torch uses deterministic kernels where it has them (``warn_only``,
    so that an operation without one still runs). On the CPU, a run is then bit-for-bit repeatable.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r}; allowed values: an integer in 0..2**63 - 1")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        # cuBLAS needs this to be deterministic; harmless on the CPU and on MPS.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)
