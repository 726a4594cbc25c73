"""Dask worker preload for local clusters: workers ignore SIGINT.

Ctrl-C in a terminal reaches the whole process group; the bgdask process
shuts its local workers down itself, so they must not die with a traceback
of their own first.
"""

import signal


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload protocol passes the worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
