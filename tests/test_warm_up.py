"""The kernels compile once, before work is submitted (bgdask.kernels.warm),
in a process of the command line's own (bgdask.cluster.KernelWarmUp)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bgdask._compat import numba_cache_dir
from bgdask.cluster import KernelWarmUp
from bgdask.kernels import stats
from bgdask.kernels import warm
from bgdask.kernels.warm import NOTE, PARTS

ROOT = Path(__file__).resolve().parents[1]

# In a fresh process (no other test has called a kernel yet): warm_up, then
# whole runs of both methods and both placements on the synchronous scheduler
# (the code the workers run). Prints each kernel's signatures after warm_up
# and after the runs.
PROBE = """
import importlib, json, sys
from numba.core.registry import CPUDispatcher
from bgdask.kernels.warm import warm_up

def kernels():
    for name in ("stats", "pixels", "centroid", "interp"):
        module = importlib.import_module("bgdask.kernels." + name)
        for attr, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
                yield name, name + "." + attr, obj

def signatures():
    return {key: sorted(str(sig) for sig in obj.signatures) for _, key, obj in kernels()}

warm_up()
after_warm_up = signatures()
from bgdask import MatchConfig, match_backgrounds
from bgdask.testing import tiny_tract
sim, tract = tiny_tract(sys.argv[1] + "/tract", n_visits=3, num_patches=(2, 2), patch_inner=96, patch_border=8)
bins = dict(x_bin=16, y_bin=16)
for i, cfg in enumerate([MatchConfig(**bins), MatchConfig(method="global", **bins),
                         MatchConfig(placement="centroid", **bins)]):
    match_backgrounds(tract / "manifest.csv", sys.argv[1] + f"/out{i}.zarr", cfg, scheduler="synchronous")
calls = {key: [name + "." + n for n in obj.py_func.__code__.co_names] for name, key, obj in kernels()}
print(json.dumps([after_warm_up, signatures(), calls]))
"""


@pytest.mark.slow
def test_warm_up_leaves_nothing_for_a_run_to_compile(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warmed, after_runs, calls = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(after_runs) >= 10, sorted(after_runs)
    # every kernel is compiled by warm_up: called with types, or called by one that was
    compiled = {name for name, sigs in warmed.items() if sigs}
    todo = list(compiled)
    while todo:
        for callee in calls[todo.pop()]:
            if callee in warmed and callee not in compiled:
                compiled.add(callee)
                todo.append(callee)
    assert compiled == set(warmed), f"kernels warm_up does not compile: {sorted(set(warmed) - compiled)}"
    # a kernel that a run called is compiled (or loaded) for each type it was called with
    new = {name: sorted(set(sigs) - set(warmed.get(name, ()))) for name, sigs in after_runs.items()}
    new = {name: sigs for name, sigs in new.items() if sigs}
    assert not new, f"a run compiled kernels that warm_up had not: {new}"
    images = {sig.split(",")[0] for sig in warmed["stats._stats_kernel"]}
    assert any("float32" in t for t in images) and any("float64" in t for t in images), images


def test_kernel_warm_up_runs_in_processes_of_its_own_and_announces_a_long_wait(monkeypatch):
    said = []
    monkeypatch.setattr(warm, "is_warm", lambda part: False)   # as if no stamp said the parts were cached
    with KernelWarmUp() as warming:
        assert len(warming.procs) == len(PARTS) and os.getpid() not in [p.pid for p in warming.procs]
        assert warming.wait(said.append, after=3600.0)     # loaded or compiled: no note before an hour
    assert said == [] and [p.returncode for p in warming.procs] == [0, 0]
    # a warm-up still running after `after` seconds is announced once, then waited for
    with KernelWarmUp([("-c", "pass"), ("-c", "import time; time.sleep(1.5)")]) as slow:
        assert slow.wait(said.append, after=0.2)
    assert said == [NOTE] and [p.returncode for p in slow.procs] == [0, 0]
    # one that fails leaves the workers to compile: the run goes on
    with KernelWarmUp([("-c", "pass"), ("-c", "raise SystemExit(3)")]) as failing:
        assert not failing.wait(said.append)
    assert said == [NOTE]


# After the parts ran in processes of their own: what exercise() still compiles.
MISSES = """
import json
from numba.core.registry import CPUDispatcher
from bgdask.kernels import centroid, interp, pixels, stats, warm
warm.exercise()
print(json.dumps({m.__name__ + "." + name: sum(obj.stats.cache_misses.values())
                  for m in (stats, pixels, centroid, interp) for name, obj in vars(m).items()
                  if isinstance(obj, CPUDispatcher) and sum(obj.stats.cache_misses.values())}))
