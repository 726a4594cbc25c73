"""What bgdask uses of other libraries beyond their documented API, in one place.

Each item names the versions it was checked against; a change in those
libraries breaks here first (tests/test_compat.py exercises every item).

* Dask's task specification (``dask._task_spec``: ``Task``, ``TaskRef``,
  ``DataNode``, ``List``), to write the stage graphs as layers of tasks
  (checked with dask 2026.8.0).
* dask-jobqueue's SIGINT handler, installed when ``dask_jobqueue.runner`` is
  imported (checked with dask-jobqueue 0.9.0): :func:`restore_sigint_after_jobqueue`.
* A dask-jobqueue Job whose ``start`` failed (``sbatch``/``qsub`` refused the
  job) and the ``status`` that distributed's SpecCluster reads from it
  (checked with dask-jobqueue 0.9.0, distributed 2026.8.0):
  :func:`recording_job_class`.
* Where numba keeps a cached kernel's machine code (a ``cache=True``
  dispatcher's ``_cache._cache_path``), and what it keys the cache with
  besides the source (the CPU target's ``codegen().magic_tuple()``); checked
  with numba 0.68.1: :func:`numba_cache_dir`, :func:`numba_cache_key`.
"""

from __future__ import annotations

__all__ = ["Task", "TaskRef", "DataNode", "List", "CHECKED_WITH", "restore_sigint_after_jobqueue",
           "recording_job_class", "numba_cache_dir", "numba_cache_key"]

#: The versions these internals were checked against.
CHECKED_WITH = {"dask": "2026.8.0", "distributed": "2026.8.0", "dask_jobqueue": "0.9.0", "numba": "0.68.1"}

from dask._task_spec import DataNode, List, Task, TaskRef  # noqa: E402


def restore_sigint_after_jobqueue() -> None:
    """Undo dask-jobqueue's SIGINT handler.

    Importing ``dask_jobqueue`` (its ``runner`` module) replaces the SIGINT
    handler with ``sys.exit()``: Ctrl-C then ends the program with exit
    status 0, as if the run had succeeded. Put Python's own handler back, so
    Ctrl-C raises KeyboardInterrupt (jobs are cancelled on the way out and the
    exit status says the run was interrupted).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "__module__", None) == "dask_jobqueue.runner":
        signal.signal(signal.SIGINT, signal.default_int_handler)


_RECORDING_JOB_CLASSES: dict = {}


def recording_job_class(job_cls: type, on_error) -> type:
    """A subclass of a dask-jobqueue Job that keeps its submission error.

    dask-jobqueue lets a failed ``sbatch``/``qsub`` escape into the event
    loop, where it is logged as several tracebacks and nothing else happens.
    This job passes the exception to ``on_error(job, exc)``, keeps what it
    returns in ``submit_error``, and counts as started (it holds no batch job:
    closing it cancels nothing), which is what the cluster did with it anyway.
    """
    key = (job_cls, on_error.__code__)
    if key not in _RECORDING_JOB_CLASSES:

        class RecordingJob(job_cls):  # type: ignore[misc, valid-type]
            submit_error: str | None = None  # the message only: no traceback keeps the job alive

            async def start(self):
                from distributed.core import Status

                try:
                    await super().start()
                except Exception as exc:  # noqa: BLE001 - reported by on_error
                    self.submit_error = on_error(self, exc)
                    self.status = Status.running

            async def close(self):
                from distributed.core import Status

                await super().close()
                if self.submit_error is not None:
                    self.status = Status.closed

        RecordingJob.__name__ = RecordingJob.__qualname__ = job_cls.__name__
        RecordingJob.__module__ = job_cls.__module__
        _RECORDING_JOB_CLASSES[key] = RecordingJob
    return _RECORDING_JOB_CLASSES[key]


def numba_cache_dir(dispatcher) -> str | None:
    """The directory where numba keeps the compiled code of ``dispatcher`` (a
    kernel decorated with ``cache=True``), as numba's cache locators decide:
    ``NUMBA_CACHE_DIR`` when set, else beside its source (``__pycache__``)
    when that is writable, else the user's cache directory. None if numba
    keeps no cache for it."""
    return getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)


def numba_cache_key() -> list:
    """What numba's cache of a CPU kernel is keyed by besides the source and
    the signature: the target triple, the CPU name and its features as this
    process compiles for them (``NUMBA_CPU_NAME``, ``NUMBA_CPU_FEATURES`` and
    ``NUMBA_ENABLE_AVX`` included)."""
    from numba.core.registry import cpu_target

    return [str(part) for part in cpu_target.target_context.codegen().magic_tuple()]
