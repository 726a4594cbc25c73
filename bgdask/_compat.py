"""What bgdask uses of other libraries beyond their documented API, in one place.

Each item names the versions it was checked against; a change in those
libraries breaks here first (tests/test_compat.py exercises every item).

* Dask's task specification (``dask._task_spec``: ``Task``, ``TaskRef``,
  ``DataNode``, ``List``), to write the stage graphs as layers of tasks
  (checked with dask 2026.8.0).
"""

from __future__ import annotations

__all__ = ["Task", "TaskRef", "DataNode", "List", "CHECKED_WITH"]

#: The versions these internals were checked against.
CHECKED_WITH = {"dask": "2026.8.0", "distributed": "2026.8.0", "dask_jobqueue": "0.9.0"}

from dask._task_spec import DataNode, List, Task, TaskRef  # noqa: E402
