"""The matching algorithm end to end on in-memory warps (the serial driver)."""

import dataclasses
import warnings

import numpy as np
import pytest

from bgdask.background import Accumulator, StatsImage, offset_rows, stats_image, tree_reduce
from bgdask.config import MatchConfig
from bgdask.errors import ModelError
from bgdask import UnusableWarpWarning, match_arrays
from bgdask.reference import choose_reference, reference_criteria
from bgdask.simulate import offset_error


@pytest.mark.parametrize("auto", [False, True])
def test_offsets_match_the_truth(demo_sim, auto):
    ref = None if auto else demo_sim.visits[1]
    res = match_arrays(demo_sim.warps, demo_sim.skymap, MatchConfig(ref_visit=ref))
    if not auto:
        assert res.reference_visit == demo_sim.visits[1]
    err, rms = offset_error(demo_sim, res.reference_visit, lambda v, p: res.warp(v, p).image)
    # the noise floor of a superpixel difference: sqrt(2) sigma / sqrt(pixels in a 256 x 256 window)
    floor = np.sqrt(2) * demo_sim.noise_sigma / 256
    print(f"\noffset RMS error {err:.4f} nJy = {100 * err / rms:.3f}% of the injected offsets' RMS "
          f"{rms:.2f} nJy; {err / floor:.1f} x the noise floor {floor:.4f} nJy")
    assert err <= 0.01 * rms
    assert set(res.table["status"]) == {"reference", "matched"}


def test_reference_warps_unchanged_and_nan_stays_nan(demo_sim):
    res = match_arrays(demo_sim.warps, demo_sim.skymap)
    for (v, p), w in demo_sim.warps.items():
        out = res.warp(v, p)
        assert np.array_equal(np.isnan(out.image), np.isnan(w.image))
        np.testing.assert_array_equal(out.variance, w.variance)
        if v == res.reference_visit:
            assert np.array_equal(out.image, w.image, equal_nan=True)


@pytest.mark.parametrize("style", ["AKIMA_SPLINE", "LINEAR", "CONSTANT"])
def test_overlapping_warps_share_offsets_exactly(small_sim, style):
    cfg = MatchConfig(interpolation=style)
    res = match_arrays(small_sim.warps, small_sim.skymap, cfg)
    compared = 0
    for (v, p), wp in small_sim.warps.items():
        for (v2, q), wq in small_sim.warps.items():
            if v2 != v or q <= p:
                continue
            common = wp.box.intersection(wq.box)
            if common is None:
                continue
            offs = []
            for w, key in ((wp, (v, p)), (wq, (v, q))):
                grid, ky0, kx0 = res.coarse(*key)
                full = offset_rows(grid, kx0, ky0, w.box, slice(None), cfg)
                offs.append(full[common.y0 - w.box.y0:common.y1 - w.box.y0,
                                 common.x0 - w.box.x0:common.x1 - w.box.x0])
            np.testing.assert_array_equal(offs[0], offs[1])
            compared += 1
    assert compared >= 4


def test_natural_spline_offsets_nearly_agree(small_sim):
    """A natural spline is global, so warps of one visit agree only closely."""
    cfg = MatchConfig(interpolation="NATURAL_SPLINE")
    res = match_arrays(small_sim.warps, small_sim.skymap, cfg)
    (v, p), (_, q) = [k for k in small_sim.warps if k[0] == small_sim.visits[1]][:2]
    wp, wq = small_sim.warps[(v, p)], small_sim.warps[(v, q)]
    common = wp.box.intersection(wq.box)
    offs = []
    for w, key in ((wp, (v, p)), (wq, (v, q))):
        grid, ky0, kx0 = res.coarse(*key)
        full = offset_rows(grid, kx0, ky0, w.box, slice(None), cfg)
        offs.append(full[common.y0 - w.box.y0:common.y1 - w.box.y0, common.x0 - w.box.x0:common.x1 - w.box.x0])
    assert np.max(np.abs(offs[0] - offs[1])) < 1e-3 * max(np.abs(offs[0]).max(), 1.0)


def test_chunking_does_not_change_results(small_sim):
    a = match_arrays(small_sim.warps, small_sim.skymap, chunk_rows=1024)
    b = match_arrays(small_sim.warps, small_sim.skymap, chunk_rows=37)
    assert a.keys() == sorted(small_sim.warps)
    for key in a.keys():
        np.testing.assert_array_equal(a.warp(*key).image, b.warp(*key).image)


def _two_visits(small_sim):
    ref, other = small_sim.visits[0], small_sim.visits[1]
    return ref, other, {k: w for k, w in small_sim.warps.items() if k[0] in (ref, other)}


def test_visit_without_overlap_is_named(small_sim):
    ref, other, warps = _two_visits(small_sim)
    # the other visit keeps data only where the reference has none
    for (v, p), w in list(warps.items()):
        if v == other:
            w2 = dataclasses.replace(w, image=w.image.copy())
            w2.image[np.isfinite(warps[(ref, p)].image)] = np.nan
            warps[(v, p)] = w2
    with pytest.raises(ModelError, match=f"visit {other}"):
        match_arrays(warps, small_sim.skymap, MatchConfig(ref_visit=ref))
    res = match_arrays(warps, small_sim.skymap, MatchConfig(ref_visit=ref, on_no_overlap="skip"))
    assert res.table.loc[other, "status"] == "skipped"
    for (v, p), w in warps.items():
        assert np.array_equal(res.warp(v, p).image, w.image, equal_nan=True)


