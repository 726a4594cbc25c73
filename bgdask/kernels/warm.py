"""Every compiled kernel, compiled once for the argument types the stages give it.

numba compiles a kernel at its first call and keeps the machine code in its
on-disk cache (``__pycache__`` beside the sources, or ``NUMBA_CACHE_DIR``),
which later processes load in milliseconds. After an install the cache is
empty: without a warm-up every Dask worker would compile the same kernels at
once, each for a minute on a small machine.

* :func:`exercise` calls each kernel on tiny arrays with every argument type
  the stages use (float32 and float64 images and variances, whole and sliced
  masks), so that nothing is left for a worker to compile; ``tests/test_warm_up.py``
  checks that a whole run compiles nothing more.
* :func:`warm_up` does it once in this process.
* ``python -m bgdask.kernels.warm [PART]`` does it (for one of :data:`PARTS`)
  in a process of its own: the command line starts one per part first
  thing, so the compiling overlaps reading the inputs and starting the
  cluster, uses two cores where there are, and does not hold this process's
  GIL while the scheduler runs in it (:class:`bgdask.cluster.KernelWarmUp`).
  When it has run a part, it leaves a stamp beside numba's cache
  (``bgdask-warm-PART.py3XX.json``): :func:`is_warm` then tells the next command
  that the part is cached for this machine, numba and source files, and it
  starts no process for it. A stamp that lies costs time, never results:
  the workers compile what is missing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from pathlib import Path

import numpy as np

__all__ = ["PARTS", "exercise", "warm_up", "is_warm", "stamp_path"]

_LOCK = threading.Lock()
_WARM = False


#: The kernels in two parts that compile apart (each part's kernels share
#: inner kernels): the statistics kernel for both image types, and the others.
PARTS = ("statistics", "others")


def exercise(part: str | None = None) -> None:
    """Call every compiled kernel a worker runs (or those of one of
    :data:`PARTS`), with each argument type the stages give it, on tiny arrays."""
    from .centroid import window_sums
    from .interp import _ppoly_eval
    from .pixels import bin_counts, bit_tables, remap_bits
    from .stats import bad_pixels, superpixel_stats

    if part not in (None, *PARTS):
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    images = [np.zeros((4, 4), dtype=dtype) for dtype in (np.float32, np.float64)]
    bad = np.zeros((4, 4), dtype=np.bool_)
    if part in (None, "statistics"):
        for image in images:
            superpixel_stats(image, bad, 0, 0, (2, 2), 2, 2)
    if part in (None, "others"):
        mask = np.zeros((4, 4), np.int32)
        remap_bits(mask, bit_tables([(0, 1)]))
        for image in images:
            for var_dtype in (np.float32, np.float64):
                bad_pixels(mask, 1, image, np.ones((4, 4), dtype=var_dtype))
            window_sums(image, bad, 0, 0, (2, 2), 2, 2)
            window_sums(image, bad, 0, 0, (2, 2), 2, 2, plane=np.ones((4, 4)))
        bins = np.zeros(4, np.int64)
        for sub in (bad, bad[1:, 1:]):       # a whole mask, and a warp's inner box (a slice)
            bin_counts(sub, sub, bins[:sub.shape[0]], bins[:sub.shape[1]], (1, 1))
            bin_counts(sub, None, bins[:sub.shape[0]], bins[:sub.shape[1]], (1, 1))
        _ppoly_eval(np.zeros((2, 1, 1)), np.array([0.0, 1.0]), np.array([0.5]), 0, np.empty((1, 1)))


def warm_up(announce=None, after: float = 3.0) -> None:
    """Compile every kernel the workers run, or load it from numba's cache,
    once per process (later calls return at once; thread-safe).

    ``announce(text)`` is called if the call is still running after
    ``after`` seconds (that is, compiling)."""
    global _WARM
    with _LOCK:
        if _WARM:
            return
        timer = None
        if announce is not None:
            timer = threading.Timer(after, announce, (NOTE,))
            timer.daemon = True
            timer.start()
        try:
            exercise()
        finally:
            if timer is not None:
                timer.cancel()
        _WARM = True


def stamp_path(part: str) -> Path | None:
    """Where the stamp of ``part`` goes: numba's cache directory of the
    kernels (None if numba keeps none)."""
    from .._compat import numba_cache_dir
    from .stats import _stats_kernel

    where = numba_cache_dir(_stats_kernel)
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"   # as numba tags its files: one stamp per Python
    return None if where is None else Path(where) / f"bgdask-warm-{part}.{tag}.json"


def _fingerprint(part: str) -> dict:
    """What a cached part depends on: what numba keys its cache with (the
    Python and numba versions, the target and CPU it compiles for, each
    source file's modification time and size) and the part."""
    import numba

    from .._compat import numba_cache_key

    sources = sorted(Path(__file__).parent.glob("*.py"))
    return {
        "part": part,
        "python": sys.version,
        "numba": numba.__version__,
        "target": numba_cache_key(),
        "sources": [[p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in sources],
    }


def is_warm(part: str) -> bool:
    """True if ``python -m bgdask.kernels.warm PART`` has run for these
    sources, this numba and this CPU (its stamp says so). False when in
    doubt (no stamp, an unreadable one, an error working it out)."""
    try:
        path = stamp_path(part)
        return path is not None and json.loads(path.read_text()) == _fingerprint(part)
    except Exception:  # noqa: BLE001 - only time is at stake: warm up
        return False


def _stamp(part: str) -> None:
    """Leave the stamp of ``part`` (nothing if that fails, e.g. a cache
    directory this process cannot write)."""
    tmp = None
    try:
        path = stamp_path(part)
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")   # unique, even in a cache hosts share
        tmp.write_text(json.dumps(_fingerprint(part)))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - only time is at stake: the next command warms up again
        if tmp is not None:
            tmp.unlink(missing_ok=True)


#: What the command line says while it waits for the kernels to compile.
NOTE = "compiling bgdask's kernels once (after an install: up to a minute)"


if __name__ == "__main__":
    parts = sys.argv[1:2] or list(PARTS)
    exercise(*sys.argv[1:2])
    for name in parts:
        _stamp(name)
