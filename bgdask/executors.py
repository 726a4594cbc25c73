"""Where a graph runs: a distributed Client (with progress), or a local Dask scheduler.

Every computation of a match goes through :class:`Executor.compute`, so the
same graphs run on the synchronous scheduler (the serial driver, tests), the
threaded one, a LocalCluster or a cluster of many machines, and give the
same numbers bit for bit (the graphs fix every reduction's order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

__all__ = ["Executor", "Progress"]

#: progress(label, done, total): called as tasks finish (distributed only).
Progress = Callable[[str, int, int], None]


@dataclass
class Executor:
    """Runs graphs on ``client`` (a ``distributed.Client``) or, without one,
    on the Dask scheduler named by ``scheduler`` ("sync", "threads", ...;
    None: the current Client if there is one, else Dask's default)."""

    client: Any = None
    scheduler: str | None = None
    progress: Progress | None = None

    @classmethod
    def resolve(cls, client=None, scheduler: str | None = None, progress: Progress | None = None) -> "Executor":
        if client is None and scheduler is None:
            try:
                from distributed import get_client

                client = get_client()
            except (ImportError, ValueError):
                client = None
        return cls(client, scheduler, progress)

    def compute(self, graph, keys: Sequence, label: str = "", keep: Collection | None = None) -> list:
        """The values of ``keys`` of ``graph`` (a HighLevelGraph; they are in
        one layer). With ``keep``, only the values of those keys are returned
        (None for the others, which are only waited for: on a cluster their
        results are released as they finish, not gathered)."""
        if not keys:
            return []
        import dask
        from dask.delayed import Delayed

        layer = next(name for name, lay in graph.layers.items() if keys[0] in lay)
        objs = [Delayed(k, graph, layer=layer) for k in keys]
        wanted = [keep is None or k in keep for k in keys]
        if self.client is None:
            values = dask.compute(*objs, scheduler=self.scheduler)
            return [v if w else None for v, w in zip(values, wanted)]
        from distributed import as_completed

        futures = self.client.compute(objs)
        kept = {f.key for f, w in zip(futures, wanted) if w}
        released = set()
        try:
            total = len(futures)
            for n, fut in enumerate(as_completed(futures), start=1):
                if fut.status == "error":
                    fut.result()              # raise the task's error here
                if fut.key not in kept:
                    fut.release()
                    released.add(fut.key)
                if self.progress:
                    self.progress(label, n, total)
            values = iter(self.client.gather([f for f, w in zip(futures, wanted) if w]))
            return [next(values) if w else None for w in wanted]
        except BaseException:
            # released, not cancelled: cancelling a key cancels its dependents,
            # and distributed asserts that each of those is wanted by a client
            # (the tasks that write warps are also the leaves of the quality tree)
            for f in futures:
                if f.key not in released:
                    f.release()
            raise
