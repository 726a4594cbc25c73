"""The client compiles every kernel the workers run (bgdask.kernels.stats.warm_up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# In a fresh process (no other test has called a kernel yet): warm_up, then
# every compiled kernel of bgdask.kernels and the argument types it has.
PROBE = """
import importlib, json
from numba.core.registry import CPUDispatcher
from bgdask.kernels.stats import warm_up
warm_up()
out, calls = {}, {}
for name in ("stats", "pixels", "centroid", "interp"):
    module = importlib.import_module("bgdask.kernels." + name)
    for attr, obj in vars(module).items():
        if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
            out[name + "." + attr] = [[str(t) for t in sig] for sig in obj.signatures]
            calls[name + "." + attr] = [name + "." + n for n in obj.py_func.__code__.co_names]
print(json.dumps([out, calls]))
"""


def test_warm_up_compiles_every_kernel_for_the_types_the_stages_use():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kernels, calls = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(kernels) >= 10, sorted(kernels)
    # compiled: those called with types, and every kernel they call (compiled with them)
    compiled = {name for name, sigs in kernels.items() if sigs}
    todo = list(compiled)
    while todo:
        for callee in calls[todo.pop()]:
            if callee in kernels and callee not in compiled:
                compiled.add(callee)
                todo.append(callee)
    missing = sorted(set(kernels) - compiled)
    assert not missing, f"kernels warm_up leaves the workers to compile: {missing}"
    images = {sig[0] for sig in kernels["stats._stats_kernel"]}
    assert any("float32" in t for t in images) and any("float64" in t for t in images), images
    planes = {(sig[2], sig[4]) for sig in kernels["stats._bad_pixels"]}
    for dtype in ("float32", "float64"):
        assert any(dtype in image and dtype in variance for image, variance in planes), planes
