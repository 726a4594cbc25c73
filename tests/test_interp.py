"""Interpolation styles, fallbacks and extrapolation modes (step 2 of docs/algorithm.md)."""

import numpy as np
import pytest

from bgdask.kernels.interp import (UndersampledError, effective_style, fill_gaps, interpolate_1d,
                                   linear_resample, separable_interpolate, smooth_gappy)

X = np.arange(8.0) * 10.0
XQ = np.linspace(0.0, 70.0, 141)


def const(t):
    return 3.0 + 0.0 * t


def line(t):
    return 2.0 * t - 1.0


def quad(t):
    return 0.01 * t**2 - 0.3 * t + 2.0


def cubic(t):
    return 1e-4 * t**3 - 0.01 * t**2 + t


@pytest.mark.parametrize("style, exact_for", [
    ("CONSTANT", [const]),
    ("LINEAR", [const, line]),
    ("NATURAL_SPLINE", [const, line]),
    ("AKIMA_SPLINE", [const, line, quad]),
])
def test_styles_reproduce_what_they_should(style, exact_for):
    for f in exact_for:
        np.testing.assert_allclose(interpolate_1d(X, f(X), XQ, style), f(XQ), atol=1e-10)


def test_constant_is_the_nearest_point():
    y = np.array([1.0, 5.0, 2.0])
    out = interpolate_1d(np.array([0.0, 10.0, 20.0]), y, np.array([4.0, 5.0, 6.0, 16.0]), "CONSTANT")
    np.testing.assert_array_equal(out, [1.0, 1.0, 5.0, 2.0])


@pytest.mark.parametrize("style", ["NATURAL_SPLINE", "AKIMA_SPLINE"])
def test_splines_converge_on_a_cubic(style):
    """Splines are not exact on a general cubic; their error falls fast with spacing."""
    errs = []
    for n in (8, 16, 32):
        x = np.linspace(0.0, 70.0, n)
        errs.append(np.abs(interpolate_1d(x, cubic(x), XQ, style) - cubic(XQ)).max())
    assert errs[0] / errs[2] > 10  # at least second order overall
    assert errs[2] < 0.01


@pytest.mark.parametrize("style, n, expected", [
    ("AKIMA_SPLINE", 5, "AKIMA_SPLINE"), ("AKIMA_SPLINE", 4, "NATURAL_SPLINE"),
    ("AKIMA_SPLINE", 3, "NATURAL_SPLINE"), ("AKIMA_SPLINE", 2, "LINEAR"),
    ("AKIMA_SPLINE", 1, "CONSTANT"), ("NATURAL_SPLINE", 2, "LINEAR"), ("LINEAR", 1, "CONSTANT"),
    ("CONSTANT", 1, "CONSTANT"),
])
def test_reduce_interp_order(style, n, expected):
    assert effective_style(style, n) == expected


def test_fallback_values_and_throw():
    x, y = np.array([0.0, 10.0]), np.array([1.0, 3.0])
    np.testing.assert_allclose(interpolate_1d(x, y, np.array([5.0]), "AKIMA_SPLINE"), [2.0])
    with pytest.raises(UndersampledError, match="AKIMA_SPLINE.*5"):
        interpolate_1d(x, y, np.array([5.0]), "AKIMA_SPLINE", reduce_order=False)
    with pytest.raises(UndersampledError):
        effective_style("LINEAR", 0)


