"""What bgdask installs in its Dask workers.

* ``dask_setup`` (a worker preload, local clusters): workers ignore SIGINT.
  Ctrl-C in a terminal reaches the whole process group; the bgdask process
  shuts its local workers down itself, so they must not die with a
  traceback of their own first. And each worker, as it starts, imports the
  stages and loads the kernels from numba's cache in a thread of its own
  (while the client opens the warps and creates the store), rather than in
  its first task; only where the kernels' warm-up has left its stamps
  (:func:`bgdask.kernels.warm.is_warm`), so that workers do not compile
  them all at once ahead of any task.
* :class:`QuietExpectedErrors` (a worker plugin, every cluster): a task that
  raises one of bgdask's own errors (a bad file, a visit with no overlap)
  is not logged by the worker as "Compute Failed" with a traceback: the
  error reaches the user as one line from the client; nor, when the client
  cancels its tasks (Ctrl-C, a failed run), does it log each cancelled task.
  ``bgdask -v`` keeps the logs.
"""

from __future__ import annotations

import logging
import signal
import threading


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload protocol passes the worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=load_kernels, name="bgdask-load-kernels", daemon=True).start()


def load_kernels() -> bool:
    """Import bgdask's stages and, if every part of the kernels is in numba's
    cache, load them (a task that needs them meanwhile waits for the same
    import, or for numba's compiler lock, under which a kernel another thread
    has loaded is found, not loaded again). True if loaded."""
    try:
        import bgdask.stages  # noqa: F401
        from bgdask.kernels import warm

        if not all(warm.is_warm(part) for part in warm.PARTS):
            return False
        warm.warm_up()
        return True
    except Exception:  # noqa: BLE001 - only time is at stake: the first task loads what is missing
        logging.getLogger("bgdask").debug("loading the kernels ahead of the first task failed", exc_info=True)
        return False


def _expected_error_names() -> set[str]:
    from bgdask.errors import BgdaskError

    names, todo = set(), [BgdaskError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class _DropExpected(logging.Filter):
    def __init__(self):
        super().__init__()
        self.names = _expected_error_names()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed") or len(record.args or ()) < 4:
            return True
        exception_text = str(record.args[3])
        return exception_text.split("(", 1)[0].strip() not in self.names


class _DropShutdownNoise(logging.Filter):
    """Drops what workers log when the client cancels its tasks and the
    cluster shuts down (Ctrl-C, a failed run): each cancelled task, and a
    fetch from a worker that has just closed (a traceback). Dask recovers
    from such a fetch by itself when the run goes on."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is kept
            return True
        if text.startswith("Async instruction for") and text.endswith("ended with CancelledError"):
            return False
        return not text.startswith("failed during get data with")


#: logger name -> the filters QuietExpectedErrors adds to it
_FILTERS = {"distributed.worker": (_DropExpected, _DropShutdownNoise),
            "distributed.worker.state_machine": (_DropShutdownNoise,)}


def _plugin_base():
    from distributed.diagnostics.plugin import WorkerPlugin

    return WorkerPlugin


class QuietExpectedErrors(_plugin_base()):
    """A worker plugin that drops the worker's log of tasks failing with a bgdask error."""

    name = "bgdask-quiet-expected-errors"

    def setup(self, worker) -> None:  # noqa: ARG002
        for name, classes in _FILTERS.items():
            logger = logging.getLogger(name)
            for cls in classes:
                if not any(type(f) is cls for f in logger.filters):
                    logger.addFilter(cls())

    def teardown(self, worker) -> None:  # noqa: ARG002
        for name, classes in _FILTERS.items():
            logger = logging.getLogger(name)
            for f in [f for f in logger.filters if type(f) in classes]:
                logger.removeFilter(f)
