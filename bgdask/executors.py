"""Where a graph runs: a distributed Client (with progress), or a local Dask scheduler.

Every computation of a match goes through :class:`Executor.compute`, so the
same graphs run on the synchronous scheduler (the serial driver, tests), the
threaded one, a LocalCluster or a cluster of many machines, and give the
same numbers bit for bit (the graphs fix every reduction's order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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

    def compute(self, graph, keys: Sequence, label: str = "") -> list:
        """The values of ``keys`` of ``graph`` (a HighLevelGraph; they are in one layer)."""
        if not keys:
            return []
        import dask
        from dask.delayed import Delayed

        layer = next(name for name, lay in graph.layers.items() if keys[0] in lay)
        objs = [Delayed(k, graph, layer=layer) for k in keys]
        if self.client is None:
            return list(dask.compute(*objs, scheduler=self.scheduler))
        from distributed import as_completed

        futures = self.client.compute(objs)
        try:
            total = len(futures)
            for n, _ in enumerate(as_completed(futures), start=1):
                if self.progress:
                    self.progress(label, n, total)
            return self.client.gather(futures)
        except BaseException:
            self.client.cancel(futures)
            raise