"""


@pytest.mark.slow
def test_the_parts_compile_every_kernel_of_the_warm_up(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    for part in PARTS:
        subprocess.run([sys.executable, "-m", "bgdask.kernels.warm", part], env=env, check=True, timeout=600)
    out = subprocess.run([sys.executable, "-c", MISSES], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {}, "exercise() compiled what the parts had not"
    # each part left its stamp beside the cache: the next command starts no warm-up process,
    # and one whose stamp is stale (another numba, say) is warmed up again
    stamps = sorted((tmp_path / "numba").rglob("bgdask-warm-*.json"))
    assert [p.name.split(".")[0] for p in stamps] == sorted(f"bgdask-warm-{part}" for part in PARTS), stamps
    assert run_warm_up(env) == []
    stale = json.loads(stamps[0].read_text())
    stamps[0].write_text(json.dumps({**stale, "numba": "0.0"}))
    assert run_warm_up(env) == [["-m", "bgdask.kernels.warm", stale["part"]]]


STARTED = """
import json
from bgdask._compat import numba_cache_dir
from bgdask.cluster import KernelWarmUp
from bgdask.kernels import stats
with KernelWarmUp() as warming:
    assert warming.wait()
print(json.dumps([p.args[1:] for p in warming.procs]))
"""


def run_warm_up(env) -> list:
    """The warm-up processes a command started (their arguments), in a process with ``env``."""
    out = subprocess.run([sys.executable, "-c", STARTED], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_a_stamp_holds_what_the_cache_depends_on():
    """The stamp the session's warm-up left here is stale for a process that
    compiles for another CPU, and holds each kernel source's time and size."""
    assert warm.is_warm("statistics") and warm.is_warm("others")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CPU_NAME": "generic"}
    code = "from bgdask.kernels import warm; print(warm.is_warm('statistics'), warm.is_warm('others'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False"], out.stdout + out.stderr[-2000:]
    path = warm.stamp_path("statistics")
    assert path.parent == Path(numba_cache_dir(stats._stats_kernel))
    assert path.name == f"bgdask-warm-statistics.py{sys.version_info.major}{sys.version_info.minor}.json"
    stamp = json.loads(path.read_text())
    kernels = Path(warm.__file__).parent
    assert stamp["sources"] == [[p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in sorted(kernels.glob("*.py"))]
    assert {"stats.py", "pixels.py", "centroid.py", "interp.py"} <= {name for name, _, _ in stamp["sources"]}


def test_local_workers_load_the_kernels_as_they_start():
    """With the kernels in numba's cache (the session's warm-up), a local
    worker loads them in a thread of its own as it starts, before any task."""
    import time

    from bgdask.cluster import ClusterOptions, connect

    assert all(warm.is_warm(part) for part in PARTS)
    with connect(ClusterOptions(workers=1, threads_per_worker=1, dashboard=False)) as client:
        deadline = time.monotonic() + 60
        while not all(client.run(lambda: __import__("bgdask.kernels.warm").kernels.warm._WARM).values()):
            assert time.monotonic() < deadline, "the worker did not load the kernels"
            time.sleep(0.1)
        loaded = client.run(lambda: sorted(__import__("sys").modules.keys() & {"bgdask.stages"}))
        assert all(mods == ["bgdask.stages"] for mods in loaded.values()), loaded


def test_workers_load_the_kernels_only_from_the_cache(monkeypatch):
    """The workers' loading never compiles: without every part's stamp it
    loads nothing (the first task compiles, as without it)."""
    from bgdask import _worker_preload

    calls = []
    monkeypatch.setattr(warm, "_WARM", False)
    monkeypatch.setattr(warm, "exercise", lambda part=None: calls.append(part))
    monkeypatch.setattr(warm, "is_warm", lambda part: part != "others")
    assert _worker_preload.load_kernels() is False and calls == []
    monkeypatch.setattr(warm, "is_warm", lambda part: True)
    assert _worker_preload.load_kernels() is True and calls == [None]
    assert _worker_preload.load_kernels() is True and calls == [None]   # once per process
