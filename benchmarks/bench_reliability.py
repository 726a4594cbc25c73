"""What issue 19's safeguards cost: checksums in stage C, reading the
variance in stages A and B, the store lock, and verifying a store.

    python benchmarks/bench_reliability.py [--visits 4] [--patches 3] [--size 1000] [--repeat 3]

Runs on the synchronous scheduler (one thread: CPU time without a cluster's
noise), best of ``--repeat``, on a simulated tract written as afw FITS:

* stage C with the per-block CRC-32 checksums, and with them replaced by a
  constant (the rest of the run identical);
* stages A and B reading image, mask and variance (variance <= 0 is bad),
  and reading image and mask only (the variance check removed);
* the lock: one acquire and release; a whole run with dask config
  ``bgdask.store-lock`` true and false;
* ``Store.verify()`` of the whole store (what ``inspect --verify`` and
  ``--resume`` read), next to stage C.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import dask
import numpy as np


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visits", type=int, default=4)
    ap.add_argument("--patches", type=int, default=3)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import bgdask.io.store as store_mod
    import bgdask.stages as stages
    from bgdask import match_backgrounds
    from bgdask.io.store import Store
    from bgdask.kernels.stats import bad_pixels
    from bgdask.kernels.warm import warm_up
    from bgdask.testing import tiny_tract

    warm_up()
    tmp = Path(tempfile.mkdtemp(prefix="bgdask-bench-rel-"))
    try:
        sim, tract = tiny_tract(tmp / "tract", n_visits=args.visits, num_patches=(args.patches, args.patches),
                                patch_inner=args.size, patch_border=20, seed=0)
        manifest = tract / "manifest.csv"
        n_warps = len(sim.warps)
        print(f"tract: {n_warps} warps of up to {args.size + 40} x {args.size + 40} pixels, "
              f"{args.visits} visits; sync scheduler, best of {args.repeat}")

        a = np.random.default_rng(0).standard_normal((1024, 4200)).astype(np.float32)
        t, _ = best(lambda: zlib.crc32(memoryview(a).cast("B")), 5)
        print(f"crc32: {a.nbytes / t / 1e9:.2f} GB/s ({a.nbytes / 1e6:.1f} MB in {t * 1e3:.1f} ms)")

        def run(out, **kw):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return match_backgrounds(manifest, out, scheduler="sync", overwrite=True, **kw)

        # -- stage C with and without checksums
        out = tmp / "out.zarr"
        original_crc = store_mod.block_crc
        results = {}
        for label, crc in (("with checksums", original_crc), ("without checksums", lambda block, fill: 0)):
            store_mod.block_crc = crc
            try:
                stage_c = []
                for _ in range(args.repeat):
                    stage_c.append(run(out).timings["stage C"])
            finally:
                store_mod.block_crc = original_crc
            results[label] = min(stage_c)
            print(f"stage C {label}: best {min(stage_c):.2f} s ({', '.join(f'{x:.2f}' for x in stage_c)})")
        ratio = results["with checksums"] / results["without checksums"]
        print(f"checksums cost stage C {100 * (ratio - 1):+.1f}%")

        # -- stages A and B with and without reading the variance
        original = stages._image_and_bad

        def without_variance(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bits, notes=True):
            # stages._planes_and_bad without reading or testing the variance
            image = stages._whole(image_blocks, box, y_starts)
            spec = stages._one_source(mask_blocks)
            if spec is not None:
                bad, unnamed = stages._raw_bad(spec, 0, box.height, bits, image, None)
            else:
                mask, unnamed = stages._whole_mask(mask_blocks, box, y_starts)
                bad = bad_pixels(mask, bits.target, image)
            return image, bad, (key, unnamed, 0)

        ab = {}
        for label, fn in (("reading the variance", original), ("image and mask only", without_variance)):
            stages._image_and_bad = fn
            try:
                times = []
                for _ in range(args.repeat):
                    t = run(out).timings
                    times.append(t["stage A"] + t["stage B"])
            finally:
                stages._image_and_bad = original
            ab[label] = min(times)
            print(f"stages A + B {label}: best {min(times):.2f} s ({', '.join(f'{x:.2f}' for x in times)})")
        print(f"reading the variance costs stages A + B "
              f"{100 * (ab['reading the variance'] / ab['image and mask only'] - 1):+.1f}%")

        # -- the lock
        t, _ = best(lambda: Store.lock(tmp / "locked.zarr").release(), 20)
        print(f"lock: acquire + release {t * 1e6:.0f} us")
        whole = {}
        for flag in (True, False):
            with dask.config.set({"bgdask.store-lock": flag}):
                whole[flag], times = best(lambda: run(out), args.repeat)
            print(f"whole run, store-lock {str(flag).lower()}: best {whole[flag]:.2f} s "
                  f"({', '.join(f'{x:.2f}' for x in times)})")

        # -- verification
        t, times = best(lambda: Store.open(out).verify(), args.repeat)
        print(f"verify the whole store ({n_warps} warps): best {t:.2f} s, "
              f"{t / results['with checksums']:.2f}x stage C")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
