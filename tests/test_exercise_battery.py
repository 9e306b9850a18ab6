"""Every exercise checker of the course against a battery of wrong answers (issue 10).

The exercises are discovered, not listed: every ``Exercise`` object in ``adaedu/exercises/*.py``
(later chapters included automatically). Each must pass its reference and each notebook's solution,
and must FAIL, with a message and without an exception escaping, every answer of the battery:
NaN, inf, None, a string, wrong-shaped / empty / 0-d tensors, the reference's result plus noise or
with a wrong dtype, NaN planted in the reference's result, an exception, a wrong type...
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import adaedu.exercises as exercises_pkg
from adaedu.exercises import Exercise, describe_difference

ROOT = Path(__file__).resolve().parents[1]


def _all_exercises() -> dict[str, Exercise]:
    found = {}
    for info in pkgutil.iter_modules(exercises_pkg.__path__):
        module = importlib.import_module(f"adaedu.exercises.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, Exercise):
                found[f"{info.name}.{name}"] = obj
    return found


EXERCISES = _all_exercises()


def test_the_discovery_finds_every_exercise_module():
    modules = {p.stem for p in (ROOT / "adaedu" / "exercises").glob("*.py")} - {"__init__"}
    assert modules == {key.split(".")[0] for key in EXERCISES}
    assert len(EXERCISES) >= 46


# --- the battery ----------------------------------------------------------------------------------


def _noise(x):
    """The reference's value, changed well beyond any tolerance (same type, shape and dtype)."""
    if isinstance(x, tuple | list):
        return None  # tuples: each element is perturbed in turn (see _battery)
    if isinstance(x, torch.Tensor):
        if x.numel() == 0:
            return None
        if x.dtype == torch.bool:
            return ~x
        if not x.is_floating_point():
            return x + 1
        return x + 0.5 * (1 + x.abs()) * torch.where(torch.arange(x.numel()) % 2 == 0, 1, -1).view(
            x.shape
        ).to(x.dtype)
    if isinstance(x, bool):
        return not x
    if isinstance(x, int):
        return x + 1
    if isinstance(x, float):
        return x + 0.5 * (1 + abs(x)) if x == x else 0.0
    return None


def _wrong_dtypes(x) -> list:
    """The reference's value in the wrong type or dtype."""
    if isinstance(x, torch.Tensor):
        out = []
        if x.dtype == torch.bool:
            out += [x.long(), x.float()]
        elif x.is_floating_point():
            out += [x.half(), x.round().long(), x > 0]
        else:
            out += [x.double(), x.bool()]
        if x.numel() == 1:
            out.append(x.item())  # a number where a tensor is expected
        out.append(x.tolist())  # a list where a tensor is expected
        return out
    if isinstance(x, bool):
        return [int(x), torch.tensor(x)]
    if isinstance(x, int):
        return [float(x), torch.tensor(x), torch.tensor([x]), str(x)]
    if isinstance(x, float):
        return [torch.tensor(x), torch.tensor([x]), str(x), [x]]
    return []


