"""The quality of a match (bgdask.quality, issue 15): residual ratios, flags,
the extrapolated fraction, the cross-validated fit_rms, the seam map, and
``bgdask inspect --strict``."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import zarr

import bgdask
from bgdask import MatchConfig, match_arrays
from bgdask.errors import EXIT_FLAGGED
from bgdask.simulate import make_tract
from bgdask.table import SEAM_PLANES
from bgdask.testing import simpler_skies, with_step

#: 4 visits on 2 x 2 patches of 256 pixels; visit 1000 covers the whole tract.
TRACT = dict(n_visits=4, num_patches=(2, 2), patch_inner=256, patch_border=16, seed=3)


@pytest.fixture(scope="module")
def sim():
    return make_tract(**TRACT)


@pytest.fixture(scope="module")
def flat(sim):
    """The tract with every visit's sky reduced to its level: a model follows
    the differences exactly, so a visit is matched to the noise."""
    return simpler_skies(sim, "flat")


@pytest.fixture(scope="module")
def flat_result(sim, flat):
    return match_arrays(flat, sim.skymap)


def _matched(result):
    t = result.table
    return t[t["status"] == "matched"]


def test_ratio_is_near_one_when_matched_to_the_noise(flat_result):
    """Measured: 0.57, 0.36 and 0.84 here; 0.43 to 1.16 (median 0.76) on 8
    tracts of 3 x 3 patches (benchmarks/bench_quality.py ratios). Below 1
    rather than above: the model is made of the same pixels' noise."""
    ratio = _matched(flat_result)["match_ratio"]
    assert len(ratio) == 3 and ratio.between(0.3, 1.5).all(), ratio
    assert not flat_result.table["flagged"].any()
    # the reference and visits without overlap have no ratio
    ref = flat_result.reference_visit
    assert np.isnan(flat_result.table.loc[ref, "match_ratio"])


def test_noise_comes_from_the_variance_planes(sim, flat, flat_result):
    """Variance planes 4 times larger predict twice the noise: the residual
    (from the pixels) stays, match_noise doubles, the ratio halves."""
    loud = {k: dataclasses.replace(w, variance=w.variance * 4) for k, w in flat.items()}
    res = match_arrays(loud, sim.skymap)
    a, b = _matched(flat_result), _matched(res)
    np.testing.assert_array_equal(a["match_rms"], b["match_rms"])
    np.testing.assert_allclose(b["match_noise"], 2 * a["match_noise"], rtol=1e-6)
    np.testing.assert_allclose(b["match_ratio"], a["match_ratio"] / 2, rtol=1e-6)


def test_a_sharp_step_is_flagged_and_the_others_are_not(sim):
    """20 nJy added to one visit's sky right of a vertical line: no smooth
    model follows it. The default threshold flags it, not the others (their
    skies as simulated: gradients and curvature)."""
    plain = match_arrays(sim.warps, sim.skymap)
    ref = plain.reference_visit
    stepped = next(v for v in sim.visits if v != ref)
    res = match_arrays(with_step(sim, sim.warps, stepped, 20.0), sim.skymap, MatchConfig(ref_visit=ref))
    t = res.table
    assert t.loc[stepped, "flagged"] and t.loc[stepped, "match_ratio"] > 2 * MatchConfig().max_match_ratio
    assert not t.drop(index=stepped)["flagged"].any()
    assert t.drop(index=stepped)["match_ratio"].max() < MatchConfig().max_match_ratio
    # the other visits' figures do not change: each is measured against the reference alone
    for col in ("match_rms", "match_noise", "fit_rms", "extrap_frac"):
        np.testing.assert_array_equal(t.drop(index=stepped)[col], plain.table.drop(index=stepped)[col])
    # the cross-validated fit_rms sees the step too
    assert t.loc[stepped, "fit_rms"] > 3 * t.drop(index=stepped)["fit_rms"].max()


def test_fit_rms_is_no_longer_zero(flat_result, sim):
    res = match_arrays(sim.warps, sim.skymap)
    for r in (flat_result, res):
        fit = _matched(r)["fit_rms"]
        assert (fit > 0).all() and np.isfinite(fit).all(), fit
        assert r.table.loc[r.reference_visit, "fit_rms"] == 0


