"""adaedu.parallel.map_runs: the serial loop's results, in order, from worker processes."""

from functools import partial

import pytest
import torch

from adaedu.parallel import map_runs


def _seeded_run(seed: int, n: int = 4) -> tuple[int, list[float], int]:
    """A run that seeds itself from its task, as map_runs requires; reports its thread count."""
    torch.manual_seed(seed)
    return seed, torch.randn(n).tolist(), torch.get_num_threads()


def _fails(task: int) -> int:
    if task == 2:
        raise RuntimeError("run 2 failed")
    return task


def test_workers_give_the_serial_results_in_task_order():
    seeds = [5, 1, 4, 2, 3]
    serial = map_runs(_seeded_run, seeds)
    parallel = map_runs(partial(_seeded_run, n=4), seeds, workers=2, threads=1)
    assert [r[:2] for r in parallel] == [r[:2] for r in serial]
    assert [r[0] for r in parallel] == seeds
    assert all(r[2] == 1 for r in parallel)  # the worker processes got the thread count


def test_empty_and_single_tasks_and_errors():
    assert map_runs(_seeded_run, [], workers=2) == []
    assert map_runs(_seeded_run, [7], workers=2)[0][0] == 7  # one task: no process needed
    with pytest.raises(RuntimeError, match="run 2 failed"):
        map_runs(_fails, [1, 2, 3], workers=2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            map_runs(_seeded_run, [1], workers=bad)
    with pytest.raises(ValueError, match="threads"):
        map_runs(_seeded_run, [1], threads=0)
    with pytest.raises(TypeError, match="fn"):
        map_runs("run", [1])
