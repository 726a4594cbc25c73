"""Choosing the reference visit (ALGORITHM.md step 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .background import StatsImage
from .config import MatchConfig
from .errors import ModelError
from .geometry import superpixel_centers

__all__ = ["ReferenceFigures", "reference_figures", "choose_reference"]


@dataclass(frozen=True)
class ReferenceFigures:
    """One visit's raw figures: plane-fit chi2, mean variance, coverage."""

    visit: int
    chi2: float
    variance: float
    coverage: int


def reference_figures(visit: int, st: StatsImage, cfg: MatchConfig) -> ReferenceFigures:
    """Fit a + b x + c y to the stats image over the good superpixels,
    weighted by 1 / variance, and return chi2, mean variance and coverage."""
    ny, nx = st.values.shape
    xc = superpixel_centers(nx, cfg.x_bin)
    yc = superpixel_centers(ny, cfg.y_bin)
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    use = st.good & np.isfinite(st.variance) & (st.variance > 0)
    n_good = int(st.good.sum())
    if use.sum() < 3:
        return ReferenceFigures(visit, float("inf"), float("inf"), n_good)
    z = st.values[use]
    var = st.variance[use]
    w = 1.0 / np.sqrt(var)
    a = np.column_stack([np.ones_like(z), xx[use], yy[use]])
    coef, *_ = np.linalg.lstsq(a * w[:, None], z * w, rcond=None)
    r = z - a @ coef
    dof = n_good - 6
    chi2 = float(np.sum(r * r / var) / dof) if dof > 0 else float("inf")
    return ReferenceFigures(visit, chi2, float(np.mean(var)), n_good)


def choose_reference(
    figures: Mapping[int, ReferenceFigures], cfg: MatchConfig
) -> tuple[int, dict[int, dict[str, float]]]:
    """Normalise the figures across visits, weight them into a cost, and
    return the visit of least cost and every visit's figures and cost.

    chi2 / max(chi2), var / max(var) and min(coverage) / coverage, each in
    [0, 1]; a visit with undefined figures (too few good superpixels) costs
    infinity. Ties go to the smaller visit id.
    """
    if not figures:
        raise ModelError("no visit to choose a reference from")
    visits = sorted(figures)
    chi2 = np.array([figures[v].chi2 for v in visits], dtype=float)
    var = np.array([figures[v].variance for v in visits], dtype=float)
    cov = np.array([figures[v].coverage for v in visits], dtype=float)
    ok = np.isfinite(chi2) & np.isfinite(var) & (cov > 0)
    if not ok.any():
        raise ModelError("no visit has enough good superpixels to serve as the reference")
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_frac = chi2 / np.max(chi2[ok]) if np.max(chi2[ok]) > 0 else np.zeros_like(chi2)
        var_frac = var / np.max(var[ok]) if np.max(var[ok]) > 0 else np.zeros_like(var)
        cov_frac = np.min(cov[ok]) / cov
        cost = (
            cfg.best_ref_weight_chi2 * chi2_frac
            + cfg.best_ref_weight_variance * var_frac
            + cfg.best_ref_weight_global_coverage * cov_frac
        )
    cost = np.where(ok, cost, np.inf)
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
