"""Exercises with ``check()``, ``hint()`` and ``solution()``, in the style of Kaggle's learntools.

Each exercise owns a reference solution (real adaedu code), a generator of fresh random inputs
and hints. ``check(fn)`` runs the learner's ``fn`` and the reference on several random inputs and
explains the first difference in plain words. Inside nbgrader's autograder
(``NBGRADER_EXECUTION`` is set) a failed check raises ``AssertionError`` so the cell scores 0.

The check is robust by construction: whatever the learner's function returns or raises (NaN,
inf, None, a tensor where a number is expected or the reverse, a wrong shape or dtype, an
exception), ``check()`` ends with a verdict and a message, never a traceback from adaedu and never
"correct" for a wrong answer: the comparison (:func:`describe_difference`) never raises and matches
NaN / inf only where the reference has them, an exercise's ``diagnose`` that raises gives way to
the generic message, and a failure of the checker itself is reported as such.
``tests/test_exercise_battery.py`` runs every exercise against a battery of wrong answers.
"""

from __future__ import annotations

import copy
import math
import numbers
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
    """A plain-words description of how ``got`` differs from ``expected``, or None if it matches.

    Robust by construction: whatever ``got`` is (NaN, inf, None, a tensor where a number is
    expected or the reverse, a wrong shape or dtype, an object whose comparison raises), the
    answer is a sentence or None, never an exception; None only for a real match (NaN and inf
    match only where the reference has the same value)."""
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if not isinstance(tol, int | float) or not tol >= 0:
            raise ValueError(f"{name}={tol!r}; allowed values: a tolerance >= 0")
    try:
        return _difference(expected, got, atol, rtol)
    except Exception as exc:  # an odd object whose comparison fails: a mismatch, in words
        return (
            f"your result ({_kind_of(got)}) cannot be compared with the expected "
            f"{_kind_of(expected)} ({type(exc).__name__})"
        )


def _difference(expected: Any, got: Any, atol: float, rtol: float) -> str | None:
    if got is None and expected is not None:
        return "your function returned None: did you forget the `return` statement?"
    if isinstance(expected, tuple | list):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return (
                f"expected {len(expected)} return values (a {type(expected).__name__}), "
                f"got {_kind_of(got)}"
            )
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            problem = _difference(e, g, atol, rtol)
            if problem:
                return f"return value {i}: {problem}"
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"expected a dict with keys {sorted(expected, key=repr)}, got {_kind_of(got)}"
        for key in expected:
            problem = _difference(expected[key], got[key], atol, rtol)
            if problem:
                return f"entry {key!r}: {problem}"
        return None
    if isinstance(expected, torch.Tensor):
        return _tensor_difference(expected, got, atol, rtol)
    if isinstance(expected, bool):
        if not isinstance(got, bool):
            return f"expected True or False (a Python bool), got {_kind_of(got)}"
        return None if got == expected else f"expected {expected}, got {got}"
    if isinstance(expected, int | float):
        return _number_difference(expected, got, atol, rtol)
    if type(got) is not type(expected):
        return f"expected a {type(expected).__name__}, got {_kind_of(got)}"
    same = expected == got
    if not isinstance(same, bool) or not same:
        return f"expected {_short(expected)}, got {_short(got)}"
    return None


def _number_difference(expected: float, got: Any, atol: float, rtol: float) -> str | None:
    want = "an integer (a Python int)" if isinstance(expected, int) else "a number (a Python float)"
    if isinstance(got, torch.Tensor):
        hint = (
            " (use .item() to turn a one-element tensor into a number)" if got.numel() == 1 else ""
        )
        return f"expected {want}, got {_kind_of(got)}{hint}"
    if isinstance(got, bool) or not isinstance(got, int | float | numbers.Real):
        return f"expected {want}, got {_kind_of(got)}"
    if isinstance(expected, int) and not isinstance(got, int | numbers.Integral):
        return f"expected {want}, got the float {float(got)!r} (return int(...))"
    g = float(got)
    if not math.isfinite(g) or not math.isfinite(expected):
        same = (math.isnan(g) and math.isnan(expected)) or g == expected
        return None if same else f"expected {_number(expected)}, got {_number(g)}"
    if abs(g - expected) > atol + rtol * abs(expected):
        return f"expected {_number(expected)}, got {_number(got)}"
    return None


def _number(x: float) -> str:
    if isinstance(x, int | numbers.Integral) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.5g}"


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "integer"