def test_extrapolation_modes():
    xq = np.array([-20.0, -5.0, 75.0, 100.0])
    # Akima is exact on a quadratic, so Rubin's quadratic extrapolation continues it exactly
    np.testing.assert_allclose(interpolate_1d(X, quad(X), xq, "AKIMA_SPLINE", "quadratic"), quad(xq), atol=1e-9)
    # linear: the tangent at the end point
    lin = interpolate_1d(X, quad(X), xq, "AKIMA_SPLINE", "linear")
    dq = lambda t: 0.02 * t - 0.3  # noqa: E731
    ends = np.where(xq < 0, 0.0, 70.0)
    np.testing.assert_allclose(lin, quad(ends) + dq(ends) * (xq - ends), atol=1e-9)
    # nearest: the end value
    np.testing.assert_allclose(interpolate_1d(X, quad(X), xq, "AKIMA_SPLINE", "nearest"), quad(ends))
    # a LINEAR style has no curvature: quadratic == linear extrapolation
    a = interpolate_1d(X, quad(X), xq, "LINEAR", "quadratic")
    b = interpolate_1d(X, quad(X), xq, "LINEAR", "linear")
    np.testing.assert_array_equal(a, b)
    # CONSTANT extrapolates flat
    np.testing.assert_array_equal(interpolate_1d(X, quad(X), xq, "CONSTANT", "quadratic"), quad(ends))


def test_vectorised_columns_equal_one_at_a_time():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(8, 5))
    out = interpolate_1d(X, y, XQ, "AKIMA_SPLINE")
    for j in range(5):
        np.testing.assert_array_equal(out[:, j], interpolate_1d(X, y[:, j], XQ, "AKIMA_SPLINE"))


def test_fill_gaps_rows_then_columns():
    xc = np.arange(6) * 10.0 + 5
    yc = np.arange(5) * 10.0 + 5
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    truth = 1.0 + 0.5 * xx - 0.25 * yy
    good = np.ones_like(truth, dtype=bool)
    good[1, 2:4] = False       # gap inside a row
    good[3, :] = False         # a whole row: filled by the column pass
    good[:, 0] = False         # a whole column: extrapolated along rows
    out = fill_gaps(truth, good, xc, yc, "AKIMA_SPLINE")
    np.testing.assert_allclose(out, truth, atol=1e-9)  # a plane is reproduced
    np.testing.assert_array_equal(out[good], truth[good])


def test_smooth_gappy_ignores_bad_cells():
    v = np.full((9, 9), 4.0)
    good = np.ones_like(v, dtype=bool)
    v[4, 4], good[4, 4] = 1e6, False   # a wild bad value must not leak
    out, defined = smooth_gappy(v, good, 1.5)
    assert defined.all()
    np.testing.assert_allclose(out, 4.0)


def test_linear_resample_is_exact_for_planes_and_extrapolates():
    centers = np.arange(4) * 128 + 64.0
    grid = 3.0 + 0.1 * centers
    xq = np.array([0.0, 64.0, 100.0, 500.0])
    np.testing.assert_allclose(linear_resample(grid, centers, xq, axis=0), 3.0 + 0.1 * xq)


