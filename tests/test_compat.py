"""What bgdask uses of other libraries beyond their documented API (bgdask/_compat.py)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import dask

from bgdask import _compat


def test_task_spec_runs_nested_references_and_data():
    from dask.highlevelgraph import HighLevelGraph

    layer = {
        ("a", 0): _compat.DataNode(("a", 0), 2),
        ("b", 0): _compat.Task(("b", 0), lambda x, ys: x + sum(ys), _compat.TaskRef(("a", 0)),
                               _compat.List(_compat.TaskRef(("a", 0)), 3)),
    }
    graph = HighLevelGraph.from_collections("b", layer, dependencies=())
    from dask.delayed import Delayed

    assert dask.compute(Delayed(("b", 0), graph, layer="b"), scheduler="sync") == (7,)


def test_jobqueue_sigint_handler_is_undone():
    import dask_jobqueue  # noqa: F401 - a test dependency; importing it installs its handler

    previous = signal.getsignal(signal.SIGINT)
    try:
        _compat.restore_sigint_after_jobqueue()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_failed_job_submission_is_recorded_not_lost():
    from distributed.core import Status

    class Refused:
        config_name = "slurm"

        async def start(self):
            raise RuntimeError("Command exited with non-zero exit code.\nstderr: sbatch: error: invalid partition")

        async def close(self):
            self.closed = True

    seen = []
    cls = _compat.recording_job_class(Refused, lambda job, exc: seen.append(exc) or "invalid partition")
    job = cls()
    asyncio.run(job.start())
    assert job.submit_error == "invalid partition" and job.status == Status.running and len(seen) == 1
    asyncio.run(job.close())
    assert job.closed and job.status == Status.closed
    assert _compat.recording_job_class(Refused, lambda job, exc: "x") is not None


def test_the_versions_checked_are_recorded():
    assert set(_compat.CHECKED_WITH) >= {"dask", "distributed", "dask_jobqueue", "numba"}


def test_numba_cache_dir_is_where_numba_keeps_a_kernel():
    from numba import njit

    from bgdask.kernels.stats import _stats_kernel
    from bgdask.kernels.warm import exercise

    exercise("statistics")   # compiled or loaded: its index is on disk either way
    where = Path(_compat.numba_cache_dir(_stats_kernel))
    assert any(where.glob("stats._stats_kernel-*.nbi")), sorted(p.name for p in where.iterdir())
    assert _compat.numba_cache_dir(njit(lambda x: x)) is None   # no cache=True: no cache
    assert _compat.numba_cache_dir(len) is None
    triple, cpu, features = _compat.numba_cache_key()
    assert triple and cpu and isinstance(features, str)
