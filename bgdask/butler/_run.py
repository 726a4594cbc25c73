"""Many (tract, band) groups in one run: one store each, all on one Dask cluster.

Each group is one ``bgdask.match_backgrounds`` call in its own thread; the
threads share the one Client, so the scheduler interleaves the groups' tasks
and keeps every worker busy. A group that fails is recorded and the others
go on. Butler puts (the last step of a group) are serialized: one writer at
a time for the registry.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError, StoreError
from ._query import ButlerWarps

__all__ = ["GroupProgress", "GroupResult", "match_groups", "plan_stores", "store_paths"]


@dataclass
class GroupResult:
    """What became of one (skymap, tract, band) group."""

    group: ButlerWarps
    store: str
    result: Any = None                 # bgdask MatchResult when it succeeded
    error: BaseException | None = None
    put: dict[str, int] | None = None  # datasets put into / kept in the output run
    started: float = 0.0
    finished: float = 0.0
    scheduler: str | None = None       # the address of the cluster that ran it

    @property
    def ok(self) -> bool:
        return self.error is None


class GroupProgress:
    """One progress line for all groups: each group's current stage and count."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.state: dict[str, str] = {}
        self.lock = threading.Lock()

    def for_group(self, name: str) -> Callable[[str, int, int], None]:
        def update(label: str, n: int, total: int) -> None:
            stage = label.split(":")[0]
            with self.lock:
                self.state[name] = f"{name} {stage} {n}/{total}"
                self._draw()

        return update

    def _draw(self) -> None:
        if not self.enabled:
            return
        line = " | ".join(self.state[k] for k in sorted(self.state))
        # cleared first, cursor back at the start after: a log line printed
        # meanwhile overwrites the progress line instead of trailing it
        self.stream.write("\r\x1b[K" + line[:200] + "\r")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.state:
            self.stream.write("\n")
            self.stream.flush()


def _is_store(path: Path) -> bool:
    return (path / "zarr.json").exists() or (path / ".zgroup").exists()


def store_paths(groups: Sequence[ButlerWarps], output: str | os.PathLike) -> list[str]:
    """Where each group's store goes: ``output`` itself for one group (unless
    it names a directory: ``DIR/`` or an existing non-store directory), else
    one store per group under the directory ``output``, named by tract and
    band (and skymap, when the query spans several)."""
    text = os.fspath(output)
    out = Path(text)
    as_dir = text.endswith(("/", os.sep)) or (out.is_dir() and not _is_store(out) and any(out.iterdir()))
    if len(groups) == 1 and not as_dir:
        return [str(out)]
    if len(groups) > 1 and (_is_store(out) or out.suffix == ".zarr" or (out.exists() and not out.is_dir())):
        labels = "; ".join(g.label for g in groups)
        raise InputError(f"-o {text}: the query selects {len(groups)} (skymap, tract, band) groups "
                         f"({labels}); give -o a directory (DIR/) to get one store per group")
    with_skymap = len({g.skymap for g in groups}) > 1
    return [str(out / g.store_name(with_skymap)) for g in groups]


def plan_stores(groups: Sequence[ButlerWarps], output: str | os.PathLike, *, resume: bool = False,
                overwrite: bool = False) -> list[str]:
    """:func:`store_paths`, refused when a store exists and neither
    ``resume`` nor ``overwrite`` is given."""
    paths = store_paths(groups, output)
    for path in paths:
        if os.path.exists(path) and not (resume or overwrite):
            raise StoreError(f"{path}: already exists; use --resume to finish it or --overwrite to replace it")
    return paths


def match_groups(
    groups: Sequence[ButlerWarps],
    output: str | os.PathLike,
    config=None,
    client=None,
    *,
    butler=None,
    output_run: str | None = None,
    skymap=None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_rows: int | None = None,
    progress: GroupProgress | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[GroupResult]:
    """Match every group into its own store, all at once on ``client``'s
    cluster; with ``output_run``, put each finished group's outputs into the
    Butler. Returns one :class:`GroupResult` per group (failures included)."""
    from ..pipeline import match_backgrounds

    if output_run and butler is None:
        raise ValueError("output_run needs the (writeable) butler")
    say = echo or (lambda msg: None)
    # Bad input fails here, before any store or dataset is written.
    paths = plan_stores(groups, output, resume=resume, overwrite=overwrite)
    for g in groups:
        g.catalog()
    if len(paths) > 1:
        Path(output).mkdir(parents=True, exist_ok=True)
    put_lock = threading.Lock()
    address = getattr(getattr(client, "scheduler", None), "address", None)
    results = [GroupResult(g, p, scheduler=address) for g, p in zip(groups, paths)]
    many = len(groups) > 1

    def run(res: GroupResult) -> GroupResult:
        g = res.group
        prefix = f"[tract {g.tract} {g.band}] " if many else ""
        res.started = time.perf_counter()
        try:
            res.result = match_backgrounds(
                g.catalog(), res.store, config, client, skymap=skymap, resume=resume,
                overwrite=overwrite, chunk_rows=chunk_rows,
                progress=progress.for_group(f"tract {g.tract} {g.band}") if progress else None,
                echo=lambda msg: say(prefix + msg),
            )
            if output_run:
                res.put = put_outputs(butler, g, res.store, output_run, client=client, lock=put_lock,
                                      echo=lambda m: say(prefix + m))
        except Exception as exc:  # noqa: BLE001 - reported with the group at the end
            res.error = exc
        finally:
            res.finished = time.perf_counter()
        return res

    try:
        if not many:
            run(results[0])
            if results[0].error is not None:
                raise results[0].error
        else:
            with ThreadPoolExecutor(max_workers=len(results), thread_name_prefix="bgdask-group") as pool:
                list(pool.map(run, results))
    finally:
        if progress:
            progress.close()
    return results


from ._sink import put_outputs  # noqa: E402
