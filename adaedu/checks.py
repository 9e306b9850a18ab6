"""Argument checks shared by adaedu's modules: an impossible argument gives an error that names
the parameter and the allowed values (issue 10)."""

from __future__ import annotations

from numbers import Integral


def check_int(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an integer in ``minimum..maximum`` (no upper bound if None), else a
    ValueError naming ``name`` and the allowed values. Booleans are not integers here."""
    if (
        not isinstance(value, Integral)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        allowed = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name}={value!r}; allowed values: an integer {allowed}")
    return int(value)
