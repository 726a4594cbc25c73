"""Choosing the reference visit (step 3 of docs/algorithm.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .background import Partial, StatsImage, stats_image
from .config import MatchConfig
from .errors import ModelError
from .geometry import superpixel_centers

__all__ = ["ReferenceCriteria", "reference_criteria", "visit_criteria", "cost_terms", "choose_reference"]


@dataclass(frozen=True)
class ReferenceCriteria:
    """One visit's criteria for the reference choice: plane-fit chi2, mean variance, coverage."""

    visit: int
    chi2: float
    variance: float
    coverage: int


def reference_criteria(visit: int, st: StatsImage, cfg: MatchConfig) -> ReferenceCriteria:
    """Fit a + b x + c y to the stats image over the good superpixels,
    weighted by 1 / variance, and return chi2, mean variance and coverage."""
    ny, nx = st.values.shape
    xc = superpixel_centers(nx, cfg.x_bin)
    yc = superpixel_centers(ny, cfg.y_bin)
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    use = st.good & np.isfinite(st.variance) & (st.variance > 0)
    n_good = int(st.good.sum())
    if use.sum() < 3:
        return ReferenceCriteria(visit, float("inf"), float("inf"), n_good)
    z = st.values[use]
    var = st.variance[use]
    w = 1.0 / np.sqrt(var)
    a = np.column_stack([np.ones_like(z), xx[use], yy[use]])
    coef, *_ = np.linalg.lstsq(a * w[:, None], z * w, rcond=None)
    r = z - a @ coef
    dof = n_good - 6
    chi2 = float(np.sum(r * r / var) / dof) if dof > 0 else float("inf")
    return ReferenceCriteria(visit, chi2, float(np.mean(var)), n_good)


def visit_criteria(total: Partial, grid_shape, cfg: MatchConfig, visit: int) -> ReferenceCriteria:
    """A visit's criteria from the sum of its warps' superpixel statistics
    (undefined when the visit has no good superpixel: it then cannot be the
    reference)."""
    try:
        st = stats_image(total.acc, grid_shape, cfg, f"visit {visit}")
    except ModelError:
        return ReferenceCriteria(visit, float("inf"), float("inf"), 0)
    return reference_criteria(visit, st, cfg)


def cost_terms(chi2, variance, coverage) -> dict[str, np.ndarray]:
    """The three normalised terms of the cost, each in [0, 1], and ``ok``
    (the visits with defined criteria; the others cost infinity).

    chi2 / max(chi2), var / max(var) and min(coverage) / coverage, the
    maxima and minimum taken over the ``ok`` visits only."""
    chi2, var, cov = (np.asarray(a, dtype=float) for a in (chi2, variance, coverage))
    ok = np.isfinite(chi2) & np.isfinite(var) & (cov > 0)
    if not ok.any():
        raise ModelError("no visit has enough good superpixels to serve as the reference")
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_frac = chi2 / np.max(chi2[ok]) if np.max(chi2[ok]) > 0 else np.zeros_like(chi2)
        var_frac = var / np.max(var[ok]) if np.max(var[ok]) > 0 else np.zeros_like(var)
        cov_frac = np.min(cov[ok]) / cov
    return {"chi2": chi2_frac, "variance": var_frac, "coverage": cov_frac, "ok": ok}


def choose_reference(
    criteria: Mapping[int, ReferenceCriteria], cfg: MatchConfig
) -> tuple[int, dict[int, dict[str, float]]]:
    """Normalise the criteria across visits (:func:`cost_terms`), weight them
    into a cost, and return the visit of least cost and every visit's
    criteria and cost. Ties go to the smaller visit id."""
    if not criteria:
        raise ModelError("no visit to choose a reference from")
    visits = sorted(criteria)
    chi2 = np.array([criteria[v].chi2 for v in visits], dtype=float)
    var = np.array([criteria[v].variance for v in visits], dtype=float)
    cov = np.array([criteria[v].coverage for v in visits], dtype=float)
    terms = cost_terms(chi2, var, cov)
    with np.errstate(invalid="ignore"):
        cost = (
            cfg.best_ref_weight_chi2 * terms["chi2"]
            + cfg.best_ref_weight_variance * terms["variance"]
            + cfg.best_ref_weight_global_coverage * terms["coverage"]
        )
    cost = np.where(terms["ok"], cost, np.inf)
    best = visits[int(np.argmin(cost))]
    table = {
        v: {
            "ref_chi2": float(chi2[i]),
            "ref_variance": float(var[i]),
            "ref_coverage": int(cov[i]),
            "ref_cost": float(cost[i]),
        }
        for i, v in enumerate(visits)
    }
    return best, table
