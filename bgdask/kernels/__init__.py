"""Compute kernels: pure functions of NumPy arrays (no Dask, no I/O, no config objects).

The names of what the kernels implement are defined here, once, so that the
configuration can check its fields without importing numba or scipy.
"""

#: Superpixel statistics (:mod:`bgdask.kernels.stats`).
STATISTICS = ("MEAN", "MEDIAN", "MEANCLIP")
#: Interpolation styles (Rubin's names), poorest first; NONE is CONSTANT, the
#: nearest point (:mod:`bgdask.kernels.interp`).
STYLES = ("NONE", "CONSTANT", "LINEAR", "NATURAL_SPLINE", "AKIMA_SPLINE")
#: The fewest points each style needs (Rubin's afw values).
MIN_POINTS = {"NONE": 1, "CONSTANT": 1, "LINEAR": 2, "NATURAL_SPLINE": 3, "AKIMA_SPLINE": 5}
#: What happens beyond the outermost points of an interpolation.
EXTRAPOLATIONS = ("quadratic", "linear", "nearest")
#: Where a superpixel's value is placed: Rubin's ``centre`` of the superpixel,
#: or the ``centroid`` of the pixels it counted (:mod:`bgdask.kernels.centroid`).
PLACEMENTS = ("centre", "centroid")
#: Sparse solvers of the global solve (:mod:`bgdask.kernels.solve`): "auto"
#: takes CHOLMOD when scikit-sparse imports, else SciPy's SuperLU.
SOLVERS = ("auto", "cholmod", "superlu")
#: Most partners a visit keeps in the global solve (beyond the pairs that keep
#: the graph connected and the pairs with the reference).
MAX_PARTNERS = 8
#: Default ``global_smoothness`` (lambda, dimensionless), chosen by
#: benchmarks/bench_global.py (docs/global.md).
DEFAULT_SMOOTHNESS = 0.1