def _battery(reference: Callable, expected) -> dict[str, Callable]:
    """Wrong answers: name -> a function with the exercise's signature."""

    def const(value):
        return lambda *args: value

    def raises(exc):
        def fn(*args):
            raise exc

        return fn

    answers: dict[str, Callable] = {
        "nan": const(float("nan")),
        "inf": const(float("inf")),
        "-inf": const(float("-inf")),
        "None": const(None),
        "a string": const("42"),
        "an object": const(object()),
        "a dict": const({"answer": 1}),
        "0-d nan tensor": const(torch.tensor(float("nan"))),
        "0-d tensor": const(torch.tensor(0.0)),
        "empty tensor": const(torch.empty(0)),
        "empty long tensor": const(torch.empty(0, dtype=torch.long)),
        "wrong-shaped tensor": const(torch.zeros(3, 7, 5)),
        "a tensor of indices": const(torch.tensor([0, 1, 2])),
        "raises ValueError": raises(ValueError("learner's bug")),
        "raises IndexError": raises(IndexError("index 9 is out of bounds")),
        "raises KeyError": raises(KeyError(3)),
        "no arguments accepted": lambda: 0,
        "returns a generator": lambda *args: (i for i in range(3)),
    }

    def variants(value, path: str):
        """(name, transform) pairs applied to the reference's value."""
        out = []
        noisy = _noise(value)
        if noisy is not None:
            out.append((f"{path} + noise", noisy))
        for i, wrong in enumerate(_wrong_dtypes(value)):
            out.append((f"{path} wrong type/dtype {i}", wrong))
        if isinstance(value, torch.Tensor) and value.numel() > 0:
            if value.is_floating_point():
                planted = value.clone()
                planted.view(-1)[0] = float("nan")
                out.append((f"{path} with a NaN", planted))
                planted = value.clone()
                planted.view(-1)[-1] = float("inf")
                out.append((f"{path} with an inf", planted))
            out.append((f"{path} unsqueezed", value.unsqueeze(0)))
            out.append(
                (f"{path} flattened plus one", torch.cat([value.flatten(), value.flatten()[:1]]))
            )
            out.append((f"{path} emptied", value.flatten()[:0]))
        return out

    def from_reference(transform_path: tuple[int, ...], index: int):
        """The reference's result with the element at ``transform_path`` replaced by variant
        ``index``."""

        def fn(*args):
            result = reference(*args)
            if not transform_path:
                return variants(result, "")[index][1]
            items = list(result)
            i = transform_path[0]
            items[i] = variants(items[i], "")[index][1]
            return type(result)(items) if type(result) in (tuple, list) else tuple(items)

        return fn

    if isinstance(expected, tuple | list):
        answers["only the first return value"] = lambda *a: reference(*a)[0]
        answers["one return value too many"] = lambda *a: (*reference(*a), 0)
        answers["return values reversed"] = lambda *a: tuple(reversed(reference(*a)))
        for i, item in enumerate(expected):
            for j, (name, _) in enumerate(variants(item, f"value {i}")):
                answers[f"reference, {name}"] = from_reference((i,), j)
    else:
        for j, (name, _) in enumerate(variants(expected, "result")):
            answers[f"reference, {name}"] = from_reference((), j)
    return answers


def _expected_of(exercise: Exercise):
    gen = torch.Generator().manual_seed(exercise.seed)
    return exercise.reference(*exercise.make_inputs(gen))


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_reference_passes(key):
    result = EXERCISES[key].run_check(EXERCISES[key].reference)
    assert result.passed, result.message


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_every_bad_answer_fails_with_a_message(key, capsys):
    exercise = EXERCISES[key]
    expected = _expected_of(exercise)
    battery = _battery(exercise.reference, expected)
    assert len(battery) >= 20
    passed = []
    for name, fn in battery.items():
        result = exercise.run_check(fn)  # an exception escaping fails the test here
        if (
            name.endswith("reversed")
            and describe_difference(
                expected, tuple(reversed(expected)), exercise.atol, exercise.rtol
            )
            is None
        ):
            continue  # a symmetric result: reversing it is no error
        if result.passed:
            passed.append(name)
        assert isinstance(result.message, str) and result.message, name
        assert "bug in adaedu" not in result.message, f"{name}: {result.message}"
        exercise.check(fn)  # prints a verdict, raises nothing outside nbgrader
    assert not passed, f"{key} accepts wrong answers: {passed}"
    assert "❌" in capsys.readouterr().out


