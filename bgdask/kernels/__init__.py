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
