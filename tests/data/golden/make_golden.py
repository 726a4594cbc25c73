"""Make the golden checksums: what bgdask's stores hold for a fixed set of runs.

Run once from a given version of bgdask to record what it produces::

    python tests/data/golden/make_golden.py tests/data/golden/checksums.json

``tests/test_golden.py`` re-runs the same cases with the current code and
asserts every array of every store (decoded) and the attributes that define
a result are bitwise what was recorded. The cases are built here, from the
deterministic simulator, so the test needs nothing but this file and the
JSON it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

def digest(a) -> str:
    from bgdask.testing import _digest

    return _digest(a)


#: Per-visit columns that come out of a least-squares fit (the reference
#: choice's plane fit): their last bits depend on the BLAS numpy uses, so
#: their values are kept too and compared to 1e-12.
FITTED = ("ref_chi2", "ref_cost", "ref_variance")


def store_digests(path) -> dict:
    """sha256 of every array of the store (decoded) and its result attributes
    (:func:`bgdask.testing.store_digests`; the checksums were recorded with
    the same code, then inline in this script), and the values of FITTED."""
    import zarr

    from bgdask.testing import store_digests as digests

    out = digests(path)
    g = zarr.open_group(str(path), mode="r")
    out["values"] = {name: [float(x) for x in g[name][...]] for name in FITTED}
    return out


def write_warps(warps, outdir: Path) -> Path:
    """Write in-memory warps as afw FITS with a manifest; returns the manifest."""
    from bgdask.testing import write_warps as write

    return write(warps, outdir)


def cases():
    """(name, warps, skymap, config dict, chunk_rows, compress, source kind)."""
    from bgdask.simulate import make_tract

    demo = make_tract(n_visits=4, num_patches=(3, 3), patch_inner=400, patch_border=20, seed=0)
    small = make_tract(n_visits=3, num_patches=(2, 2), patch_inner=256, patch_border=16, seed=3)
    yield "demo_auto", demo.warps, demo.skymap, {}, None, False
    yield "small_auto_rows100", small.warps, small.skymap, {}, 100, False
    yield "small_ref_variants", small.warps, small.skymap, dict(
        ref_visit=small.visits[1], grid_statistic="MEAN", interpolation="NATURAL_SPLINE",
        do_smooth=True, extrapolation="linear", window_scale=1.0), 64, False
    yield "small_linear_bins", small.warps, small.skymap, dict(
        interpolation="LINEAR", x_bin=64, y_bin=96, binning=32, num_iter=5,
        undersample_style="REDUCE_INTERP_ORDER"), None, True
    yield "small_median_const", small.warps, small.skymap, dict(
        grid_statistic="MEDIAN", interpolation="NONE", extrapolation="nearest"), 200, False

    ref, other = small.visits[0], small.visits[1]
    two = {k: w for k, w in small.warps.items() if k[0] in (ref, other)}
    skip = dict(two)
    for (v, p), w in two.items():
        if v == other:
            w2 = dataclasses.replace(w, image=w.image.copy())
            w2.image[np.isfinite(two[(ref, p)].image)] = np.nan
            skip[(v, p)] = w2
    yield "skip_no_overlap", skip, small.skymap, dict(ref_visit=ref, on_no_overlap="skip"), None, False
    unusable = dict(small.warps)
    p = sorted(q for v, q in unusable if v == other)[0]
    unusable[(other, p)] = dataclasses.replace(unusable[(other, p)],
                                               image=np.full_like(unusable[(other, p)].image, np.nan))
    yield "unusable_warp", unusable, small.skymap, {}, None, False
    empty = dict(two)
    for key in [k for k in empty if k[0] == other]:
        empty[key] = dataclasses.replace(empty[key], image=np.full_like(empty[key].image, np.nan))
    yield "empty_visit", empty, small.skymap, dict(ref_visit=ref), None, False


def run_all() -> dict:
    from bgdask import MatchConfig, match_arrays, match_backgrounds

    out = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        for name, warps, skymap, cfg, rows, compress in cases():
            cfg = MatchConfig(**cfg)
            if compress:
                from bgdask.testing import write_warps as write

                manifest = write(warps, tmp / name, compress=True)
            else:
                manifest = write_warps(warps, tmp / name)
            store = tmp / f"{name}.zarr"
            match_backgrounds(manifest, store, cfg, skymap=skymap, scheduler="sync", chunk_rows=rows)
            out[name] = store_digests(store)
            # the serial driver on the same warps
            res = match_arrays(warps, skymap, cfg, chunk_rows=rows)
            out[name]["serial"] = {f"{v},{p}": digest(np.stack([m.image, m.variance]).view(np.uint32))
                                   + digest(m.mask) for (v, p), m in ((k, res.warp(*k)) for k in res.keys())}
            if name == "demo_auto":
                # a store as the input of another run
                again = tmp / "from_store.zarr"
                match_backgrounds(store, again, MatchConfig(ref_visit=int(res.reference_visit)),
                                  scheduler="sync")
                out["from_store"] = store_digests(again)
    return out


if __name__ == "__main__":
    result = run_all()
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {sys.argv[1]}: {len(result)} cases")
