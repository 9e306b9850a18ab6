"""Independent, seeded runs side by side in worker processes: the one home for it in the course.

A notebook that trains many small models (one per seed and arm) is bound by Python overhead on
one CPU thread per model; two cores then train two models at once. :func:`map_runs` is
``[fn(task) for task in tasks]`` that may use ``workers`` processes: each run must seed itself
from its task (so its result does not depend on where or after what it ran), which makes the
results, in task order, those of the serial loop. Processes are *spawned* (a fresh interpreter,
safe on Linux, macOS and Windows and with torch's thread pools), so ``fn`` and the tasks must be
picklable: a module-level function (or a ``functools.partial`` of one) and plain data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def map_runs(
    fn: Callable[[T], R],
    tasks: Iterable[T],
    *,
    workers: int = 1,
    threads: int | None = None,
    device: torch.device | str = "cpu",
) -> list[R]:
    """``[fn(task) for task in tasks]``, run in ``workers`` spawned processes when ``workers`` > 1
    (each with ``threads`` torch threads; None: as many as this process has), else in this
    process. Worker processes are for runs on the CPU: with ``device`` another device,
    ``workers`` must be 1. The results come back in the order of ``tasks``; an exception in a
    run is raised here."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r}; allowed values: an integer >= 1")
    if workers > 1 and torch.device(device).type != "cpu":
        raise ValueError(f"workers={workers}; allowed values: 1 on {device} (processes: CPU only)")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r}; allowed values: None or an integer >= 1")
    if not callable(fn):
        raise TypeError(f"fn={fn!r}; allowed values: a picklable function of one task")
    tasks = list(tasks)
    if workers == 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=get_context("spawn"),
        initializer=_set_threads,
        initargs=(torch.get_num_threads() if threads is None else threads,),
    ) as pool:
        return list(pool.map(fn, tasks))