def test_a_bad_answer_raises_under_nbgrader(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    for key in ("chen2023.q3", "roller2021.q2", "eliseev2023.q3", "frugalgpt2023.q3"):
        with pytest.raises(AssertionError):
            EXERCISES[key].check(lambda *args: float("nan"))
        with pytest.raises(AssertionError):
            EXERCISES[key].check(lambda *args: torch.tensor(float("nan")))


# --- the cases of the issue -----------------------------------------------------------------------


def test_nan_is_never_correct_for_a_numeric_reference():
    numeric = [k for k in EXERCISES if isinstance(_expected_of(EXERCISES[k]), int | float)]
    assert len(numeric) >= 13, numeric
    for key in numeric:
        result = EXERCISES[key].run_check(lambda *args: float("nan"))
        assert not result.passed, key
    assert describe_difference(1.0, float("nan"), 1e-5, 1e-4)
    assert describe_difference(1.0, float("inf"), 1e-5, 1e-4)
    assert describe_difference(float("nan"), float("nan"), 1e-5, 1e-4) is None
    assert describe_difference(float("inf"), float("inf"), 1e-5, 1e-4) is None
    assert describe_difference(torch.ones(2), torch.tensor([1.0, float("inf")]), 1e-5, 1e-4)


def test_frugalgpt_q3_with_a_tensor_of_indices_is_reported_in_words():
    from adaedu.exercises import frugalgpt2023 as ex

    def all_reaching(acc, cost, target):
        return (acc >= target).nonzero().flatten()

    result = ex.q3.run_check(all_reaching)
    assert not result.passed and "one index" in result.message, result.message


def test_roller_q2_with_one_based_expert_ids_is_reported_in_words():
    from adaedu.exercises import roller2021 as ex
    from adaedu.moe.hashing import greedy_balanced_table

    result = ex.q2.run_check(lambda counts, n: greedy_balanced_table(counts, n) + 1)
    assert not result.passed and "start at 0" in result.message, result.message


@pytest.mark.parametrize(
    "answer", [torch.tensor(3), torch.empty(0, dtype=torch.long), torch.tensor([1, 2])]
)
def test_eliseev_q3_with_a_tensor_is_reported_in_words(answer):
    from adaedu.exercises import eliseev2023 as ex

    result = ex.q3.run_check(lambda cached, future: answer)
    assert not result.passed and "integer" in result.message, result.message


def test_a_crashing_diagnosis_gives_way_to_the_generic_message():
    def diagnose(args, expected, got):
        raise KeyError("diagnosis bug")

    ex = Exercise("t", lambda x: x * 2, lambda g: (torch.randn(3, generator=g),), [], diagnose)
    result = ex.run_check(lambda x: x * 3)
    assert not result.passed and "values differ" in result.message
    assert ex.run_check(lambda x: x * 2).passed


def test_a_crashing_checker_fails_and_says_it_is_not_the_learners_fault():
    def broken_reference(x):
        raise RuntimeError("reference bug")

    ex = Exercise("t", broken_reference, lambda g: (torch.randn(3, generator=g),), [])
    result = ex.run_check(lambda x: x)
    assert not result.passed and "bug in adaedu" in result.message


def test_the_learner_and_the_reference_get_separate_copies_of_list_arguments():
    def reference(xs):
        return sum(xs)

    def mutating(xs):
        total = sum(xs)
        xs.clear()
        return total

    ex = Exercise("t", reference, lambda g: ([1, 2, 3],), [], lambda a, e, g: None)
    assert ex.run_check(mutating).passed


# --- the notebooks' own solutions pass their checkers -------------------------------------------

_PRELUDE = (
    "import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import Tensor, nn\n"
)


def _notebook_solutions() -> list[tuple[str, str]]:
    cases = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        if any(c.get("metadata", {}).get("nbgrader", {}).get("solution") for c in cells):
            cases.append(path.name)
    return cases


@pytest.mark.parametrize("name", _notebook_solutions())
def test_the_notebooks_solutions_pass(name):
    cells = [
        c
        for c in json.loads((ROOT / "notebooks" / name).read_text())["cells"]
        if c["cell_type"] == "code"
    ]
    sources = ["".join(c["source"]) for c in cells]
    imports = [
        line
        for s in sources
        for line in s.splitlines()
        if re.match(r"^(import |from \S+ import [^(]*$)", line)
    ]
    ns: dict = {}
    exec(_PRELUDE + "\n".join(imports), ns)
    checked = 0
    for cell, source in zip(cells, sources, strict=True):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
        if grade_id.endswith("-solution"):
            exec(source, ns)
        elif grade_id.endswith("-check"):
            match = re.search(r"ex\.(q\d+)\.check\((\w+)\)", source)
            result = getattr(ns["ex"], match.group(1)).run_check(ns[match.group(2)])
            assert result.passed, f"{grade_id}: {result.message}"
            checked += 1
    assert checked >= 2
