"""Exercises with ``check()``, ``hint()`` and ``solution()``, in the style of Kaggle's learntools.

Each exercise owns a reference solution (real adaedu code), a generator of fresh random inputs
and hints. ``check(fn)`` runs the learner's ``fn`` and the reference on several random inputs and
explains the first difference in plain words. Inside nbgrader's autograder
(``NBGRADER_EXECUTION`` is set) a failed check raises ``AssertionError`` so the cell scores 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adaedu.show import show

#: ``make_inputs(generator) -> tuple of arguments`` for one trial.
MakeInputs = Callable[[torch.Generator], tuple]
#: ``diagnose(args, expected, got) -> a sentence or None``: a domain-specific explanation.
Diagnose = Callable[[tuple, Any, Any], "str | None"]


@dataclass
class CheckResult:
    passed: bool
    message: str
    implemented: bool = True

    def __bool__(self) -> bool:
        return self.passed


def describe_difference(expected: Any, got: Any, atol: float, rtol: float) -> str | None:
    """A plain-words description of how ``got`` differs from ``expected``, or None if it matches."""
    if isinstance(expected, tuple | list):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"expected {len(expected)} return values, got {type(got).__name__} {_short(got)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            problem = describe_difference(e, g, atol, rtol)
            if problem:
                return f"return value {i}: {problem}"
        return None
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if not torch.equal(got.to(expected.dtype), expected):
                where = (got.to(expected.dtype) != expected).nonzero()[0].tolist()
                return f"values differ, first at index {where}: expected {expected[tuple(where)].item()}, got {got[tuple(where)].item()}"
            return None
        got = got.to(expected.dtype)
        if torch.isnan(got).any() and not torch.isnan(expected).any():
            return "your result contains NaN where the reference has numbers"
        if not torch.allclose(got, expected, atol=atol, rtol=rtol):
            err = (got - expected).abs()
            where = tuple(int(i) for i in (err == err.max()).nonzero()[0])
            return (
                f"values differ (largest difference {err.max().item():.3g} at index {list(where)}: "
                f"expected {expected[where].item():.5g}, got {got[where].item():.5g})"
            )
        return None
    if isinstance(expected, float | int):
        try:
            g = float(got)
        except (TypeError, ValueError):
            return f"expected a number, got {type(got).__name__}"
        if abs(g - expected) > atol + rtol * abs(expected):
            return f"expected {expected:.5g}, got {g:.5g}"
        return None
    return None if got == expected else f"expected {_short(expected)}, got {_short(got)}"


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 60 else text[:57] + "..."


@dataclass
class Exercise:
    """One exercise: ``check(fn)``, ``hint()``, ``solution()``."""

    title: str
    reference: Callable
    make_inputs: MakeInputs
    hints: Sequence[str]
    diagnose: Diagnose | None = None
    trials: int = 5
    atol: float = 1e-5
    rtol: float = 1e-4
    seed: int = 1234
    _hints_shown: int = field(default=0, repr=False)

    def run_check(self, fn: Callable) -> CheckResult:
        """Check ``fn`` against the reference; returns the result without printing it."""
        if not callable(fn):
            return CheckResult(False, f"check() expects your function, got {type(fn).__name__}")
        gen = torch.Generator().manual_seed(self.seed)
        for trial in range(self.trials):
            args = self.make_inputs(gen)
            expected = self.reference(*_clone(args))
            try:
                got = fn(*_clone(args))
            except NotImplementedError:
                return CheckResult(
                    False,
                    "not implemented yet: replace `raise NotImplementedError` with your code",
                    implemented=False,
                )
            except Exception as exc:  # the learner's bug, reported in words
                return CheckResult(False, f"your function raised {type(exc).__name__}: {exc}")
            problem = self.diagnose(args, expected, got) if self.diagnose else None
            problem = problem or describe_difference(expected, got, self.atol, self.rtol)
            if problem:
                shapes = ", ".join(_describe_arg(a) for a in args)
                return CheckResult(False, f"on random input #{trial + 1} ({shapes}): {problem}")
        return CheckResult(True, f"correct on {self.trials} random inputs")

    def check(self, fn: Callable) -> None:
        """Check ``fn`` and print the verdict; under nbgrader, a failure raises AssertionError.

        Returns nothing, so that the notebook shows the verdict only; use :meth:`run_check`
        for the result as a value."""
        result = self.run_check(fn)
        mark = "✅" if result.passed else ("⏳" if not result.implemented else "❌")
        print(f"{mark} {self.title}: {result.message}")
        if not result.passed and result.implemented and self._hints_shown == 0:
            print("   (stuck? call .hint())")
        if os.environ.get("NBGRADER_EXECUTION") and not result.passed:
            raise AssertionError(result.message)

    def hint(self, i: int | None = None) -> None:
        """Print the next hint (or hint ``i``, counting from 1)."""
        if not self.hints:
            print("no hints for this exercise")
            return
        if i is None:
            i = min(self._hints_shown + 1, len(self.hints))
        if not 1 <= i <= len(self.hints):
            raise ValueError(f"i={i}; allowed values: 1..{len(self.hints)}")
        self._hints_shown = max(self._hints_shown, i)
        print(f"💡 hint {i}/{len(self.hints)}: {self.hints[i - 1]}")

    def solution(self) -> None:
        """Show the reference solution (the adaedu code it runs)."""
        show(self.reference)


def _clone(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _describe_arg(a: Any) -> str:
    if isinstance(a, torch.Tensor):
        return f"tensor of shape {tuple(a.shape)}"
    return _short(a)
