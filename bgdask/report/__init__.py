"""Figures and the run report of a bgdask output store.

Three products, one module each:

* :mod:`bgdask.report.mosaic`: the tract mosaic binning (a visit before and
  after matching, and against the reference, binned one row block at a time);
* :mod:`bgdask.report.figures`: the figures (``bgdask plot``):
  :func:`render_figures`, :func:`write_figures`;
* :mod:`bgdask.report.page`: the self-contained HTML page (``bgdask
  report``): :func:`write_report`, its stylesheet and table-sorting script
  package resources (``report.css``, ``report.js``).

They read a store only through :class:`bgdask.io.store.Store`.
"""

from .figures import FIGURE_SIZES, Figure, render_figures, write_figures
from .mosaic import MAX_MOSAIC_BINS
from .page import write_report

__all__ = ["FIGURE_SIZES", "MAX_MOSAIC_BINS", "Figure", "render_figures", "write_figures", "write_report"]