def _expected_extrap(warps, sim, visit: int, ref: int) -> float:
    """The share of ``visit``'s usable pixels (patches' inner boxes) in the
    128-pixel bins where it shares fewer than min_frac * 128**2 usable pixels
    with ``ref``, counted here pixel by pixel."""
    from bgdask.masks import plane_bits

    cfg = MatchConfig()
    h, w = sim.skymap.height, sim.skymap.width
    ny, nx = h // cfg.y_bin, w // cfg.x_bin
    n_visit, n_both = np.zeros((ny, nx)), np.zeros((ny, nx))

    def bad(warp):
        return ~np.isfinite(warp.image) | ((warp.mask & plane_bits(warp.mask_planes, cfg.bad_mask_planes)) != 0)

    for (v, p), warp in warps.items():
        if v != visit:
            continue
        part = warp.box.intersection(sim.skymap.inner_box(p))
        sl = (slice(part.y0 - warp.box.y0, part.y1 - warp.box.y0), slice(part.x0 - warp.box.x0, part.x1 - warp.box.x0))
        ok = ~bad(warp)[sl]
        r = warps.get((ref, p))
        both = ok & ~bad(r)[sl] if r is not None else np.zeros_like(ok)
        for y in range(part.y0, part.y1):
            iy = min(y // cfg.y_bin, ny - 1)
            ix = np.minimum(np.arange(part.x0, part.x1) // cfg.x_bin, nx - 1)
            np.add.at(n_visit[iy], ix, ok[y - part.y0])
            np.add.at(n_both[iy], ix, both[y - part.y0])
    return float(n_visit[n_both < cfg.good_pixel_threshold].sum() / n_visit.sum())


def test_extrapolated_fraction(sim, flat):
    """extrap_frac: the share of a visit's usable pixels in superpixel bins it
    shares (almost) nothing of with the reference; with the reference's right
    half removed, about the share of the visit right of the middle (a bin edge)."""
    ref = sim.visits[0]                       # covers the whole tract
    half = sim.skymap.width // 2
    cut = dict(flat)
    for (v, p), w in flat.items():
        if v == ref:
            x = np.arange(w.box.x0, w.box.x1)[None, :]
            gone = np.broadcast_to(x >= half, w.image.shape)
            cut[(v, p)] = dataclasses.replace(w, image=np.where(gone, np.nan, w.image).astype(np.float32),
                                              variance=np.where(gone, np.nan, w.variance).astype(np.float32))
    res = match_arrays(cut, sim.skymap, MatchConfig(ref_visit=ref))
    full = match_arrays(flat, sim.skymap, MatchConfig(ref_visit=ref))
    assert res.table.loc[ref, "extrap_frac"] == 0 == full.table.loc[ref, "extrap_frac"]
    for v in sim.visits[1:]:
        assert full.table.loc[v, "extrap_frac"] == pytest.approx(_expected_extrap(flat, sim, v, ref), abs=1e-12)
        assert full.table.loc[v, "extrap_frac"] < 0.05, v     # edge bins it covers a sliver of
        got = res.table.loc[v, "extrap_frac"]
        assert got == pytest.approx(_expected_extrap(cut, sim, v, ref), abs=1e-12), v
        right = sum(int(np.isfinite(w.image[:, max(0, half - w.box.x0):]).sum()) for (vv, _), w in flat.items()
                    if vv == v) / sum(int(np.isfinite(w.image).sum()) for (vv, _), w in flat.items() if vv == v)
        assert 0.2 < got and abs(got - right) < 0.1, (v, got, right)


def test_seam_map(sim):
    res = match_arrays(sim.warps, sim.skymap)
    before, after = res.seam["before"], res.seam["after"]
    ny, nx = res.models[sim.visits[0]].model.shape
    assert before.shape == after.shape == (ny, nx)
    both = np.isfinite(before) & np.isfinite(after)
    assert both.sum() >= 0.5 * ny * nx
    assert np.nanmedian(after) < 0.1 * np.nanmedian(before)
    assert (after[both] < before[both]).mean() > 0.9
    # NaN exactly where fewer than two visits have a level (here: visit 1000 alone, or nobody)
    assert np.array_equal(np.isnan(before), np.isnan(after))


def test_quality_does_not_depend_much_on_the_row_blocks(sim, flat, flat_result):
    """Stage C measures per row block: a window cut by a block's edge is
    measured in pieces (as across patches). 64-row blocks instead of whole
    warps change the ratios by a few percent (measured: at most 4%)."""
    res = match_arrays(flat, sim.skymap, chunk_rows=64)
    a, b = _matched(flat_result)["match_ratio"], _matched(res)["match_ratio"]
    np.testing.assert_allclose(b, a, rtol=0.1)
    assert not np.array_equal(a, b)          # the pieces do differ


# -- the store and bgdask inspect ------------------------------------------------------

def test_store_holds_the_quality(sync_store):
    result, store = sync_store
    g = zarr.open_group(str(store), mode="r")
    assert g["seam"].shape[0] == len(SEAM_PLANES) and g["seam"].attrs["planes"] == list(SEAM_PLANES)
    for i, plane in enumerate(SEAM_PLANES):
        np.testing.assert_array_equal(g["seam"][i], result.seam[plane])
    for col in ("match_rms", "match_noise", "match_ratio", "extrap_frac", "flagged"):
        np.testing.assert_array_equal(g[col][:], result.table[col].to_numpy())


@pytest.fixture(scope="module")
def flagged_store(small_tract, tmp_path_factory):
    """The small tract with a threshold every matched visit exceeds."""
    out = tmp_path_factory.mktemp("flagged") / "out.zarr"
    result = bgdask.match_backgrounds(small_tract / "manifest.csv", out, MatchConfig(max_match_ratio=0.01),
                                      scheduler="sync")
    return result, out


def test_inspect_lists_flagged_visits_and_strict_exits_3(flagged_store, sync_store, cli):
    assert EXIT_FLAGGED == 3
    result, store = flagged_store
    flagged = [int(v) for v in result.table.index[result.table["flagged"]]]
    assert flagged == sorted(v for v in result.table.index if v != result.reference_visit)
    rc, out, _ = cli("inspect", store)
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("flagged:"))
    assert f"{len(flagged)} visit(s)" in line and all(str(v) in line for v in flagged)
    rc, out, _ = cli("inspect", store, "--strict")
    assert rc == EXIT_FLAGGED and "complete: yes" in out
    # nothing flagged: --strict exits 0
    _, ok_store = sync_store
    rc, out, _ = cli("inspect", ok_store, "--strict")
    assert rc == 0 and "flagged: none" in out


def test_inspect_strict_of_an_incomplete_store_exits_1(flagged_store, tmp_path, cli):
    import shutil

    _, store = flagged_store
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    g = zarr.open_group(str(copy), mode="r+")
    vi, pi = (int(i[0]) for i in np.nonzero(g["present"][:]))
    g["done"][vi, pi] = False
    g.attrs["complete"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(copy))
    rc, out, _ = cli("inspect", copy, "--strict")
    assert rc == 1 and "complete: NO" in out