def test_unusable_warps_warn_and_pass_through(small_sim):
    ref, other, warps = _two_visits(small_sim)
    p = sorted(q for v, q in warps if v == other)[0]
    w = warps[(other, p)]
    warps[(other, p)] = dataclasses.replace(w, image=np.full_like(w.image, np.nan))
    with pytest.warns(UnusableWarpWarning, match=f"visit {other}, patch {p}|\\({other}, {p}\\)"):
        res = match_arrays(warps, small_sim.skymap, MatchConfig(ref_visit=ref))
    assert (other, p) in res.unusable
    assert np.all(np.isnan(res.warp(other, p).image))


def test_visit_with_nothing_usable_is_empty_not_fatal(small_sim):
    ref, other, warps = _two_visits(small_sim)
    for key in [k for k in warps if k[0] == other]:
        warps[key] = dataclasses.replace(warps[key], image=np.full_like(warps[key].image, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusableWarpWarning)
        res = match_arrays(warps, small_sim.skymap, MatchConfig(ref_visit=ref))
    assert res.table.loc[other, "status"] == "empty"


def test_tree_reduce_is_a_fixed_tree():
    calls = []

    def combine(a, b):
        calls.append((a, b))
        return f"({a}+{b})"

    assert tree_reduce(list("abcde"), combine) == "(((a+b)+(c+d))+e)"
    rng = np.random.default_rng(1)
    accs = [Accumulator(rng.random((2, 3)), rng.random((2, 3)), rng.random((2, 3)), iy, ix)
            for iy, ix in [(0, 0), (1, 2), (3, 1), (0, 4)]]
    total = tree_reduce(accs, lambda a, b: a + b).dense((6, 8))
    dense = tree_reduce([a.dense((6, 8)) for a in accs], lambda a, b: a + b)
    for name in "SNV":
        np.testing.assert_array_equal(getattr(total, name), getattr(dense, name))


def test_stats_image_thresholds_and_names_the_visit():
    cfg = MatchConfig(x_bin=10, y_bin=10, min_frac=0.5)
    n = np.full((3, 4), 100.0)
    n[1, 1] = 40.0        # under min_frac * 100 = 50: bad, filled
    s = 7.0 * n
    s[1, 1] = 1e6
    st = stats_image(Accumulator(s, n, n.copy()), (3, 4), cfg, "visit 9")
    assert not st.good[1, 1] and st.good.sum() == 11
    np.testing.assert_allclose(st.values, 7.0)
    np.testing.assert_allclose(st.variance, 1.0)
    with pytest.raises(ModelError, match="visit 9"):
        stats_image(Accumulator(s, n * 0.1, n), (3, 4), cfg, "visit 9")


# -- reference choice on constructed cases ------------------------------------------

def _stats(values, variance, good=None):
    good = np.ones(values.shape, bool) if good is None else good
    return StatsImage(values=values, binned=values, good=good, variance=np.full(values.shape, variance))


def _choose(stats, cfg=MatchConfig(x_bin=10, y_bin=10)):
    figs = {v: reference_criteria(v, st, cfg) for v, st in stats.items()}
    return choose_reference(figs, cfg)


def test_reference_is_the_flattest():
    yy, xx = np.mgrid[0:8, 0:8].astype(float)
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.1, (8, 8))
    stats = {1: _stats(5 + 0.3 * xx + noise, 0.01), 2: _stats(5 + 0.05 * (xx - 4) ** 2 + noise, 0.01),
             3: _stats(5 + 0.2 * np.sin(yy) + noise, 0.01)}
    ref, table = _choose(stats)
    assert ref == 1
    assert table[1]["ref_chi2"] < min(table[2]["ref_chi2"], table[3]["ref_chi2"])


def test_reference_is_the_least_noisy_and_best_covered():
    z = np.random.default_rng(3).normal(0, 1, (8, 8))
    # residuals that match each visit's variance: equal chi2, so the variance decides
    ref, table = _choose({v: _stats(5 + np.sqrt(var) * z, var) for v, var in ((1, 2.0), (2, 1.0), (3, 3.0))})
    assert ref == 2
    assert table[1]["ref_chi2"] == pytest.approx(table[2]["ref_chi2"])
    flat = 5 + 0.1 * z
    part = np.zeros((8, 8), bool)
    part[:, :4] = True
    ref, table = _choose({1: _stats(flat, 1.0, part), 2: _stats(flat, 1.0), 3: _stats(flat, 1.0, part)})
    assert ref == 2 and table[2]["ref_coverage"] == 64 and table[1]["ref_coverage"] == 32
    # cost = 0.3 chi2/max + 0.3 var/max + 0.4 min(cov)/cov
    assert table[2]["ref_cost"] == pytest.approx(0.3 * table[2]["ref_chi2"] / max(
        t["ref_chi2"] for t in table.values()) + 0.3 + 0.4 * 32 / 64)


def test_auto_reference_is_the_least_cost(demo_sim):
    res = match_arrays(demo_sim.warps, demo_sim.skymap)
    assert res.reference_visit == res.table["ref_cost"].idxmin()
    # the partial visits cover less of the tract than the full first visit
    assert res.table["ref_coverage"].idxmax() == demo_sim.visits[0]
