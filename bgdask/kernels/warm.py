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
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["PARTS", "exercise", "warm_up"]

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
        _ppoly_eval(np.zeros((2, 1, 1)), np.array([0.0, 1.0]), np.array([0.5]), np.empty((1, 1)))


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


#: What the command line says while it waits for the kernels to compile.
NOTE = "compiling bgdask's kernels once (after an install: up to a minute)"


if __name__ == "__main__":
    import sys

    exercise(*sys.argv[1:2])