def test_separable_interpolate_plane():
    xc, yc = np.arange(6) * 64 + 32.0, np.arange(5) * 64 + 32.0
    g = 2.0 + 0.01 * xc[None, :] - 0.02 * yc[:, None]
    xq, yq = np.arange(0, 384.0), np.arange(10, 300.0)
    out = separable_interpolate(g, xc, yc, xq, yq)
    np.testing.assert_allclose(out, 2.0 + 0.01 * xq[None, :] - 0.02 * yq[:, None], atol=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_evaluation_is_bitwise_scipys(seed):
    """The compiled piecewise-polynomial evaluation (many columns) gives
    scipy's values bit for bit, inside, at and beyond the breakpoints."""
    from scipy.interpolate import Akima1DInterpolator, CubicSpline

    from bgdask.kernels.interp import _evaluate

    rng = np.random.default_rng(seed)
    x = np.unique(np.sort(rng.uniform(0, 5000, rng.integers(5, 60))))
    y = rng.normal(0, 50, (x.size, int(rng.integers(64, 300)))) * 10.0 ** rng.uniform(-3, 3)
    xq = np.concatenate([rng.uniform(x[0] - 300, x[-1] + 300, 200), x, [np.nan]])
    for interp in (Akima1DInterpolator(x, y, axis=0, extrapolate=True),
                   CubicSpline(x, y, axis=0, bc_type="natural", extrapolate=True)):
        want, got = interp(xq), _evaluate(interp, xq)
        assert got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("style", ["CONSTANT", "LINEAR", "NATURAL_SPLINE", "AKIMA_SPLINE"])
@pytest.mark.parametrize("extrapolation", ["quadratic", "linear", "nearest"])
def test_separable_prepared_once_is_bitwise_per_block(style, extrapolation):
    """Stage C builds a warp's interpolant once and evaluates it block by
    block: the same bits as interpolating each block on its own."""
    from bgdask.kernels.interp import Separable, separable_interpolate

    rng = np.random.default_rng(5)
    grid = rng.normal(size=(9, 11))
    xc, yc = np.arange(11) * 32.0 + 16, np.arange(9) * 32.0 + 16
    xq = np.arange(-20, 380, dtype=np.float64)
    yq = np.arange(-30, 330, dtype=np.float64)
    sep = Separable(grid, xc, yc, xq, style, extrapolation)
    for part in (slice(0, 100), slice(100, 107), slice(107, 360)):
        np.testing.assert_array_equal(sep(yq[part]),
                                      separable_interpolate(grid, xc, yc, xq, yq[part], style, extrapolation))


def _scipy_akima(x, y, extrapolation):
    """The Interpolant as it was built on scipy's Akima1DInterpolator (the reference)."""
    from scipy.interpolate import Akima1DInterpolator

    from bgdask.kernels.interp import Interpolant

    interpolant = Interpolant(x, y, "AKIMA_SPLINE", extrapolation)
    interpolant.interp = Akima1DInterpolator(x, y, axis=0, extrapolate=True)
    return interpolant


@pytest.mark.parametrize("seed", range(40))
def test_compiled_akima_of_one_row_is_bitwise_scipys(seed):
    """interpolate_1d of 1-D samples in the Akima style (the rows and columns
    of fill_gaps, through the compiled spline) gives what scipy's
    Akima1DInterpolator with bgdask's extrapolation gives, bit for bit:
    inside, at the breakpoints, beyond them in every extrapolation mode, with
    flat stretches (slopes undefined), repeated values and NaN queries; and
    the query's shape."""
    from bgdask.kernels.interp import Interpolant

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    x = np.unique(np.sort(rng.uniform(-500, 5000, n) * 10.0 ** rng.uniform(-2, 2)))
    y = rng.normal(0, 50, x.size) * 10.0 ** rng.uniform(-6, 6)
    if seed % 3 == 0:           # flat stretches: f1 + f2 = 0, where the slope is the mean
        y[rng.integers(0, x.size, x.size // 2)] = y[0]
    if seed % 5 == 1:
        y = np.round(y)         # repeated values and exact zeros
    span = x[-1] - x[0]
    xq = np.concatenate([rng.uniform(x[0] - span, x[-1] + span, 300), x, [x[0], x[-1], np.nan]])
    for extrapolation in ("quadratic", "linear", "nearest"):
        want = _scipy_akima(x, y, extrapolation)(xq)
        got = interpolate_1d(x, y, xq, "AKIMA_SPLINE", extrapolation)
        assert got.shape == want.shape and got.tobytes() == want.tobytes(), extrapolation
        # the interpolant itself, built once and called again
        assert Interpolant(x, y, "AKIMA_SPLINE", extrapolation)(xq).tobytes() == want.tobytes()
        assert interpolate_1d(x, y, xq[:6].reshape(2, 3), "AKIMA_SPLINE", extrapolation).shape == (2, 3)
        assert interpolate_1d(x, y, xq[0], "AKIMA_SPLINE", extrapolation).shape == ()


@pytest.mark.parametrize("bad", ["nan", "inf", "overflow"])
def test_akima_refuses_what_scipy_refuses(bad):
    """Non-finite samples, or slopes that overflow, are an error (as in
    scipy), in one column and in many: never NaN, nor other columns changed."""
    from bgdask.kernels.interp import _AkimaSpline

    x, y = np.arange(6.0), np.array([0.0, 1.0, 2.0, 4.0, 3.0, 5.0])
    y[2] = {"nan": np.nan, "inf": np.inf, "overflow": 1e308}[bad]
    if bad == "overflow":
        y[3] = -1e308
    with np.errstate(over="ignore", invalid="ignore"):
        for values in (y, np.stack([np.arange(6.0), y], axis=1)):
            with pytest.raises(ValueError, match="finite"):
                interpolate_1d(x, values, [1.5, 7.0], "AKIMA_SPLINE")
        with pytest.raises(ValueError, match="finite"):
            _AkimaSpline(x, y)


def test_fill_gaps_falls_back_where_the_compiled_akima_does_not_apply():
    """Too few points for Akima (the reduced style), and unordered x (the error)."""
    x = np.arange(4.0)
    y = np.array([1.0, 3.0, 2.0, 5.0])
    assert interpolate_1d(x, y, [1.5], "AKIMA_SPLINE").tobytes() == \
        interpolate_1d(x, y, [1.5], "NATURAL_SPLINE").tobytes()
    with pytest.raises(ValueError, match="strictly increasing"):
        interpolate_1d(np.array([0.0, 2.0, 1.0, 3.0, 4.0]), np.arange(5.0), [1.0], "AKIMA_SPLINE")


@pytest.mark.parametrize("seed", range(30))
def test_akima_spline_is_bitwise_scipys_with_its_derivatives(seed):
    """The Akima spline the interpolants use (scipy.interpolate is not
    imported for it) gives Akima1DInterpolator's values and first and second
    derivatives bit for bit, for one column and many (where the cut-off of
    an undefined slope is taken against the largest over every column)."""
    from scipy.interpolate import Akima1DInterpolator

    from bgdask.kernels.interp import _AkimaSpline

    rng = np.random.default_rng(seed)
    x = np.unique(np.sort(rng.uniform(-100, 5000, rng.integers(5, 60))))
    shape = (x.size,) if seed % 2 else (x.size, int(rng.integers(1, 200)))
    y = rng.normal(0, 50, shape) * 10.0 ** rng.uniform(-6, 6, shape[1:] or None)
    if seed % 3 == 0:
        y[rng.integers(0, x.size, x.size // 2)] = y[0]
    span = x[-1] - x[0]
    xq = np.concatenate([rng.uniform(x[0] - span, x[-1] + span, 100), x, [np.nan]])
    want, got = Akima1DInterpolator(x, y, axis=0, extrapolate=True), _AkimaSpline(x, y)
    assert got.c.tobytes() == want.c.tobytes()
    for nu in (0, 1, 2):
        w, g = want(xq, nu), got(xq, nu)
        assert g.shape == w.shape and g.tobytes() == w.tobytes(), nu


def test_modelling_a_background_imports_no_scipy_interpolate():
    """A worker that fills, models and evaluates a background in the Akima
    style (the default) does without scipy.interpolate (0.4-0.7 s to import)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from bgdask.kernels.interp import fill_gaps, separable_interpolate\n"
            "g = np.add.outer(np.arange(6.0), np.arange(7.0)) ** 1.5\n"
            "good = np.ones(g.shape, bool); good[2, 3] = good[4, 1] = False\n"
            "xc, yc = np.arange(7.0) * 10, np.arange(6.0) * 10\n"
            "f = fill_gaps(g, good, xc, yc)\n"
            "separable_interpolate(f, xc, yc, np.linspace(-5, 70, 80), np.linspace(-5, 60, 70))\n"
            "print(sorted(m for m in sys.modules if m.startswith('scipy.interpolate')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
