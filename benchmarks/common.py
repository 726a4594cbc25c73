"""Shared helpers of the benchmark scripts (not a benchmark itself).

* a command-line skeleton (``--small``, ``--workdir``),
* cached simulated tracts (generated once per parameter set under the workdir),
* the local cluster bgdask starts (or, with ``--dask-malloc``, a plain
  LocalCluster), bound to 127.0.0.1,
* task-stream summaries per key prefix,
* the I/O floor (read every input plane once, write every output plane once),
* a sampler of the worker processes' resident memory.

The machine is shared and noisy: every script prints *ratios* of quantities
measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

DEFAULT_WORKDIR = "/tmp/bgdask-bench"
MB = 1e6
MiB = 1024 ** 2


# -- command line ---------------------------------------------------------------

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--small", action="store_true", help="a quick, smaller variant")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR,
                   help=f"where generated data lives and is reused (default {DEFAULT_WORKDIR})")
    p.add_argument("--dask-malloc", action="store_true",
                   help="a plain LocalCluster of one's own (its workers with Dask's MALLOC_TRIM_THRESHOLD_=65536, "
                        "distributed.nanny.pre-spawn-environ) rather than the cluster bgdask starts")
    return p


#: Set by --dask-malloc: local_cluster makes a plain LocalCluster.
_PLAIN_CLUSTER = False


def plain_cluster() -> bool:
    """Whether --dask-malloc asked for a plain LocalCluster."""
    return _PLAIN_CLUSTER


def apply_common(args) -> None:
    """Settings every benchmark takes from the common options."""
    global _PLAIN_CLUSTER
    if getattr(args, "dask_malloc", False):
        _PLAIN_CLUSTER = True
        print("a plain LocalCluster: workers with Dask's MALLOC_TRIM_THRESHOLD_=65536")


def banner(title: str) -> None:
    print("=" * 78)
    print(title)
    print("=" * 78)
    print(machine_line())
    sys.stdout.flush()


def machine_line() -> str:
    import dask
    import distributed
    import numba
    import xarray
    import zarr

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cpus ({cpu}), {mem}, load avg {load}; python "
            f"{platform.python_version()}, dask {dask.__version__}, distributed {distributed.__version__}, "
            f"xarray {xarray.__version__}, zarr {zarr.__version__}, numpy {np.__version__}, numba {numba.__version__}")


# -- cached data -------------------------------------------------------------------

def cached_dir(workdir: str | os.PathLike, kind: str, params: dict) -> tuple[Path, bool]:
    """``workdir/kind-<hash of params>``, and whether it already holds a finished build."""
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    d = Path(workdir) / f"{kind}-{key}"
    return d, (d / ".complete").exists()


def mark_built(d: Path, params: dict) -> None:
    (d / ".complete").write_text(json.dumps(params, sort_keys=True) + "\n")


def simulated_tract(workdir, **params) -> Path:
    """A simulated tract written with write_tract, generated once per parameter set.
    Returns the directory (manifest.csv, skymap.yaml, warps/)."""
    from bgdask.simulate import make_tract, write_tract

    d, ready = cached_dir(workdir, "tract", params)
    if ready:
        print(f"reusing the simulated tract in {d}")
        return d
    if d.exists():
        shutil.rmtree(d)
    t0 = time.perf_counter()
    sim = make_tract(**params)
    t1 = time.perf_counter()
    write_tract(sim, d)
    t2 = time.perf_counter()
    mark_built(d, params)
    print(f"simulated tract {params} -> {d}: {len(sim.warps)} warps "
          f"(make {t1 - t0:.1f} s, write {t2 - t1:.1f} s)")
    return d


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


# -- cluster ------------------------------------------------------------------------

@contextlib.contextmanager
def local_cluster(n_workers: int = 2, threads: int = 1, memory_limit="6GB", dashboard: bool = True):
    """A local cluster of processes on 127.0.0.1 and its Client: the one
    ``bgdask match`` starts (bgdask.cluster.connect: its workers without
    Dask's MALLOC_TRIM_THRESHOLD_, its worker preload), or with
    ``--dask-malloc`` a plain LocalCluster, as one's own would be."""
    import logging

    from distributed import Client, LocalCluster

    from bgdask.cluster import ClusterOptions, connect

    with contextlib.ExitStack() as stack:
        if _PLAIN_CLUSTER:
            cluster = stack.enter_context(LocalCluster(
                n_workers=n_workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0" if dashboard else None, memory_limit=memory_limit,
                silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(connect(ClusterOptions(
                workers=n_workers, threads_per_worker=threads, memory_limit=memory_limit, dashboard=dashboard)))
        client.wait_for_workers(n_workers)
        trim = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset")).values())
        print(f"cluster: {n_workers} worker(s) x {threads} thread(s) on 127.0.0.1 "
              f"({'a plain LocalCluster' if _PLAIN_CLUSTER else 'as bgdask starts it'}); "
              f"workers' MALLOC_TRIM_THRESHOLD_: {', '.join(sorted(trim))}")
        yield client


def warm_workers(client) -> None:
    """Import bgdask and compile its numba kernels on every worker, so the
    first measured run does not pay for it."""

    def warm():
        import bgdask.pipeline  # noqa: F401
        import bgdask.stages  # noqa: F401
        from bgdask.kernels.warm import warm_up

        warm_up()   # every kernel, for every argument type the stages give it
        return os.getpid()

    client.run(warm)


# -- task stream ------------------------------------------------------------------------

#: Key prefixes (distributed.utils.key_split: ``bgdask-<stage>-<kind>``) of each
#: stage's per-warp tasks. Stage C: one ``warps`` task per warp (or group of
#: tiny warps) since issue 16; before, ``rows`` per chunk, ``done`` per warp of
#: several chunks, ``coarse`` per warp (kept so a baseline revision is counted too).
KEYS = {
    "A": ("bgdask-a-warp",),
    "B": ("bgdask-b-diff", "bgdask-b-count"),
    "C": ("bgdask-write-warps", "bgdask-write-rows", "bgdask-write-done", "bgdask-write-coarse"),
    "add": ("bgdask-a-sum", "bgdask-b-sum"),
    "visit": ("bgdask-a-criteria", "bgdask-b-model"),
}

def prefix_of(key) -> str:
    from distributed.utils import key_split

    return key_split(key)


def task_stream_summary(stream: list[dict]) -> dict[str, dict]:
    """Per key prefix: number of tasks and seconds spent computing, reading from
    disk / transferring, and the span of the tasks' start and stop times."""
    out: dict[str, dict] = defaultdict(lambda: {"n": 0, "compute": 0.0, "transfer": 0.0,
                                                "disk": 0.0, "start": np.inf, "stop": -np.inf})
    for t in stream:
        row = out[prefix_of(t["key"])]
        row["n"] += 1
        for s in t.get("startstops", ()):
            dur = s["stop"] - s["start"]
            if s["action"] == "compute":
                row["compute"] += dur
            elif s["action"] == "transfer":
                row["transfer"] += dur
            else:
                row["disk"] += dur
            row["start"] = min(row["start"], s["start"])
            row["stop"] = max(row["stop"], s["stop"])
    return dict(out)


def print_task_summary(summary: dict[str, dict], wall: float, n_threads: int, title: str) -> None:
    total = sum(r["compute"] for r in summary.values())
    print(f"\n{title}: task time per key prefix (sum over workers; wall {wall:.2f} s x "
          f"{n_threads} threads = {wall * n_threads:.2f} thread-s)")
    print(f"  {'prefix':<24}{'tasks':>7}{'compute s':>11}{'% compute':>11}{'ms/task':>10}{'transfer s':>12}")
    for name, r in sorted(summary.items(), key=lambda kv: -kv[1]["compute"]):
        print(f"  {name:<24}{r['n']:>7}{r['compute']:>11.2f}{100 * r['compute'] / max(total, 1e-12):>10.1f}%"
              f"{1000 * r['compute'] / max(r['n'], 1):>10.1f}{r['transfer']:>12.2f}")
    busy = total / max(wall * n_threads, 1e-12)
    print(f"  {'total':<24}{sum(r['n'] for r in summary.values()):>7}{total:>11.2f}"
          f"   -> workers busy {100 * busy:.0f}% of the wall time")


def _noop(i):
    return i


def scheduler_cost_per_task(client, n: int = 2000, repeats: int = 3) -> float:
    """Seconds per task of ``n`` independent no-op tasks on ``client`` (best of
    ``repeats``): the scheduler's serial cost per task, which bounds how many
    tasks per second any number of workers can run."""
    from distributed import wait

    best = np.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        futs = client.map(_noop, range(n), pure=False, key=[f"noop-{r}-{i}" for i in range(n)])
        wait(futs)
        best = min(best, time.perf_counter() - t0)
        del futs
    return best / n


def count_tasks(objs) -> int:
    """Distinct tasks in the graphs of the Dask collections ``objs``."""
    keys = set()
    for o in objs:
        keys.update(o.__dask_graph__().keys())
    return len(keys)


# -- the I/O floor ------------------------------------------------------------------------

def _floor_warp(header, out: str, vi: int, pi: int, store_width: int, chunk_rows: int) -> int:
    """Read the three planes of one warp once, write them to ``out`` once
    (the same chunks as bgdask's store: whole row blocks, padded)."""
    import zarr

    from bgdask.io import read_plane

    n = 0
    for name, fill in (("image", np.nan), ("mask", 0), ("variance", np.nan)):
        data = read_plane(header, name)
        arr = zarr.open_array(os.path.join(out, name), mode="r+")
        h = data.shape[0]
        for s in range(0, h, chunk_rows):
            e = min(s + chunk_rows, h)
            block = np.full((e - s, store_width), fill, dtype=arr.dtype)
            block[:, : data.shape[1]] = data[s:e]
            arr[vi, pi, s:e, :] = block
        n += data.nbytes
    return n


def io_floor(client, manifest, out: Path, chunk_rows: int | None = None) -> tuple[float, int]:
    """The I/O floor on ``client``: one task per warp reads image, mask and
    variance once (bgdask.io.read_plane) and writes them once to a Zarr store
    with the very layout, chunking and compression of bgdask's output store
    (made by bgdask.io.store.create_store). Returns (wall seconds, bytes read)."""
    import dask.config
    from distributed import wait

    from bgdask import MatchConfig
    from bgdask.io.catalog import find_warps
    from bgdask.io.store import Store

    chunk_rows = chunk_rows or int(dask.config.get("bgdask.chunk-rows"))
    cat = find_warps(manifest)
    sm = cat.resolve_skymap(Path(manifest).parent / "skymap.yaml" if (Path(manifest).parent / "skymap.yaml").exists() else None)
    visits, patches = cat.visits, cat.patches
    vidx = {v: i for i, v in enumerate(visits)}
    pidx = {p: i for i, p in enumerate(patches)}
    present = np.zeros((len(visits), len(patches)), bool)
    for v, p in cat.entries:
        present[vidx[v], pidx[p]] = True
    h, w = sm.max_outer_shape
    fresh(out)
    Store.create(out, visits=visits, patches=patches, present=present, skymap=sm, config=MatchConfig(),
                 chunk_rows=chunk_rows, attrs={})
    t0 = time.perf_counter()
    futs = [client.submit(_floor_warp, src, str(out), vidx[v], pidx[p], w, chunk_rows,
                          pure=False, key=f"io_floor-{v}-{p}")
            for (v, p), src in cat.items()]
    wait(futs)
    nbytes = sum(client.gather(futs))
    return time.perf_counter() - t0, nbytes


# -- memory -------------------------------------------------------------------------------

class RSSSampler:
    """Samples the resident set size of the given processes every ``interval``
    seconds in a thread; keeps the peak per process."""

    def __init__(self, pids, interval: float = 0.05):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.interval = interval
        self.peak = {pid: 0 for pid in pids}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, p in self.procs.items():
                try:
                    rss = p.memory_info().rss
                except Exception:  # noqa: BLE001 - a process may be gone
                    continue
                self.peak[pid] = max(self.peak[pid], rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def reset(self):
        self.peak = {pid: 0 for pid in self.procs}
        self.samples = 0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def worker_pids(client) -> list[int]:
    return list(client.run(os.getpid).values())


def cpu_seconds(pids) -> float:
    """User + system CPU seconds consumed so far by the processes ``pids``
    (robust to other load on a shared machine, unlike wall time)."""
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def worker_rss(client) -> dict[str, int]:
    import psutil

    return client.run(lambda: psutil.Process().memory_info().rss)


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"
