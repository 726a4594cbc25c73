"""Window position sums (bgdask.kernels.centroid) against a plain per-window NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from bgdask.kernels.centroid import centroids, window_sums
from bgdask.kernels.stats import superpixel_stats


def reference(image, bad, x0, y0, grid_shape, x_bin, y_bin, window_scale, plane=None):
    """Per window, straight from the definition: window of superpixel i is
    [lo_i, lo_i + round(scale * bin)) with lo_i = floor((i + 0.5) bin - wsize / 2),
    clipped to the box; the counted pixels are finite and not bad."""
    h, w = image.shape
    ny, nx = grid_shape
    wx, wy = round(window_scale * x_bin), round(window_scale * y_bin)
    finite = np.isfinite(image)
    counted = finite & ~bad
    xs = np.arange(x0, x0 + w)
    ys = np.arange(y0, y0 + h)
    rows = {}
    for iy in range(ny):
        ly = ((2 * iy + 1) * y_bin - wy) // 2
        for ix in range(nx):
            lx = ((2 * ix + 1) * x_bin - wx) // 2
            sx = slice(max(lx - x0, 0), max(min(lx + wx - x0, w), 0))
            sy = slice(max(ly - y0, 0), max(min(ly + wy - y0, h), 0))
            if sx.stop <= sx.start or sy.stop <= sy.start:
                continue  # the window misses the box
            c = counted[sy, sx]
            gx, gy = np.meshgrid(xs[sx], ys[sy])
            rows[(iy, ix)] = (c.sum(), gx[c].sum(), gy[c].sum(), finite[sy, sx].sum(),
                              plane[sy, sx][c].astype(np.float64).sum() if plane is not None else 0.0)
    return rows


def make_image(rng, h, w, frac_bad=0.2, frac_nan=0.1):
    image = rng.normal(10.0, 3.0, (h, w)).astype(np.float32)
    image[rng.random((h, w)) < frac_nan] = np.nan
    image[:, : w // 7] = np.nan  # an edge inside the windows
    bad = rng.random((h, w)) < frac_bad
    bad[h // 3: h // 3 + 2, :] = True  # a masked row
    return image, bad


CASES = [
    # (x_bin, y_bin, window_scale, x0, y0, h, w, grid_shape)
    (16, 16, 2.0, 0, 0, 64, 64, (4, 4)),
    (16, 12, 2.0, 21, 9, 50, 61, (8, 6)),
    (7, 13, 1.0, 5, 3, 40, 33, (5, 6)),
    (7, 13, 1.5, 5, 3, 40, 33, (5, 6)),
    (9, 9, 2.0, 17, 4, 31, 29, (6, 6)),
    (10, 10, 1.5, -3, -5, 37, 44, (3, 4)),   # a box reaching beyond the grid
    (5, 11, 2.0, 33, 30, 23, 19, (4, 8)),   # a box partly beyond the grid's last window
]


@pytest.mark.parametrize("x_bin, y_bin, scale, x0, y0, h, w, grid", CASES)
def test_against_reference(x_bin, y_bin, scale, x0, y0, h, w, grid):
    rng = np.random.default_rng(x_bin * 100 + y_bin + int(10 * scale))
    image, bad = make_image(rng, h, w)
    plane = rng.uniform(1, 2, (h, w)).astype(np.float32)
    got = window_sums(image, bad, x0, y0, grid, x_bin, y_bin, window_scale=scale, plane=plane)
    ref = reference(image, bad, x0, y0, grid, x_bin, y_bin, scale, plane)
    nby, nbx = got.N.shape
    cells = {(got.iy0 + j, got.ix0 + i) for j in range(nby) for i in range(nbx)}
    assert cells == set(ref)  # the block is exactly the windows that meet the box
    assert ref, "the case must touch some window"
    for (iy, ix), (n, sx, sy, f, sp) in ref.items():
        j, i = iy - got.iy0, ix - got.ix0
        assert got.N[j, i] == n
        assert got.SX[j, i] == sx and got.SY[j, i] == sy
        assert got.F[j, i] == f
        assert got.SP[j, i] == pytest.approx(sp, rel=1e-12)
    # some windows are partly counted: the centroid is then off the centre
    cx, _ = centroids(got.SX, got.SY, got.N)
    centre = (np.arange(got.ix0, got.ix0 + nbx) + 0.5) * x_bin
    assert np.nanmax(np.abs(cx - centre[None, :])) > 0.5


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0])
def test_same_block_and_counts_as_the_statistics(scale):
    rng = np.random.default_rng(3)
    image, bad = make_image(rng, 70, 90)
    stats = superpixel_stats(image, bad, 13, 7, (9, 9), 11, 9, window_scale=scale)
    sums = window_sums(image, bad, 13, 7, (9, 9), 11, 9, window_scale=scale)
    assert (sums.iy0, sums.ix0, sums.N.shape) == (stats.iy0, stats.ix0, stats.N.shape)
    assert np.array_equal(sums.N, stats.N)
    assert sums.SP is None


def test_blocks_of_two_boxes_add_up_to_the_whole():
    """Sums are exact integers: a tract's boxes add up bit for bit."""
    rng = np.random.default_rng(5)
    image, bad = make_image(rng, 96, 96)
    whole = window_sums(image, bad, 0, 0, (6, 6), 16, 16)
    grid = {k: np.zeros((6, 6)) for k in ("N", "SX", "SY", "F")}
    for ys, xs in [(slice(0, 40), slice(0, 96)), (slice(40, 96), slice(0, 53)), (slice(40, 96), slice(53, 96))]:
        part = window_sums(image[ys, xs], bad[ys, xs], xs.start, ys.start, (6, 6), 16, 16)
        nby, nbx = part.N.shape
        for k in grid:
            grid[k][part.iy0:part.iy0 + nby, part.ix0:part.ix0 + nbx] += getattr(part, k)
    for k in grid:
        assert np.array_equal(grid[k], getattr(whole, k)), k


