"""Helpers for testing code that uses bgdask (in the spirit of ``xarray.testing``).

* :func:`store_digests`, :func:`assert_stores_equal`: two stores hold bitwise
  the same result (every array decoded, and the attributes that define it);
* :func:`assert_matched_equal`: a lazy or in-memory ``matched`` Dataset
  equals a store's pixels, warp by warp;
* :func:`tiny_tract`: a small simulated tract written as afw FITS;
  :func:`write_warps`: any in-memory warps written so;
* :func:`simpler_skies`, :func:`with_step`: a simulated tract's warps with
  flat or linear skies, or with a sharp step added to one visit's sky;
* :class:`CountComputes`: count the tasks Dask runs, by key prefix (to show
  that something stayed lazy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RESULT_ATTRS", "RUN_ATTRS", "store_digests", "assert_stores_equal", "assert_matched_equal",
           "tiny_tract", "write_warps", "simpler_skies", "with_step", "CountComputes"]

#: Store attributes that are part of a result (the others record where, when and how fast it ran).
RESULT_ATTRS = ("reference_visit", "config", "skymap", "mask_planes", "complete", "models_done")


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:32]


def store_digests(path) -> dict[str, Any]:
    """A sha256 of every array of the store (decoded) and its result attributes."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    out: dict[str, Any] = {"arrays": {}, "attrs": {}}
    for name, arr in sorted(g.arrays()):
        out["arrays"][name] = _digest(arr[...])
    for k in RESULT_ATTRS:
        v = g.attrs.get(k)
        if isinstance(v, str) and v[:1] in "{[":
            v = json.loads(v)
        out["attrs"][k] = v
    return out


#: Attributes that legitimately differ between two runs of the same inputs.
RUN_ATTRS = ("stage_times", "performance_report")


def assert_stores_equal(got, want, *, ignore_attrs: tuple[str, ...] = RUN_ATTRS) -> None:
    """Every array of the two stores bitwise equal (NaN payloads included) and
    every attribute but ``ignore_attrs`` (timings, by default) equal."""
    import zarr

    a, b = zarr.open_group(str(got), mode="r"), zarr.open_group(str(want), mode="r")
    names_a, names_b = sorted(n for n, _ in a.arrays()), sorted(n for n, _ in b.arrays())
    assert names_a == names_b, f"arrays differ: {names_a} vs {names_b}"
    for name in names_b:
        x, y = np.asarray(a[name][...]), np.asarray(b[name][...])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.tobytes() != y.tobytes():
            with np.errstate(invalid="ignore"):
                same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else (x == y)
            where = np.argwhere(~same)
            first = tuple(int(i) for i in where[0]) if len(where) else "? (NaN payloads)"
            raise AssertionError(f"{name}: {len(where)} elements of {got} differ from {want}, first at {first}")
    attrs_a = {k: v for k, v in a.attrs.items() if k not in ignore_attrs}
    attrs_b = {k: v for k, v in b.attrs.items() if k not in ignore_attrs}
    assert attrs_a == attrs_b, f"attributes differ: {attrs_a} != {attrs_b}"


def assert_matched_equal(matched, store) -> None:
    """The matched warps of a Dataset (``MatchResult.matched``) equal those of
    a store, bitwise, on every present warp's box."""
    from .io.store import Store

    st = Store.open(store)
    for v, p in st.keys():
        src = st.warp_source(v, p)
        box = src.box
        sel = matched.sel(visit=v, patch=p)
        for plane in ("image", "mask", "variance"):
            got = np.asarray(sel[plane].values)[: box.height, : box.width]
            want = src.read(plane)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), \
                f"{plane} of warp (visit {v}, patch {p}) differs from the store's"


def tiny_tract(outdir, *, n_visits: int = 3, num_patches=(2, 2), patch_inner: int = 256, patch_border: int = 16,
               seed: int = 3, **kwargs):
    """A small simulated tract (:func:`bgdask.simulate.make_tract`) written as
    afw FITS under ``outdir`` (``manifest.csv``, ``skymap.yaml``, ``truth.json``,
    ``warps/``). Returns (the simulation, ``outdir``)."""
    from .simulate import make_tract, write_tract

    sim = make_tract(n_visits=n_visits, num_patches=num_patches, patch_inner=patch_inner,
                     patch_border=patch_border, seed=seed, **kwargs)
    return sim, write_tract(sim, Path(outdir))


def write_warps(warps, outdir, *, compress: bool = False) -> Path:
    """Write in-memory warps ((visit, patch) -> :class:`~bgdask.io.warp.Warp`)
    as afw FITS under ``outdir`` with a manifest; returns the manifest's path."""
    import csv

    from .io.fits import write_warp

    outdir = Path(outdir)
    rows = []
    for (v, p), w in sorted(warps.items()):
        rel = f"warps/{v}/warp_{v}_{p}.fits" + (".fz" if compress else "")
        (outdir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_warp(outdir / rel, w, overwrite=True, compress=compress)
        rows.append((v, p, rel))
    with open(outdir / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("visit", "patch", "path"), *rows])
    return outdir / "manifest.csv"


def simpler_skies(sim, kind: str) -> dict:
    """The warps of a simulated tract (:func:`bgdask.simulate.make_tract`)
    with each visit's sky reduced to its level (``kind="flat"``: a difference
    model follows the differences exactly) or to its level and gradients
    (``"linear"``); the noise, sources and masks are unchanged."""
    import dataclasses

    if kind not in ("flat", "linear"):
        raise ValueError(f"kind must be 'flat' or 'linear', not {kind!r}")
    width, height = sim.skymap.width, sim.skymap.height
    out = {}
    for (v, p), w in sim.warps.items():
        t = sim.truth[v]
        keep = dataclasses.replace(t, cxx=0.0, cyy=0.0, cxy=0.0)
        if kind == "flat":
            keep = dataclasses.replace(keep, gx=0.0, gy=0.0)
        x = np.arange(w.box.x0, w.box.x1, dtype=np.float64)[None, :]
        y = np.arange(w.box.y0, w.box.y1, dtype=np.float64)[:, None]
        extra = t.sky(x, y, width, height) - keep.sky(x, y, width, height)
        out[(v, p)] = dataclasses.replace(w, image=(w.image - extra).astype(np.float32))
    return out


def with_step(sim, warps, visit: int, amplitude: float) -> dict:
    """``warps`` with ``amplitude`` (nJy) added to ``visit``'s sky right of
    the vertical line through its footprint's centre: a structure no smooth
    model follows."""
    import dataclasses

    x_step = int(sim.footprints[visit].cx)
    out = dict(warps)
    for (v, p), w in warps.items():
        if v == visit:
            x = np.arange(w.box.x0, w.box.x1)[None, :]
            out[(v, p)] = dataclasses.replace(
                w, image=(w.image + np.where(x >= x_step, amplitude, 0.0)).astype(np.float32))
    return out


class CountComputes:
    """A Dask callback (local schedulers) counting the tasks run whose key
    name starts with one of ``prefixes``::

        with CountComputes("bgdask-c") as n:
            result = bgdask.match(ds, scheduler="sync")
        assert n.count == 0
    """

    def __init__(self, *prefixes: str):
        self.prefixes = prefixes
        self.count = 0
        self._cb = None

    def __enter__(self) -> "CountComputes":
        from dask.callbacks import Callback

        def pretask(key, dsk, state):
            name = key[0] if isinstance(key, tuple) else key
            if str(name).startswith(self.prefixes):
                self.count += 1

        self._cb = Callback(pretask=pretask)
        self._cb.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._cb.__exit__(*exc)
