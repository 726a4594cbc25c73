"""Tests of the superpixel statistics kernel (bgdask.kernels.stats).

The kernel is checked against a plain, per-window NumPy reference written
here from the definition (step 1 of docs/algorithm.md): Python loops over the
superpixels, np.median / np.percentile / np.mean / np.var(ddof=1).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bgdask.kernels.stats import SuperpixelBlock, bad_pixels, superpixel_stats

STATS = ("MEANCLIP", "MEAN", "MEDIAN")


# ---------------------------------------------------------------------------
# reference implementation
# ---------------------------------------------------------------------------


def window_start(i, bin_size, wsize):
    """floor((i + 0.5) * bin - wsize / 2), exactly."""
    return ((2 * i + 1) * bin_size - wsize) // 2


def ref_window(x, statistic, nsig, niter):
    """(m, var) of the counted pixels x (float64, n >= 1), by the definition."""
    n = x.size
    var_all = np.var(x, ddof=1) if n > 1 else np.nan
    if statistic == "MEAN":
        return np.mean(x), var_all
    if statistic == "MEDIAN":
        return np.median(x), var_all
    c = np.median(x)
    q = np.percentile(x, 75) - np.percentile(x, 25)
    h = nsig * 0.741301109 * q
    var = var_all
    for _ in range(niter):
        kept = x[np.abs(x - c) < h]
        if kept.size == 0:
            break
        c = np.mean(kept)
        var = np.var(kept, ddof=1) if kept.size > 1 else np.nan
        h = nsig * np.sqrt(var)
    return c, var


def reference(image, bad, x0, y0, grid_shape, x_bin, y_bin, window_scale=2.0,
              statistic="MEANCLIP", num_sigma_clip=3.0, num_iter=3):
    """Dict (iy, ix) -> (S, N, V) for every superpixel whose window meets the box."""
    ny, nx = grid_shape
    h, w = image.shape
    wx = round(window_scale * x_bin)
    wy = round(window_scale * y_bin)
    out = {}
    for iy in range(ny):
        ylo = window_start(iy, y_bin, wy)
        a0, a1 = max(ylo, y0), min(ylo + wy, y0 + h)
        if a0 >= a1:
            continue
        for ix in range(nx):
            xlo = window_start(ix, x_bin, wx)
            b0, b1 = max(xlo, x0), min(xlo + wx, x0 + w)
            if b0 >= b1:
                continue
            win = image[a0 - y0:a1 - y0, b0 - x0:b1 - x0].astype(np.float64)
            ok = ~bad[a0 - y0:a1 - y0, b0 - x0:b1 - x0] & np.isfinite(win)
            x = win[ok]
            n = x.size
            if n == 0:
                out[iy, ix] = (0.0, 0.0, 0.0)
                continue
            m, var = ref_window(x, statistic, num_sigma_clip, num_iter)
            if not np.isfinite(m):
                out[iy, ix] = (0.0, 0.0, 0.0)
                continue
            out[iy, ix] = (m * n, float(n), var * n if np.isfinite(var) else 0.0)
    return out


def assert_matches(block, ref, scale=1.0, rtol=1e-12):
    """Kernel block == reference dict: same superpixels, N exact, S and V to
    rounding (atol covers quantities that are ~0, e.g. a mean of ~0)."""
    assert isinstance(block, SuperpixelBlock)
    nby, nbx = block.S.shape
    assert block.N.shape == block.V.shape == (nby, nbx)
    for arr in (block.S, block.N, block.V):
        assert arr.dtype == np.float64
    keys = {(block.iy0 + j, block.ix0 + i) for j in range(nby) for i in range(nbx)}
    assert keys == set(ref), "block does not cover exactly the superpixels whose window meets the box"
    if not ref:
        assert block.S.size == 0
        return
    S = np.empty((nby, nbx))
    N = np.empty((nby, nbx))
    V = np.empty((nby, nbx))
    for (iy, ix), (s, n, v) in ref.items():
        S[iy - block.iy0, ix - block.ix0] = s
        N[iy - block.iy0, ix - block.ix0] = n
        V[iy - block.iy0, ix - block.ix0] = v
    np.testing.assert_array_equal(block.N, N)
    close(block.S, S, rtol, 1e-13 * scale * N, "S")
    close(block.V, V, rtol, 1e-13 * scale * scale * N, "V")


def close(actual, desired, rtol, atol, name):
    """|actual - desired| <= atol + rtol * |desired|, elementwise (atol an array)."""
    err = np.abs(actual - desired)
    tol = atol + rtol * np.abs(desired)
    bad = ~(err <= tol)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise AssertionError(
            f"{name} differs at {bad.sum()} superpixels, e.g. {idx}: "
            f"actual {actual[bad][:5]}, desired {desired[bad][:5]}, "
            f"relative error {(err[bad] / np.abs(desired[bad]))[:5]}")


def check(image, bad, x0, y0, grid_shape, x_bin, y_bin, scale=None, **kw):
    block = superpixel_stats(image, bad, x0, y0, grid_shape, x_bin, y_bin, **kw)
    ref = reference(image, bad, x0, y0, grid_shape, x_bin, y_bin, **kw)
    if scale is None:
        finite = image[np.isfinite(image)]
        scale = float(np.abs(finite).max()) if finite.size else 1.0
    assert_matches(block, ref, scale=max(scale, 1e-300))
    return block, ref


def sky(rng, shape, level=1000.0, sigma=30.0, nan_frac=0.01, spike_frac=0.003, bad_frac=0.05):
    """Sky + noise + cosmic-ray-like spikes + NaNs, and a random bad mask."""
    img = level + sigma * rng.standard_normal(shape)
    spikes = rng.random(shape) < spike_frac
    img[spikes] += rng.uniform(50, 500, spikes.sum()) * sigma
    img[rng.random(shape) < nan_frac] = np.nan
    bad = rng.random(shape) < bad_frac
    return img, bad


# ---------------------------------------------------------------------------
# against the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", STATS)
@pytest.mark.parametrize("window_scale", [1.0, 2.0])
def test_random_sky_unaligned_box(statistic, window_scale):
    rng = np.random.default_rng(1)
    img, bad = sky(rng, (150, 170))
    # box not aligned to the bins; grid of a 300 x 260 tract with 16 px bins
    check(img, bad, 37, 21, (300 // 16, 260 // 16), 16, 16,
          window_scale=window_scale, statistic=statistic)


@pytest.mark.parametrize("statistic", STATS)
@pytest.mark.parametrize("window_scale", [1.0, 2.0, 1.5])
def test_odd_bins_and_tract_edge(statistic, window_scale):
    """Odd, unequal bin sizes; the box runs past the last superpixel of the
    grid (tract edge) and starts before pixel 0."""
    rng = np.random.default_rng(2)
    img, bad = sky(rng, (61, 83), level=-5.0, sigma=2.0)
    # tract 100 x 90 with x_bin 7, y_bin 5: grid (18, 12); box from (-4, 52)
    check(img, bad, 52, -4, (90 // 5, 100 // 7), 7, 5,
          window_scale=window_scale, statistic=statistic)


@pytest.mark.parametrize("statistic", STATS)
def test_float32_input(statistic):
    rng = np.random.default_rng(3)
    img, bad = sky(rng, (64, 80), level=250.0, sigma=15.0)
    img32 = img.astype(np.float32)
    block, _ = check(img32, bad, 3, 9, (8, 8), 12, 12, statistic=statistic)
    # float32 pixels are converted exactly: same result as their float64 values
    b64 = superpixel_stats(img32.astype(np.float64), bad, 3, 9, (8, 8), 12, 12,
                           statistic=statistic)
    for a, b in zip(block[:3], b64[:3]):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("statistic", STATS)
def test_zero_mean_and_large_offset(statistic):
    """A difference-image-like field (mean ~ 0) and a sky of 1e6 with unit noise."""
    rng = np.random.default_rng(4)
    img, bad = sky(rng, (48, 48), level=0.0, sigma=1.0)
    check(img, bad, 0, 0, (6, 6), 8, 8, scale=5.0, statistic=statistic)
    img, bad = sky(rng, (48, 48), level=1e6, sigma=1.0)
    check(img, bad, 0, 0, (6, 6), 8, 8, statistic=statistic)


@pytest.mark.parametrize("statistic", STATS)
def test_values_outside_the_value_grid(statistic):
    """Windows whose pixels lie far from most of the image (saturated block,
    a bright gradient): exercises the open-ended bins."""
    rng = np.random.default_rng(5)
    img, bad = sky(rng, (64, 64), level=100.0, sigma=3.0, nan_frac=0.0)
    img[:20, :20] = 60000.0 + rng.standard_normal((20, 20))
    img[40:, 40:] += np.linspace(0, 5000, 24)[None, :]
    img[30:34, :] = -1e5 * rng.random((4, 64))
    for ws in (1.0, 2.0):
        check(img, bad, 0, 0, (8, 8), 8, 8, window_scale=ws, statistic=statistic)


@pytest.mark.parametrize("statistic", STATS)
def test_quantized_and_tied_values(statistic):
    """Integer-valued pixels with many ties (and a constant patch)."""
    rng = np.random.default_rng(6)
    img = rng.poisson(3.0, (40, 50)).astype(np.float64)
    img[:10, :10] = 7.0
    bad = rng.random(img.shape) < 0.1
    for ws in (1.0, 2.0):
        check(img, bad, 5, 0, (10, 12), 5, 5, window_scale=ws, statistic=statistic)


@pytest.mark.parametrize("statistic", STATS)
@pytest.mark.parametrize("shape,x0,y0", [((1, 1), 0, 0), ((1, 1), 13, 7), ((1, 9), 4, 6),
                                         ((11, 1), 0, 3), ((2, 2), 7, 7), ((3, 40), -2, 1)])
def test_tiny_boxes(statistic, shape, x0, y0):
    rng = np.random.default_rng(7)
    img = rng.normal(10.0, 2.0, shape)
    bad = np.zeros(shape, bool)
    for ws in (1.0, 2.0):
        check(img, bad, x0, y0, (5, 6), 4, 4, window_scale=ws, statistic=statistic)


@pytest.mark.parametrize("statistic", STATS)
def test_all_bad_and_all_nan(statistic):
    rng = np.random.default_rng(8)
    img = rng.normal(size=(20, 30))
    block, _ = check(img, np.ones(img.shape, bool), 0, 0, (4, 5), 6, 6, statistic=statistic)
    assert block.S.shape == (4, 5) and not block.N.any() and not block.S.any()
    nan = np.full(img.shape, np.nan)
    nan[3, 4] = np.inf
    nan[5, 5] = -np.inf
    block, _ = check(nan, np.zeros(img.shape, bool), 0, 0, (4, 5), 6, 6, statistic=statistic)
    assert not block.N.any()


@pytest.mark.parametrize("statistic", STATS)
def test_constant_image(statistic):
    """Constant windows: q = 0 so h = 0, the strict clip keeps nothing and
    MEANCLIP returns the median (the constant) with variance 0."""
    img = np.full((32, 32), 42.5)
    bad = np.zeros(img.shape, bool)
    bad[::7, ::3] = True
    block, _ = check(img, bad, 0, 0, (4, 4), 8, 8, statistic=statistic)
    np.testing.assert_array_equal(block.S, 42.5 * block.N)
    np.testing.assert_array_equal(block.V, 0.0)


def test_clipping_options():
    rng = np.random.default_rng(9)
    img, bad = sky(rng, (40, 40), level=10.0, sigma=1.0)
    for nsig, niter in [(2.0, 1), (2.5, 5), (5.0, 2), (3.0, 0), (0.5, 3)]:
        check(img, bad, 0, 0, (5, 5), 8, 8, statistic="MEANCLIP",
              num_sigma_clip=nsig, num_iter=niter)


def test_non_contiguous_input():
    rng = np.random.default_rng(10)
    img, bad = sky(rng, (60, 90))
    view, bview = img[::2, 1::3], bad[::2, 1::3]
    assert not view.flags.c_contiguous
    block, _ = check(view, bview, 2, 2, (6, 6), 6, 6)
    b2 = superpixel_stats(view.copy(), bview.copy(), 2, 2, (6, 6), 6, 6)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(block[:3], b2[:3]))


# ---------------------------------------------------------------------------
# property test on small random cases
# ---------------------------------------------------------------------------

VALUES = st.one_of(
    st.integers(-8, 8).map(lambda v: v / 4.0),  # many ties
    st.floats(-50, 50, allow_nan=False, width=64),
    st.sampled_from([np.nan, np.inf, 1e4, -3e3]),
)


@st.composite
def cases(draw):
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    vals = draw(st.lists(VALUES, min_size=h * w, max_size=h * w))
    bad = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
    return dict(
        image=np.array(vals, dtype=np.float64).reshape(h, w),
        bad=np.array(bad, dtype=bool).reshape(h, w),
        x0=draw(st.integers(-6, 15)),
        y0=draw(st.integers(-6, 15)),
        grid_shape=(draw(st.integers(0, 6)), draw(st.integers(0, 6))),
        x_bin=draw(st.integers(1, 5)),
        y_bin=draw(st.integers(1, 5)),
        window_scale=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])),
        statistic=draw(st.sampled_from(STATS)),
        num_iter=draw(st.integers(0, 4)),
    )


@pytest.mark.slow
@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_property_matches_reference(case):
    for b in (case["x_bin"], case["y_bin"]):
        assume(round(case["window_scale"] * b) >= 1)  # else a ValueError (empty window)
    check(scale=1e4, **case)


# ---------------------------------------------------------------------------
# behaviour
# ---------------------------------------------------------------------------


def test_meanclip_removes_outliers():
    rng = np.random.default_rng(11)
    img = 100.0 + 5.0 * rng.standard_normal((128, 128))
    spikes = rng.random(img.shape) < 0.01
    img[spikes] += 20000.0  # cosmic rays
    bad = np.zeros(img.shape, bool)
    kw = dict(x0=0, y0=0, grid_shape=(4, 4), x_bin=32, y_bin=32)
    clip = superpixel_stats(img, bad, statistic="MEANCLIP", **kw)
    mean = superpixel_stats(img, bad, statistic="MEAN", **kw)
    mc = clip.S / clip.N
    mm = mean.S / mean.N
    assert np.all(np.abs(mc - 100.0) < 1.0)  # the background
    assert np.all(mm - 100.0 > 100.0)  # pulled up by the spikes
    # the clipped variance is the noise, not the spikes
    vc = clip.V / clip.N
    assert np.all((vc > 15.0) & (vc < 35.0))


def test_block_offsets_and_shapes():
    """Explicit example: bins of 4, tract grid 10 x 10."""
    img = np.arange(6 * 5, dtype=np.float64).reshape(5, 6)  # rows y 9..13, cols x 9..14
    bad = np.zeros(img.shape, bool)
    # window_scale 2: window ix covers [4 ix - 2, 4 ix + 6); meets [9, 15) for ix 1..4
    # (and iy 1..3 for rows [9, 14))
    b = superpixel_stats(img, bad, 9, 9, (10, 10), 4, 4, window_scale=2.0, statistic="MEAN")
    assert (b.iy0, b.ix0, b.S.shape) == (1, 1, (3, 4))
    # window (iy=1, ix=1) is [2, 10) x [2, 10): the single pixel (y=9, x=9) = img[0, 0]
    assert b.N[0, 0] == 1 and b.S[0, 0] == 0.0
    # window (iy=3, ix=4): y [10, 18) x [14, 22) -> img[1:, 5]
    assert b.N[2, 3] == 4 and b.S[2, 3] == img[1:, 5].sum()
    # window_scale 1: bins [4 ix, 4 ix + 4) -> ix 2..3 (x 9..11, 12..14),
    # iy 2..3 (y 9..11, 12..13)
    b = superpixel_stats(img, bad, 9, 9, (10, 10), 4, 4, window_scale=1.0, statistic="MEAN")
    assert (b.iy0, b.ix0, b.S.shape) == (2, 2, (2, 2))
    assert b.N.tolist() == [[9.0, 9.0], [6.0, 6.0]]
    assert b.S[1, 0] == img[3:5, 0:3].sum()
    # a grid that ends inside the box (tract edge): only ix < 3 exist
    b = superpixel_stats(img, bad, 9, 9, (10, 3), 4, 4, window_scale=2.0)
    assert (b.iy0, b.ix0, b.S.shape) == (1, 1, (3, 2))
    # box entirely past the grid: empty block, offsets usable as slice starts
    b = superpixel_stats(img, bad, 40, 9, (10, 3), 4, 4, window_scale=1.0)
    assert b.S.size == b.N.size == b.V.size == 0
    assert 0 <= b.ix0 <= 3 and 0 <= b.iy0 <= 10
    grid = np.zeros((10, 3))
    grid[b.iy0:b.iy0 + b.S.shape[0], b.ix0:b.ix0 + b.S.shape[1]] += b.S
    # empty grid
    b = superpixel_stats(img, bad, 0, 0, (0, 0), 4, 4)
    assert b.S.shape[0] * b.S.shape[1] == 0


def test_blocks_add_up_on_the_grid():
    """Two images of overlapping boxes accumulate on the tract grid."""
    rng = np.random.default_rng(12)
    grid = (12, 12)
    acc = np.zeros(grid)
    for x0, y0 in [(0, 0), (30, 17)]:
        img, bad = sky(rng, (50, 60))
        b = superpixel_stats(img, bad, x0, y0, grid, 8, 8)
        acc[b.iy0:b.iy0 + b.S.shape[0], b.ix0:b.ix0 + b.S.shape[1]] += b.N
    assert acc.sum() > 0


def test_deterministic():
    rng = np.random.default_rng(13)
    img, bad = sky(rng, (200, 230))
    for statistic in STATS:
        a = superpixel_stats(img, bad, 11, 5, (20, 20), 16, 16, statistic=statistic)
        b = superpixel_stats(img.copy(), bad.copy(), 11, 5, (20, 20), 16, 16, statistic=statistic)
        assert (a.iy0, a.ix0) == (b.iy0, b.ix0)
        for x, y in zip(a[:3], b[:3]):
            assert x.tobytes() == y.tobytes()


def test_big_endian_input():
    rng = np.random.default_rng(14)
    img, bad = sky(rng, (30, 30))
    a = superpixel_stats(img.astype(">f8"), bad, 0, 0, (3, 3), 10, 10)
    b = superpixel_stats(img, bad, 0, 0, (3, 3), 10, 10)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a[:3], b[:3]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(image=np.zeros(5)), "2-D"),
    (dict(image=np.zeros((4, 4), np.int32)), "float32 or float64"),
    (dict(bad=np.zeros((4, 5), bool)), "shape"),
    (dict(bad=np.zeros((4, 4), np.uint8)), "bool"),
    (dict(x_bin=0), "x_bin"),
    (dict(y_bin=-3), "y_bin"),
    (dict(x_bin=2.5), "x_bin"),
    (dict(grid_shape=(3,)), "grid_shape"),
    (dict(grid_shape=(-1, 2)), "grid_shape"),
    (dict(statistic="MAX"), "statistic"),
    (dict(window_scale=0.0), "window_scale"),
    (dict(window_scale=0.1), "empty window"),
    (dict(num_sigma_clip=-1.0), "num_sigma_clip"),
    (dict(num_iter=-1), "num_iter"),
    (dict(x0=1.5), "x0"),
])
def test_validation(kwargs, match):
    args = dict(image=np.zeros((4, 4)), bad=np.zeros((4, 4), bool), x0=0, y0=0,
                grid_shape=(3, 3), x_bin=2, y_bin=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        superpixel_stats(**args)


def test_bad_pixels():
    mask = np.array([[0, 1, 2], [4, 5, 8]], dtype=np.int32)
    np.testing.assert_array_equal(bad_pixels(mask, 0b101),
                                  [[False, True, False], [True, True, False]])
    np.testing.assert_array_equal(bad_pixels(mask, 0), np.zeros((2, 3), bool))
    image = np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, -np.inf]])
    np.testing.assert_array_equal(bad_pixels(mask, 0b10, image),
                                  [[False, True, True], [True, False, True]])
    with pytest.raises(ValueError):
        bad_pixels(mask, 1, np.zeros((3, 2)))


def test_config_errors_are_bgdask_errors():
    """Errors in configuration values are ConfigErrors (also ValueErrors)."""
    from bgdask.errors import ConfigError

    img, bad = np.zeros((4, 4)), np.zeros((4, 4), bool)
    for kw in [dict(window_scale=0.4), dict(statistic="MAX"), dict(num_iter=-1),
               dict(num_sigma_clip=0.0)]:
        with pytest.raises(ConfigError):
            superpixel_stats(img, bad, 0, 0, (3, 3), 1, 2, **kw)
    with pytest.raises(ConfigError, match="x_bin"):
        superpixel_stats(img, bad, 0, 0, (3, 3), 0, 2)