def test_full_coverage_centroid_is_half_a_pixel_below_the_centre():
    image = np.ones((64, 64), np.float32)
    bad = np.zeros(image.shape, bool)
    s = window_sums(image, bad, 0, 0, (4, 4), 16, 16)
    cx, cy = centroids(s.SX, s.SY, s.N)
    centre = (np.arange(4) + 0.5) * 16
    # inner windows are fully inside the box: centroid = centre - 0.5
    assert np.allclose(cx[1:3, 1:3], centre[None, 1:3] - 0.5)
    assert np.allclose(cy[1:3, 1:3], centre[1:3, None] - 0.5)
    # the first window is clipped at 0: its pixels 0..23 -> centroid 11.5
    assert cx[1, 0] == pytest.approx(11.5)


def test_empty_and_uncounted():
    image = np.full((20, 20), np.nan, np.float32)
    bad = np.zeros(image.shape, bool)
    s = window_sums(image, bad, 0, 0, (2, 2), 10, 10)
    assert not s.N.any() and not s.F.any()
    cx, cy = centroids(s.SX, s.SY, s.N)
    assert np.isnan(cx).all() and np.isnan(cy).all()
    # finite but bad: F counts them, N does not
    image[:] = 1.0
    bad[:] = True
    s = window_sums(image, bad, 0, 0, (2, 2), 10, 10)
    assert not s.N.any() and (s.F > 0).all()
    # a box beyond the grid: an empty block at a valid slice
    s = window_sums(image, bad, 100, 100, (2, 2), 10, 10)
    assert s.N.size == 0


def test_bad_arguments():
    from bgdask.errors import ConfigError

    image = np.zeros((8, 8), np.float32)
    bad = np.zeros((8, 8), bool)
    with pytest.raises(ConfigError):
        window_sums(image, bad, 0, 0, (2, 2), 0, 4)
    with pytest.raises(ConfigError):
        window_sums(image, bad, 0, 0, (2, 2), 4, 4, window_scale=0.0)
    with pytest.raises(ValueError):
        window_sums(image, bad[:4], 0, 0, (2, 2), 4, 4)
    with pytest.raises(ValueError):
        window_sums(image, bad, 0, 0, (2, 2), 4, 4, plane=np.zeros((3, 3)))


# -- recentring (values measured at centroids, wanted at the nodes) ------------

def _plane_grid(seed=0, shape=(7, 9), b=16, shift=0.4):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    xc = (np.arange(nx) + 0.5) * b
    yc = (np.arange(ny) + 0.5) * b
    cx = xc[None, :] + rng.uniform(-shift, shift, shape) * b
    cy = yc[:, None] + rng.uniform(-shift, shift, shape) * b
    f = lambda x, y: 3.0 + 0.05 * x - 0.03 * y  # noqa: E731
    good = rng.random(shape) < 0.8
    good[3, :] = True
    return f(cx, cy), good, cx, cy, f(xc[None, :], yc[:, None]), b


@pytest.mark.parametrize("method", ["gradient", "fit", "scattered"])
def test_recentre_recovers_a_plane(method):
    from bgdask.kernels.centroid import recentre_values

    values, good, cx, cy, at_nodes, b = _plane_grid()
    values[~good] = np.nan   # as S / N where nothing counted
    err_before = np.abs(values - at_nodes)[good].max()
    out = recentre_values(values, good, cx, cy, b, b, method=method)
    assert err_before > 0.1
    assert np.abs(out - at_nodes)[good].max() < 1e-5
    assert np.isnan(out[~good]).all()   # only good nodes move


def test_recentre_none_and_errors():
    from bgdask.errors import ConfigError
    from bgdask.kernels.centroid import recentre_values

    values, good, cx, cy, _, b = _plane_grid(1)
    assert np.array_equal(recentre_values(values, good, cx, cy, b, b, method="none"), values)
    with pytest.raises(ConfigError):
        recentre_values(values, good, cx, cy, b, b, method="magic")
    # no good node: unchanged
    assert np.array_equal(recentre_values(values, np.zeros_like(good), cx, cy, b, b), values)


def test_recentre_curved_sky_gradient_is_second_order():
    """On a curved sky the gradient correction leaves an error of order
    curvature x shift**2, far below the raw centroid bias."""
    from bgdask.kernels.centroid import recentre_values

    rng = np.random.default_rng(2)
    ny, nx, b = 8, 10, 16
    xc = (np.arange(nx) + 0.5) * b
    yc = (np.arange(ny) + 0.5) * b
    cx = xc[None, :] + rng.uniform(-0.3, 0.3, (ny, nx)) * b
    cy = yc[:, None] + rng.uniform(-0.3, 0.3, (ny, nx)) * b
    f = lambda x, y: 0.05 * x + 1e-4 * (x - 80) ** 2 - 2e-4 * (y - 60) ** 2  # noqa: E731
    good = np.ones((ny, nx), bool)
    truth = f(xc[None, :], yc[:, None])
    raw = np.abs(f(cx, cy) - truth)[1:-1, 1:-1].max()
    got = recentre_values(f(cx, cy), good, cx, cy, b, b, method="gradient")
    assert np.abs(got - truth)[1:-1, 1:-1].max() < 0.1 * raw
