"""Offset error inside and outside the overlap with the reference, per extrapolation style.

    python docs/measure_extrapolation.py /tmp/bgdask-extrap

Simulates the tract of `bgdask demo` (seed 0) into the directory given, matches it
three times (scheduler="sync"), and compares each applied offset with the injected truth.
"""
import sys

import numpy as np
import xarray as xr

import bgdask
from bgdask.simulate import make_tract, write_tract



def errors(store, sim):
    """RMS of (applied offset - true offset) where the reference has data, and elsewhere."""
    ds = xr.open_zarr(store)
    ref = int(ds.attrs["reference_visit"])
    acc = {"overlap": [0.0, 0], "outside": [0.0, 0]}
    for (v, p), w in sim.warps.items():
        if v == ref:
            continue
        off = ds.image.sel(visit=v, patch=p).values[: w.height, : w.width].astype(np.float64) - w.image
        truth = sim.truth_offset(ref, v, w.box)
        refw = sim.warps.get((ref, p))
        inside = np.isfinite(refw.image) if refw is not None else np.zeros(w.image.shape, bool)
        ok = np.isfinite(off)
        for name, sel in (("overlap", ok & inside), ("outside", ok & ~inside)):
            acc[name][0] += float(np.sum((off[sel] - truth[sel]) ** 2)); acc[name][1] += int(sel.sum())
    return {k: np.sqrt(s / max(n, 1)) for k, (s, n) in acc.items()}

if __name__ == "__main__":
    sim = make_tract(n_visits=4, seed=0)   # the tract of `bgdask demo`
    d = write_tract(sim, sys.argv[1])
    for style in ("quadratic", "linear", "nearest"):
        out = f"{sys.argv[1]}/{style}.zarr"
        bgdask.match_backgrounds(d / "manifest.csv", out, bgdask.MatchConfig(extrapolation=style),
                                 scheduler="sync", overwrite=True)
        e = errors(out, sim)
        print(f"extrapolation={style:9s} RMS offset error: overlap {e['overlap']:.3f} nJy, outside {e['outside']:.3f} nJy")
