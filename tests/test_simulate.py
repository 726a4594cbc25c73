"""Tests of the synthetic-tract simulator (bgdask.simulate)."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from bgdask.geometry import Box, SkyMap
from bgdask.simulate import (
    BAD_VALUE,
    MASK_PLANES,
    SATURATION,
    SimulatedTract,
    CHAIN_OVERLAP,
    VisitTruth,
    load_truth,
    make_tract,
    simulate,
    tract_wcs,
    warp_filename,
    write_tract,
)

SMALL = dict(n_visits=3, num_patches=(3, 2), patch_inner=160, patch_border=12)


@pytest.fixture(scope="module")
def sim() -> SimulatedTract:
    return make_tract(seed=3)


def plane(warp, name: str) -> np.ndarray:
    """Boolean plane of ``warp`` by name (through the warp's own bit layout)."""
    return (warp.mask & (1 << warp.mask_planes[name])) != 0


def floats(values) -> tuple[float, ...]:
    """A WCS result (a tuple of 0-d arrays, or of floats) as a flat tuple of
    Python floats: pytest.approx compares flat sequences of numbers only
    (pytest 9 rejects nested ones), and each value must be a single number."""
    out = []
    for v in values:
        a = np.asarray(v, dtype=np.float64)
        assert a.size == 1, f"expected one number, got {v!r}"
        out.append(float(a.reshape(())))
    return tuple(out)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def warps_equal(a, b) -> bool:
    return (same_bits(a.image, b.image) and same_bits(a.mask, b.mask)
            and same_bits(a.variance, b.variance) and (a.x0, a.y0) == (b.x0, b.y0)
            and a.mask_planes == b.mask_planes)


# -- determinism ------------------------------------------------------------

def test_deterministic_for_a_seed():
    a, b = make_tract(seed=7, **SMALL), make_tract(seed=7, **SMALL)
    assert a.warps.keys() == b.warps.keys()
    assert all(warps_equal(a.warps[k], b.warps[k]) for k in a.warps)
    assert a.truth == b.truth


def test_different_seeds_differ():
    a, b = make_tract(seed=7, **SMALL), make_tract(seed=8, **SMALL)
    assert a.truth != b.truth
    common = a.warps.keys() & b.warps.keys()
    assert common
    assert not any(np.array_equal(a.warps[k].image, b.warps[k].image, equal_nan=True)
                   for k in common)


def test_more_visits_keep_the_first_ones():
    a = make_tract(seed=2, **{**SMALL, "n_visits": 2})
    b = make_tract(seed=2, **SMALL)
    assert set(a.warps) <= set(b.warps)
    assert all(warps_equal(a.warps[k], b.warps[k]) for k in a.warps)


# -- geometry and metadata --------------------------------------------------

def test_visits_and_truth(sim):
    assert sim.visits == [1000, 1001, 1002, 1003]
    assert set(sim.truth) == set(sim.visits)
    levels = [sim.truth[v].level for v in sim.visits]
    assert all(100 <= lv <= 200 for lv in levels)
    assert len(set(levels)) == len(levels)


def test_warps_have_their_patch_outer_box(sim):
    sm = sim.skymap
    assert (sm.width, sm.height) == (1200, 1200)
    for (visit, patch), w in sim.warps.items():
        assert w.box == sm.outer_box(patch)
        assert (w.x0, w.y0) == (sm.outer_box(patch).x0, sm.outer_box(patch).y0)
        assert (w.visit, w.patch, w.tract, w.band) == (visit, patch, 9813, "r")
        assert w.image.dtype == np.float32 and w.variance.dtype == np.float32
        assert w.mask.dtype == np.int32
        assert w.image.shape == w.mask.shape == w.variance.shape == w.box.shape
        assert set(w.mask_planes) == set(MASK_PLANES)
        # The celestial WCS is in the array's frame: one sky position per tract pixel.
        radec = floats(w.wcs.pixel_to_world_values(5 - w.x0 + sm.patch_border, 7 - w.y0 + sm.patch_border))
        radec0 = floats(tract_wcs(sm).pixel_to_world_values(5 + sm.patch_border, 7 + sm.patch_border))
        assert radec == pytest.approx(radec0, abs=1e-10)


def test_shared_pixels_of_a_visit_agree_exactly(sim):
    n_pairs = 0
    for visit in sim.visits:
        warps = [w for (v, _), w in sim.warps.items() if v == visit]
        for a, b in itertools.combinations(warps, 2):
            common = a.box.intersection(b.box)
            if common is None:
                continue
            cut = lambda w: (slice(common.y0 - w.y0, common.y1 - w.y0),  # noqa: E731
                             slice(common.x0 - w.x0, common.x1 - w.x0))
            for name in ("image", "mask", "variance"):
                pa, pb = getattr(a, name)[cut(a)], getattr(b, name)[cut(b)]
                assert same_bits(np.ascontiguousarray(pa), np.ascontiguousarray(pb))
            n_pairs += 1
    assert n_pairs > 20


def test_partial_visits_lack_some_patches(sim):
    patches = set(sim.skymap.patches)
    assert set(sim.patches_of(sim.visits[0])) == patches
    for v in sim.visits[1:]:
        have = set(sim.patches_of(v))
        assert have and have < patches
        for p in patches - have:  # an absent warp: the visit covers none of it
            assert not sim.footprint(v, sim.skymap.outer_box(p)).any()


def test_full_visits_cover_every_patch():
    s = make_tract(partial=False, **SMALL)
    for v in s.visits:
        assert s.patches_of(v) == s.skymap.patches
        for p in s.skymap.patches:
            box = s.skymap.outer_box(p)
            assert s.footprint(v, box, chip_gaps=False).all()
            assert s.footprint(v, box).mean() > 0.9  # chip gaps only


# -- masks ------------------------------------------------------------------

def test_mask_bits_differ_between_visits_but_mean_the_same(sim):
    layouts = [sim.mask_planes[v] for v in sim.visits]
    assert all(sorted(l.values()) == list(range(len(MASK_PLANES))) for l in layouts)
    assert len({tuple(sorted(l.items())) for l in layouts}) == len(layouts)
    for (visit, patch), w in sim.warps.items():
        assert w.mask_planes == sim.mask_planes[visit]
        box = w.box
        covered = sim.footprint(visit, box)
        assert np.array_equal(plane(w, "NO_DATA"), ~covered)
        assert not (w.mask[~covered] & ~(1 << w.mask_planes["NO_DATA"])).any()
        sat = plane(w, "SAT")
        assert np.all(w.image[sat] == np.float32(SATURATION))
        assert np.all(plane(w, "DETECTED")[sat])
        assert np.all(w.image[plane(w, "BAD")] == np.float32(BAD_VALUE))
        assert np.array_equal(plane(w, "CR"), plane(w, "INTRP"))
        # EDGE: a band inside the footprint boundary, not the whole footprint.
        edge = plane(w, "EDGE")
        assert not (edge & ~covered).any()
        assert edge.sum() < 0.2 * covered.sum()
    # Every kind of pixel occurs, under each visit's own bit numbers.
    for name in ("BAD", "SAT", "EDGE", "NO_DATA", "DETECTED", "CR"):
        assert any(plane(w, name).any() for w in sim.warps.values()), name
    for v in sim.visits:
        assert any(plane(w, "EDGE").any() and plane(w, "DETECTED").any()
                   for (vv, _), w in sim.warps.items() if vv == v)


def test_nan_exactly_where_no_data(sim):
    for w in sim.warps.values():
        nodata = plane(w, "NO_DATA")
        assert np.array_equal(np.isnan(w.image), nodata)
        assert np.array_equal(np.isnan(w.variance), nodata)
        assert np.isfinite(w.image[~nodata]).all() and np.isfinite(w.variance[~nodata]).all()
        assert (w.variance[~nodata] > 0).all()
    assert any(plane(w, "NO_DATA").any() for w in sim.warps.values())


# -- truth ------------------------------------------------------------------

def test_truth_matches_the_pixels(sim):
    sigma = sim.noise_sigma
    for (visit, patch), w in sim.warps.items():
        box = w.box
        clean = (w.mask == 0) & ~sim.source_mask(box, visit)
        n = int(clean.sum())
        if n < 1000:
            continue
        resid = w.image[clean].astype(np.float64) - sim.truth_sky(visit, box)[clean]
        assert abs(resid.mean()) < 4 * sigma / np.sqrt(n), (visit, patch)
        assert abs(resid.std() / sigma - 1) < 0.05, (visit, patch)
        assert np.allclose(w.variance[clean], sigma ** 2)
        # The sky varies by more than the noise floor: the test has teeth.
        other = sim.visits[(sim.visits.index(visit) + 1) % len(sim.visits)]
        wrong = w.image[clean] - sim.truth_sky(other, box)[clean]
        assert abs(wrong.mean()) > 10 * sigma / np.sqrt(n)


def test_truth_sky_formula(sim):
    t = sim.truth[1001]
    box = Box(100, 50, 7, 5)
    sky = sim.truth_sky(1001, box)
    assert sky.shape == (5, 7) and sky.dtype == np.float64
    u = 103 / 1200 - 0.5
    v = 52 / 1200 - 0.5
    expected = t.level + t.gx * u + t.gy * v + t.cxx * u * u + t.cyy * v * v + t.cxy * u * v
    assert sky[2, 3] == pytest.approx(expected, rel=1e-12)
    whole = sim.truth_sky(1001, sim.skymap.box)
    span = whole.max() - whole.min()
    assert 0.5 < span < 40  # gradients and curvature of a few nJy


def test_truth_offset_is_the_difference(sim):
    box = sim.skymap.outer_box(4)
    off = sim.truth_offset(1000, 1002, box)
    assert np.array_equal(off, sim.truth_sky(1000, box) - sim.truth_sky(1002, box))
    assert not np.any(sim.truth_offset(1001, 1001, box))


def test_without_sources_variance_is_flat():
    s = make_tract(sources=False, **SMALL)
    for w in s.warps.values():
        data = ~plane(w, "NO_DATA")
        assert np.all(w.variance[data] == np.float32(s.noise_sigma ** 2))
        assert not plane(w, "SAT").any() and not plane(w, "DETECTED").any()


# -- files ------------------------------------------------------------------

def _read_manifest(outdir: Path) -> list[dict]:
    with open(outdir / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("compress", [False, True])
def test_write_tract_round_trip(tmp_path, compress):
    from astropy.io import fits

    from bgdask.io.fits import read_warp

    s = make_tract(seed=5, **SMALL)
    out = write_tract(s, tmp_path / "tract", compress=compress)
    assert out == tmp_path / "tract"
    rows = _read_manifest(out)
    assert list(rows[0]) == ["visit", "patch", "tract", "path"]
    assert {(int(r["visit"]), int(r["patch"])) for r in rows} == set(s.warps)
    for r in rows:
        visit, patch = int(r["visit"]), int(r["patch"])
        assert int(r["tract"]) == 9813
        assert r["path"] == warp_filename(visit, patch, compress)
        path = out / r["path"]
        assert path.name.endswith(".fits.fz" if compress else ".fits")
        w = read_warp(path)
        ref = s.warps[(visit, patch)]
        assert warps_equal(w, ref), path
        assert (w.visit, w.patch, w.tract, w.band) == (visit, patch, 9813, "r")
        assert w.wcs is not None
        assert floats(w.wcs.pixel_to_world_values(3.0, 4.0)) == pytest.approx(
            floats(ref.wcs.pixel_to_world_values(3.0, 4.0)), abs=1e-10)
        header = fits.getheader(path, 0)
        assert header["LSST BUTLER DATAID VISIT"] == visit
        assert header["LSST BUTLER DATAID PATCH"] == patch
        assert header["LSST BUTLER DATAID TRACT"] == 9813
        assert header["LSST BUTLER DATAID BAND"] == "r"
    assert SkyMap.from_yaml(out / "skymap.yaml") == s.skymap

    skymap, truth, sigma = load_truth(out)
    assert skymap == s.skymap
    assert truth == s.truth
    assert sigma == s.noise_sigma
    d = json.loads((out / "truth.json").read_text())
    assert [e["visit"] for e in d["visits"]] == s.visits
    assert {e["visit"]: e["patches"] for e in d["visits"]} == {v: s.patches_of(v) for v in s.visits}


def test_simulate_writes_and_returns(tmp_path):
    s = simulate(tmp_path, seed=1, **SMALL)
    assert len(_read_manifest(tmp_path)) == len(s.warps)
    skymap, truth, sigma = load_truth(tmp_path / "truth.json")
    assert truth == s.truth and skymap == s.skymap


def test_load_truth_errors(tmp_path):
    from bgdask.errors import InputError

    with pytest.raises(InputError, match="not found"):
        load_truth(tmp_path)
    (tmp_path / "truth.json").write_text("{}")
    with pytest.raises(InputError, match="truth"):
        load_truth(tmp_path)


def test_visit_truth_sky_broadcasts():
    t = VisitTruth(1, 150.0, 4.0, -2.0, 1.0, 0.5, -1.0)
    x = np.arange(10.0)[None, :]
    y = np.arange(4.0)[:, None]
    assert t.sky(x, y, 10, 4).shape == (4, 10)
    assert t.sky(5, 2, 10, 4) == pytest.approx(150.0)


# -- options for the matching methods' tests --------------------------------

CHAIN = dict(n_visits=5, num_patches=(5, 2), patch_inner=192, patch_border=12, layout="chain",
             sources=False)


@pytest.fixture(scope="module")
def chain():
    return make_tract(seed=4, **CHAIN)


def test_chain_footprints_overlap_only_their_neighbours(chain):
    box = chain.skymap.box
    cover = {v: chain.footprint(v, box) for v in chain.visits}
    for i, u in enumerate(chain.visits):
        assert cover[u].any()
        for j, v in enumerate(chain.visits):
            shared = int((cover[u] & cover[v]).sum())
            if abs(i - j) == 1:
                # about CHAIN_OVERLAP of a footprint, and far more than a sliver
                assert shared > 0.5 * CHAIN_OVERLAP * min(cover[u].sum(), cover[v].sum())
            elif abs(i - j) >= 2:
                assert shared == 0, (u, v)
    # the first visit (a reference at one end) shares nothing with the third
    first, third = chain.visits[0], chain.visits[2]
    assert not (cover[first] & cover[third]).any()
    # the chain spans the tract: the first and last visits sit at its two ends
    xs = np.arange(box.width)
    assert xs[cover[first].any(axis=0)].min() < 0.1 * box.width
    assert xs[cover[chain.visits[-1]].any(axis=0)].max() > 0.9 * box.width


def test_chain_edges_run_through_superpixels(chain):
    """Footprint edges are oblique: some 128-pixel superpixels are partly covered."""
    cover = chain.footprint(chain.visits[1], chain.skymap.box, chip_gaps=False)
    ny, nx = cover.shape[0] // 128, cover.shape[1] // 128
    frac = cover[: ny * 128, : nx * 128].reshape(ny, 128, nx, 128).mean(axis=(1, 3))
    assert ((frac > 0.05) & (frac < 0.95)).sum() >= 4


@pytest.mark.parametrize("gs, cs", [(5.0, 1.0), (1.0, 0.0), (3.0, 0.5)])
def test_gradient_and_curvature_scales(gs, cs):
    a = make_tract(seed=2, **SMALL)
    b = make_tract(seed=2, gradient_scale=gs, curvature_scale=cs, **SMALL)
    assert a.warps.keys() == b.warps.keys()
    whole = a.skymap.box
    x, y = np.meshgrid(np.arange(whole.width), np.arange(whole.height))
    for v in a.visits:
        ta, tb = a.truth[v], b.truth[v]
        assert tb.level == ta.level
        for name, scale in (("gx", gs), ("gy", gs), ("cxx", cs), ("cyy", cs), ("cxy", cs)):
            assert getattr(tb, name) == pytest.approx(scale * getattr(ta, name), rel=1e-15, abs=0)
        # the sky's linear and quadratic parts scale as asked
        lin = lambda t: t.sky(x, y, whole.width, whole.height) - t.level  # noqa: E731
        u, w = x / whole.width - 0.5, y / whole.height - 0.5
        quad_a = ta.cxx * u * u + ta.cyy * w * w + ta.cxy * u * w
        assert np.allclose(lin(tb), gs * (lin(ta) - quad_a) + cs * quad_a, atol=1e-9)
    # only the sky changed: the footprints (hence NO_DATA) are the same
    for k in a.warps:
        assert np.array_equal(np.isnan(a.warps[k].image), np.isnan(b.warps[k].image))


def test_wide_chip_gaps_and_pitch():
    narrow = make_tract(seed=2, partial=False, **{**SMALL, "n_visits": 1})
    wide = make_tract(seed=2, partial=False, chip_pitch=60.0, gap_width=9.0, **{**SMALL, "n_visits": 1})
    box = narrow.skymap.box
    v = narrow.visits[0]
    assert wide.footprints[v].gap == 9.0 and wide.footprints[v].pitch == 60.0
    lost_narrow = 1 - narrow.footprint(v, box).mean()
    lost_wide = 1 - wide.footprint(v, box).mean()
    # gaps of width g every p pixels along two axes lose about 2 g / p
    assert lost_wide == pytest.approx(2 * 9.0 / 60.0, rel=0.25)
    pitch = min(box.width, box.height) / 4.0  # the default chip size
    assert lost_narrow == pytest.approx(2 * 3.0 / pitch, rel=0.25)
    for w in wide.warps.values():
        assert np.array_equal(np.isnan(w.image), plane(w, "NO_DATA"))


def test_step_visit_has_a_sharp_step_and_others_do_not_change(tmp_path):
    plain = make_tract(seed=6, **SMALL)
    step = make_tract(seed=6, step_visit=1001, step_amp=4.0, **SMALL)
    t = step.truth[1001]
    assert t.step_amp == 4.0 and t.step_x == round(step.footprints[1001].cx)
    for k, w in plain.warps.items():
        if k[0] != 1001:
            assert warps_equal(w, step.warps[k])
    box = step.skymap.box
    jump = step.truth_sky(1001, box) - plain.truth_sky(1001, box)
    xs = np.arange(box.width)[None, :]
    assert np.all(jump[:, xs[0] >= t.step_x] == 4.0)
    assert np.all(jump[:, xs[0] < t.step_x] == 0.0)
    # the pixels carry it (noise and sources are unchanged)
    for (v, p), w in step.warps.items():
        if v == 1001:
            d = w.image.astype(np.float64) - plain.warps[(v, p)].image
            ok = np.isfinite(d) & (w.image != np.float32(BAD_VALUE)) & (w.image != np.float32(SATURATION))
            expect = step.truth_sky(1001, w.box) - plain.truth_sky(1001, w.box)
            assert np.allclose(d[ok], expect[ok], atol=1e-3)
    # truth.json keeps the step; files without one read as before
    write_tract(step, tmp_path / "s")
    _, truth, _ = load_truth(tmp_path / "s")
    assert truth == step.truth
    d = json.loads((tmp_path / "s" / "truth.json").read_text())
    with_step = [e for e in d["visits"] if "step_amp" in e]
    assert [e["visit"] for e in with_step] == [1001]


def test_defaults_write_no_new_truth_fields():
    d = make_tract(seed=1, **SMALL).truth_dict()
    assert all(set(e) >= {"level", "gx"} and "step_amp" not in e for e in d["visits"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(layout="ring"), "layout"),
    (dict(gradient_scale=-1.0), "gradient_scale"),
    (dict(curvature_scale=float("nan")), "curvature_scale"),
    (dict(gap_width=-2.0), "gap_width"),
    (dict(chip_pitch=0.0), "chip_pitch"),
    (dict(step_visit=999), "step_visit"),
])
def test_bad_options(kwargs, match):
    from bgdask.errors import InputError

    with pytest.raises(InputError, match=match):
        make_tract(**{**SMALL, **kwargs})


def test_many_small_visits():
    """The tract of the "200 small visits" benchmarks, at a smaller count."""
    s = make_tract(n_visits=40, num_patches=2, patch_inner=128, patch_border=8, seed=0, sources=False)
    assert len(s.visits) == 40
    assert all(s.patches_of(v) for v in s.visits)
    # partial visits miss a patch; the full one covers all four
    assert len(s.patches_of(s.visits[0])) == 4
    assert all(len(s.patches_of(v)) < 4 for v in s.visits[1:])