def _tensor_difference(expected: torch.Tensor, got: Any, atol: float, rtol: float) -> str | None:
    want = f"a torch.Tensor of shape {tuple(expected.shape)} and dtype {expected.dtype}"
    if not isinstance(got, torch.Tensor):
        return f"expected {want}, got {_kind_of(got)}"
    if got.layout != torch.strided:
        return f"expected a dense tensor, got a {got.layout} one (use .to_dense())"
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    kind, got_kind = _dtype_kind(expected.dtype), _dtype_kind(got.dtype)
    if kind != got_kind:
        return f"expected a {kind} tensor (dtype {expected.dtype}), got dtype {got.dtype}"
    if kind == "floating-point" and torch.finfo(got.dtype).eps > torch.finfo(expected.dtype).eps:
        return f"expected dtype {expected.dtype}, got the less precise {got.dtype}"
    got = got.detach().to("cpu", expected.dtype)
    expected = expected.detach().cpu()
    if kind in ("bool", "integer"):
        if not torch.equal(got, expected):
            where = tuple((got != expected).nonzero()[0].tolist())
            return (
                f"values differ, first at index {list(where)}: expected "
                f"{expected[where].item()}, got {got[where].item()}"
            )
        return None
    for name, test in (("NaN", torch.isnan), ("inf", torch.isinf)):
        bad = test(got) & ~test(expected)
        if bad.any():
            where = list(bad.nonzero()[0].tolist())
            return f"your result contains {name} where the reference has numbers (first at index {where})"
    if not torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True):
        err = (got - expected).abs().nan_to_num(nan=float("inf"))
        where = tuple(int(i) for i in (err == err.max()).nonzero()[0])
        return (
            f"values differ (largest difference {err.max().item():.3g} at index {list(where)}: "
            f"expected {expected[where].item():.5g}, got {got[where].item():.5g})"
        )
    return None


def _kind_of(x: Any) -> str:
    """A learner's-eye description of a value: its type, and shape/dtype or a short repr."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            return f"a 0-d tensor ({x.dtype})"
        return f"a tensor of shape {tuple(x.shape)} ({x.dtype})"
    if x is None:
        return "None"
    return f"{type(x).__name__} {_short(x)}"


def _short(x: Any) -> str:
    try:
        text = repr(x)
    except Exception:  # a learner's object whose repr fails
        text = f"<{type(x).__name__}>"
    return text if len(text) < 60 else text[:57] + "..."


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<no message>"


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
        """Check ``fn`` against the reference; returns the result without printing it.

        Never raises and never passes a wrong answer: whatever ``fn`` returns or raises ends in
        a verdict with a message. A failure of the checker itself (a bug in adaedu, not in the
        learner's code) is reported as such, and fails."""
        if not callable(fn):
            return CheckResult(False, f"check() expects your function, got {_kind_of(fn)}")
        try:
            return self._run_trials(fn)
        except Exception as exc:  # the checker's own bug: a verdict, never the learner's traceback
            return CheckResult(
                False,
                f"the checker itself failed ({type(exc).__name__}: {_safe_str(exc)}); this is a "
                "bug in adaedu, not in your answer: please report it",
            )

    def _run_trials(self, fn: Callable) -> CheckResult:
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
                return CheckResult(
                    False, f"your function raised {type(exc).__name__}: {_safe_str(exc)}"
                )
            generic = describe_difference(expected, got, self.atol, self.rtol)
            problem = self._diagnose(args, expected, got) if got is not None else None
            problem = problem or generic
            if problem:
                shapes = ", ".join(_describe_arg(a) for a in args)
                return CheckResult(False, f"on random input #{trial + 1} ({shapes}): {problem}")
        return CheckResult(True, f"correct on {self.trials} random inputs")

    def _diagnose(self, args: tuple, expected: Any, got: Any) -> str | None:
        """The exercise's specific explanation, or None; a diagnosis that cannot make sense of
        an unexpected answer (and raises) gives way to the generic description."""
        if self.diagnose is None:
            return None
        try:
            problem = self.diagnose(_clone(args), expected, got)
        except Exception:
            return None
        return problem if isinstance(problem, str) and problem else None

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
    """Fresh copies of the arguments, so that neither function sees the other's in-place edits."""
    return tuple(_copy(a) for a in args)


def _copy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, list | tuple) and type(x) in (list, tuple):
        return type(x)(_copy(v) for v in x)
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    try:
        return copy.deepcopy(x)
    except Exception:  # an object that cannot be copied is passed as it is
        return x


def _describe_arg(a: Any) -> str:
    if isinstance(a, torch.Tensor):
        return f"tensor of shape {tuple(a.shape)}"
    return _short(a)
