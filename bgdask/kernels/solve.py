"""The global solve: every visit's offset surface from all its overlaps at once (issue 14).

Pure functions of arrays (no Dask, no I/O). Notation: visits ``u, v``; the
tract's superpixel grid of ``ny x nx`` nodes, node ``(j, i)`` centred on
``((i + 0.5) x_bin, (j + 0.5) y_bin)``; ``o_v`` the offset grid of visit v
(matched = image + offset, as in the reference method).

Data
    For each chosen pair (u, v), :class:`PairData` holds the superpixel
    statistics of the difference image ``u - v`` (``S = mean * N``, ``N``,
    ``V = var * N``, exactly as the reference method's ``ref - visit``), and
    optionally the window sums of the counted pixels' positions (``SX``,
    ``SY``, :mod:`bgdask.kernels.centroid`) and of the two warps' variance
    planes (``SP``). A superpixel enters when ``N >= min_count`` and its
    mean is finite and its variance positive.

Equations, one row per pair and good superpixel s (the "pair equations")
    ``o_v(p_s) - o_u(p_s) = d_uv(s) = S / N``, weight ``w = N / (V / N)``,
    where ``o(p)`` is the bilinear interpolation of the grid at ``p``: the
    node itself (``placement="centre"``, Rubin's) or the centroid of the
    counted pixels (``"centroid"``). Bilinear is how the offsets are sampled
    from the grid afterwards (:func:`bgdask.background.coarse_offsets`), so
    the data constrain the very surface that is applied.

Smoothness rows, for every visit and every stencil inside its unknowns
    second differences along x and along y, and the mixed difference
    (weight doubled), i.e. a discrete thin-plate energy
    ``integral of f_xx**2 + 2 f_xy**2 + f_yy**2``, each row weighted by
    ``lambda * median(w) * (L / h)**4`` (``h`` the bin along the row's axes,
    ``L`` = :data:`SMOOTHNESS_BIN`). ``lambda`` (``global_smoothness``) is
    dimensionless and means the same physical prior at every bin size; at
    ``L``-pixel bins it is the plain factor on the median data weight.

Gauge
    ``o_ref = 0``: the reference has no unknowns. A tiny guard
    (first differences inside each visit's unknowns, weight ``RIDGE *
    median(w)``) fixes what nothing else does: a visit seen at only one or
    two superpixels has slopes that neither its data nor the thin-plate
    prior determine, and the guard makes them flat (a ridge on the values
    would pull them towards zero instead: tens of nJy of slope in a test).
    Elsewhere its effect is far below the noise. The factored matrix also
    carries a diagonal shift ``SHIFT`` times smaller, refined away.

Unknowns
    For each visit connected to the reference through the pair graph: the
    nodes whose window holds a finite pixel of it (``support``), grown by
    ``margin`` nodes (a 3 x 3 neighbourhood per step), plus the nodes of its
    data rows' stencils; islands of that set without any data row are left
    out. Every other node of its grid is filled with the nearest solved
    value, so the grids are defined everywhere, like the reference method's
    models, and go through the same interpolation, coarse offsets and
    stage C.

Solve
    The normal equations ``A^T W A x = A^T W d`` (guard rows included) by a sparse
    Cholesky factorisation: CHOLMOD (scikit-sparse, an optional extra) when
    importable, else SciPy's SuperLU with a symmetric ordering
    (``MMD_AT_PLUS_A``, ``SymmetricMode``, ``diag_pivot_thresh=0``: no
    pivoting, which the positive definite matrix does not need); then
    iterative refinement steps (against the matrix without the shift) while
    they reduce the residual.

What the data cannot see
    Adding the same function to every visit's grid changes no pair
    equation: only the reference's zero fixes it, and only where the
    reference has data. Elsewhere the offsets are relative (visits agree
    with each other), continued from the reference's footprint by the
    smoothness prior.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from ..errors import ConfigError, ModelError
from . import DEFAULT_SMOOTHNESS, MAX_PARTNERS, PLACEMENTS, SOLVERS

__all__ = [
    "MAX_PARTNERS",
    "DEFAULT_SMOOTHNESS",
    "SMOOTHNESS_BIN",
    "RIDGE",
    "MARGIN",
    "SOLVERS",
    "PairData",
    "DisconnectedError",
    "GlobalSolution",
    "SolveInfo",
    "pair_overlaps",
    "select_pairs",
    "components",
    "disconnected_visits",
    "unknown_nodes",
    "stencils",
    "solve_global",
    "solve_spd",
    "have_cholmod",
    "check_solver",
]

#: Bin size (pixels) at which lambda is the plain factor on the median data
#: weight; at bin h the rows get lambda * (SMOOTHNESS_BIN / h)**4.
SMOOTHNESS_BIN = 128
#: Weight of the guard rows (first differences inside each visit's unknowns),
#: relative to the median data weight.
RIDGE = 1e-8
#: Diagonal shift of the factored matrix, relative to the guard's weight (the
#: solution is refined against the matrix without it).
SHIFT = 1e-4
#: Nodes added around each visit's support (3 x 3 growth steps).
MARGIN = 1
#: Weightings of the pair equations: N / var, or uniform (for comparison).
WEIGHTINGS = ("inverse_variance", "uniform")
#: Largest number of refinement steps after the direct solve.
MAX_REFINE = 20


class DisconnectedError(ModelError):
    """Visits share no chain of overlapping visits with the reference."""

    def __init__(self, message: str, visits: Sequence[int]):
        super().__init__(message)
        self.visits = list(visits)


@dataclass(frozen=True)
class PairData:
    """Superpixel statistics of the difference ``u - v`` on a block of the
    grid, rows ``iy0..iy0+h`` and columns ``ix0..ix0+w`` (as an accumulator).

    ``S, N, V`` as :func:`~bgdask.kernels.stats.superpixel_stats`; ``SX, SY``
    (for centroid placement) and ``SP`` (variance planes of both warps summed
    over the counted pixels, for the expected residual) as
    :func:`~bgdask.kernels.centroid.window_sums`, or None.
    """

    u: int
    v: int
    S: np.ndarray
    N: np.ndarray
    V: np.ndarray
    SX: np.ndarray | None = None
    SY: np.ndarray | None = None
    SP: np.ndarray | None = None
    iy0: int = 0
    ix0: int = 0


@dataclass
class SolveInfo:
    """Size, cost and accuracy of one solve."""

    n_unknowns: int = 0
    n_data_rows: int = 0
    n_smooth_rows: int = 0
    nnz_normal: int = 0
    nnz_factor: int = 0
    solver: str = ""
    refinements: int = 0
    residual: float = 0.0          # ||M x - b|| / ||b|| of the normal equations
    t_build: float = 0.0
    t_factor: float = 0.0
    t_solve: float = 0.0
    factor_bytes: int = 0          # values and indices of the factor(s)
    median_weight: float = 0.0
    blas_pinned: bool = False      # BLAS held to one thread during the solve (threadpoolctl)


@dataclass
class GlobalSolution:
    """Every visit's offset grid, the unknowns it was solved on, and the diagnostics."""

    grids: dict[int, np.ndarray]
    unknown: dict[int, np.ndarray]
    status: dict[int, str]                     # reference | matched | skipped
    visit_table: dict[int, dict]               # n_partners, n_data, n_good, resid_rms, expected_rms, n_unknowns
    pair_table: dict[tuple[int, int], dict]    # n_overlap, resid_rms, expected_rms
    info: SolveInfo = field(default_factory=SolveInfo)
    #: visit -> bool grid: the superpixels where it has a pair equation
    observed: dict[int, np.ndarray] = field(default_factory=dict)


# -- pairs and connectivity -----------------------------------------------------

def pair_overlaps(coverage: Mapping[int, np.ndarray]) -> dict[tuple[int, int], int]:
    """Superpixels both visits of each pair cover (``coverage[v]``: bool grid,
    e.g. ``N >= min_count`` of the visit's own statistics); pairs with none
    are left out. Keys are (u, v) with u < v."""
    visits = sorted(coverage)
    if not visits:
        return {}
    flat = np.stack([np.asarray(coverage[v], dtype=bool).ravel() for v in visits]).astype(np.int32)
    shared = flat @ flat.T
    out = {}
    for a in range(len(visits)):
        for b in range(a + 1, len(visits)):
            if shared[a, b] > 0:
                out[(visits[a], visits[b])] = int(shared[a, b])
    return out


def _key(u: int, v: int) -> tuple[int, int]:
    return (u, v) if u < v else (v, u)


def select_pairs(overlaps: Mapping[tuple[int, int], int], ref: int,
                 max_partners: int = MAX_PARTNERS) -> list[tuple[int, int]]:
    """The pairs to measure, from every overlapping pair and its overlap.

    Kept: every pair with the reference; a maximum spanning forest of the
    overlap graph (so the kept graph connects exactly what the full graph
    connects); then the other pairs by decreasing overlap (ties by visit
    ids) while both visits have fewer than ``max_partners`` partners. A
    visit can exceed ``max_partners`` only through the first two rules.
    Returns sorted (u, v) keys with u < v. Deterministic.
    """
    if max_partners < 1:
        raise ConfigError(f"max_partners must be >= 1, got {max_partners}")
    pairs = sorted(_key(u, v) for u, v in overlaps if u != v)
    if not pairs:
        return []
    size = {p: int(overlaps[p] if p in overlaps else overlaps[(p[1], p[0])]) for p in pairs}
    visits = sorted({v for p in pairs for v in p})
    index = {v: i for i, v in enumerate(visits)}
    kept = {p for p in pairs if ref in p}
    # maximum spanning forest: minimum spanning tree of (big - overlap), a
    # strictly positive weight; ties broken by the pair order through tiny
    # distinct increments so the forest does not depend on the sort
    big = max(size.values()) + 1.0
    rows = [index[p[0]] for p in pairs]
    cols = [index[p[1]] for p in pairs]
    data = [(big - size[p]) + k * 1e-9 / len(pairs) for k, p in enumerate(pairs)]
    g = sp.csr_matrix((data, (rows, cols)), shape=(len(visits), len(visits)))
    tree = minimum_spanning_tree(g).tocoo()
    for a, b in zip(tree.row, tree.col):
        kept.add(_key(visits[a], visits[b]))
    count = {v: 0 for v in visits}
    for u, v in kept:
        count[u] += 1
        count[v] += 1
    for p in sorted(pairs, key=lambda p: (-size[p], p)):
        if p in kept:
            continue
        u, v = p
        if count[u] < max_partners and count[v] < max_partners:
            kept.add(p)
            count[u] += 1
            count[v] += 1
    return sorted(kept)


def components(visits: Iterable[int], pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the pair graph, each sorted, ordered by their
    smallest visit."""
    visits = sorted(set(visits))
    index = {v: i for i, v in enumerate(visits)}
    pairs = [p for p in pairs if p[0] in index and p[1] in index]
    g = sp.coo_matrix((np.ones(len(pairs)), ([index[u] for u, _ in pairs], [index[v] for _, v in pairs])),
                      shape=(len(visits), len(visits)))
    _, labels = connected_components(g, directed=False)
    groups: dict[int, list[int]] = {}
    for v, lab in zip(visits, labels):
        groups.setdefault(int(lab), []).append(v)
    return sorted(groups.values(), key=lambda c: c[0])


def disconnected_visits(visits: Iterable[int], pairs: Iterable[tuple[int, int]], ref: int,
                        on_disconnected: str = "raise") -> list[int]:
    """Visits with no chain of pairs to ``ref``. With ``on_disconnected="raise"``
    (the default) any such visit raises a :class:`DisconnectedError` naming
    them and the components; with ``"skip"`` they are returned."""
    comps = components(visits, pairs)
    lost = sorted(v for c in comps if ref not in c for v in c)
    if lost and on_disconnected == "raise":
        groups = "; ".join("{" + ", ".join(map(str, c)) + "}" for c in comps if ref not in c)
        raise DisconnectedError(
            f"visit(s) {', '.join(map(str, lost))} share no chain of overlapping visits with the "
            f"reference visit {ref} (separate groups: {groups}); set on_no_overlap: skip to leave "
            "them unmatched", lost)
    if on_disconnected not in ("raise", "skip"):
        raise ConfigError(f"on_disconnected must be 'raise' or 'skip', got {on_disconnected!r}")
    return lost


# -- geometry ------------------------------------------------------------------

def stencils(good: np.ndarray, x_bin: int, y_bin: int, cx=None, cy=None):
    """Bilinear stencils of the values at the good nodes of a grid.

    ``good``: bool (ny, nx). Without ``cx, cy`` (centre placement) each value
    sits on its node. With them (centroid placement, tract coordinates of
    each node's value) it is spread on the four nodes around it, with the
    weights of :func:`bgdask.kernels.interp.linear_resample` (linear
    extrapolation beyond the outermost nodes). Returns ``(j, i, nodes,
    weights)``: the good nodes (row-major order), flat node indices (n, k)
    and weights (n, k), zero weights dropped to index -1.
    """
    ny, nx = good.shape
    j, i = np.nonzero(good)
    if cx is None:
        return j, i, (j * nx + i)[:, None], np.ones((j.size, 1))

    def axis(pos, n, b):
        if n == 1:
            return np.zeros(pos.size, np.int64), np.zeros(pos.size)
        t = pos / b - 0.5
        i0 = np.clip(np.floor(t).astype(np.int64), 0, n - 2)
        return i0, t - i0

    ix0, fx = axis(np.asarray(cx, dtype=np.float64)[j, i], nx, x_bin)
    iy0, fy = axis(np.asarray(cy, dtype=np.float64)[j, i], ny, y_bin)
    dx = 1 if nx > 1 else 0
    dy = 1 if ny > 1 else 0
    nodes = np.stack([iy0 * nx + ix0, iy0 * nx + ix0 + dx,
                      (iy0 + dy) * nx + ix0, (iy0 + dy) * nx + ix0 + dx], axis=1)
    weights = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
    if nx == 1:
        weights[:, 1] = weights[:, 3] = 0.0
        weights[:, 0], weights[:, 2] = 1 - fy, fy
    if ny == 1:
        weights[:, 2] = weights[:, 3] = 0.0
        weights[:, 0], weights[:, 1] = (1 - fx, fx) if nx > 1 else (np.ones(j.size), 0.0)
    nodes = np.where(weights != 0.0, nodes, -1)
    return j, i, nodes, weights


def unknown_nodes(support: np.ndarray, margin: int = MARGIN, extra: np.ndarray | None = None) -> np.ndarray:
    """``support`` (bool grid) grown by ``margin`` 3 x 3 steps, with the
    ``extra`` nodes (bool grid) added."""
    out = np.asarray(support, dtype=bool)
    if margin > 0 and out.any():
        out = ndimage.binary_dilation(out, structure=np.ones((3, 3), bool), iterations=int(margin))
    if extra is not None:
        out = out | extra
    return out


# -- the solve -------------------------------------------------------------------

def _one_blas_thread():
    """A context running BLAS on one thread (threadpoolctl, when installed).

    CHOLMOD's supernodal factorisation (and any BLAS-backed step) gives
    results that differ in the last bits between BLAS thread counts: a Dask
    worker (one thread by default) and the synchronous scheduler (all cores)
    would disagree. Pinned to one thread, the solve is bitwise the same
    everywhere; without threadpoolctl it follows the environment
    (``OPENBLAS_NUM_THREADS``)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext(), False
    return threadpool_limits(limits=1, user_api="blas"), True


def have_cholmod() -> bool:
    try:
        from sksparse.cholmod import cholesky  # noqa: F401
    except ImportError:
        return False
    return True


def check_solver(solver: str) -> None:
    """Raise a ConfigError unless ``solver`` can run here (``cholmod`` needs scikit-sparse)."""
    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if solver == "cholmod" and not have_cholmod():
        how = "pip install 'bgdask[cholmod]' (it builds against SuiteSparse: apt-get install libsuitesparse-dev)"
        raise ConfigError("solver 'cholmod' needs scikit-sparse, which does not import here",
                          api=f"{how}, or use solver='auto' or 'superlu'",
                          cli=f"{how}, or use --solver auto or superlu")


def solve_spd(M: sp.spmatrix, b: np.ndarray, solver: str = "auto", shift: float = 0.0
              ) -> tuple[np.ndarray, SolveInfo]:
    """Solve the symmetric positive semi-definite system ``M x = b``.

    ``M + shift * I`` is factored (the shift guards the factorisation), then
    the solution is refined against ``M`` itself while the residual falls by
    at least a tenth per step (at most :data:`MAX_REFINE` steps): where the
    data determine ``x``, the shift leaves no bias; where they do not (a
    singular ``M``), the shifted solution stays."""
    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if solver == "auto":
        solver = "cholmod" if have_cholmod() else "superlu"
    M = sp.csc_matrix(M)
    info = SolveInfo(solver=solver, nnz_normal=int(M.nnz))
    limit, info.blas_pinned = _one_blas_thread()
    with limit:
        x = _factor_and_solve(M, b, solver, shift, info)
    return x, info


def _factor_and_solve(M, b, solver, shift, info) -> np.ndarray:
    t0 = time.perf_counter()
    K = M + sp.identity(M.shape[0], format="csc") * shift if shift else M
    if solver == "cholmod":
        try:
            from sksparse.cholmod import cholesky
        except ImportError:
            check_solver(solver)
        factor = cholesky(K)
        info.nnz_factor = int(factor.L().nnz)
        info.factor_bytes = info.nnz_factor * 12 + 8 * (M.shape[0] + 1)
        apply = factor
    else:
        from scipy.sparse.linalg import splu

        lu = splu(K, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options=dict(SymmetricMode=True))
        info.nnz_factor = int(lu.L.nnz + lu.U.nnz)
        info.factor_bytes = info.nnz_factor * 12 + 16 * (M.shape[0] + 1)
        apply = lu.solve
    t1 = time.perf_counter()
    x = apply(b)
    norm_b = float(np.linalg.norm(b)) or 1.0
    r = b - M @ x
    res = float(np.linalg.norm(r)) / norm_b
    for _ in range(MAX_REFINE):
        if res < 1e-14:
            break
        x_new = x + apply(r)
        r_new = b - M @ x_new
        res_new = float(np.linalg.norm(r_new)) / norm_b
        if not res_new < 0.9 * res:
            if res_new < res:
                x, res = x_new, res_new
                info.refinements += 1
            break
        x, r, res = x_new, r_new, res_new
        info.refinements += 1
    info.t_factor = t1 - t0
    info.t_solve = time.perf_counter() - t1
    info.residual = res
    return x


def _dense(a: np.ndarray | None, pair: PairData, shape) -> np.ndarray | None:
    if a is None:
        return None
    out = np.zeros(shape)
    h, w = a.shape
    out[pair.iy0:pair.iy0 + h, pair.ix0:pair.ix0 + w] = a
    return out


def _pair_rows(pair: PairData, shape, min_count, x_bin, y_bin, placement):
    """The good superpixels of a pair: stencils, value d, N/var, expected variance."""
    N = _dense(pair.N, pair, shape)
    S = _dense(pair.S, pair, shape)
    V = _dense(pair.V, pair, shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = S / N
        var = V / N
    good = (N >= min_count) & (N > 0) & np.isfinite(d) & np.isfinite(var) & (var > 0)
    if placement == "centroid":
        if pair.SX is None or pair.SY is None:
            raise ConfigError(f"pair ({pair.u}, {pair.v}): centroid placement needs SX and SY")
        with np.errstate(invalid="ignore", divide="ignore"):
            # the counted pixels of the statistics are those of the sums
            cx = _dense(pair.SX, pair, shape) / N
            cy = _dense(pair.SY, pair, shape) / N
        good &= np.isfinite(cx) & np.isfinite(cy)
        j, i, nodes, wts = stencils(good, x_bin, y_bin, cx, cy)
    else:
        j, i, nodes, wts = stencils(good, x_bin, y_bin)
    n = N[j, i]
    w = n / var[j, i]
    if pair.SP is not None:
        expected = _dense(pair.SP, pair, shape)[j, i] / (n * n)
    else:
        expected = var[j, i] / n
    return j, i, nodes, wts, d[j, i], w, expected


def _smooth_rows(col: np.ndarray):
    """Second-difference stencils inside a visit's unknowns (col >= 0):
    (columns (n, k), coefficients (k,), kind) for xx, yy and xy."""
    ny, nx = col.shape
    out = []
    if nx >= 3:
        a, b, c = col[:, :-2], col[:, 1:-1], col[:, 2:]
        ok = (a >= 0) & (b >= 0) & (c >= 0)
        out.append((np.stack([a[ok], b[ok], c[ok]], 1), np.array([1.0, -2.0, 1.0]), "xx"))
    if ny >= 3:
        a, b, c = col[:-2], col[1:-1], col[2:]
        ok = (a >= 0) & (b >= 0) & (c >= 0)
        out.append((np.stack([a[ok], b[ok], c[ok]], 1), np.array([1.0, -2.0, 1.0]), "yy"))
    if nx >= 2 and ny >= 2:
        a, b, c, d = col[:-1, :-1], col[:-1, 1:], col[1:, :-1], col[1:, 1:]
        ok = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)
        out.append((np.stack([a[ok], b[ok], c[ok], d[ok]], 1), np.array([1.0, -1.0, -1.0, 1.0]), "xy"))
    return out


def solve_global(
    pairs: Sequence[PairData],
    support: Mapping[int, np.ndarray],
    ref: int,
    x_bin: int,
    y_bin: int,
    *,
    min_count: float,
    smoothness: float = DEFAULT_SMOOTHNESS,
    placement: str = "centroid",
    weighting: str = "inverse_variance",
    margin: int = MARGIN,
    ridge: float = RIDGE,
    solver: str = "auto",
    on_disconnected: str = "raise",
) -> GlobalSolution:
    """Every visit's offset grid from the pair statistics, in one weighted
    least-squares solve (see the module docstring for the equations).

    Parameters
    ----------
    pairs : the chosen pairs' statistics (:class:`PairData`, u - v).
    support : visit -> bool grid (ny, nx): the nodes whose window holds a
        finite pixel of the visit (``window_sums(...).F > 0`` summed over its
        warps). Its keys are the visits to solve for, the reference included.
    ref : the reference visit (gauge o_ref = 0).
    x_bin, y_bin : bin sizes (pixels).
    min_count : least counted pixels of a usable superpixel
        (``min_frac * x_bin * y_bin``, as the reference method's good ones).
    smoothness : lambda (``global_smoothness``), dimensionless.
    placement : "centroid" (needs SX, SY) or "centre".
    weighting : "inverse_variance" (N / var) or "uniform".
    margin : 3 x 3 growth steps of each visit's unknowns beyond its support.
    ridge : weight of the guard rows (first differences), relative to the
        median data weight; 0 leaves them out (and the diagonal shift).
    solver : "auto", "cholmod" or "superlu".
    on_disconnected : "raise" a :class:`DisconnectedError` for visits not
        connected to the reference, or "skip" them (status ``skipped``, zero grid).
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    if not (math.isfinite(smoothness) and smoothness >= 0):
        raise ConfigError(f"global_smoothness must be >= 0, got {smoothness}")
    if ref not in support:
        raise ConfigError(f"the reference visit {ref} is not among the visits {sorted(support)}")
    t0 = time.perf_counter()
    visits = sorted(support)
    shape = np.asarray(support[ref]).shape
    ny, nx = shape
    for p in pairs:
        if p.u not in support or p.v not in support or p.u == p.v:
            raise ConfigError(f"pair ({p.u}, {p.v}) is not a pair of two of the visits {visits}")
    pairs = sorted(pairs, key=lambda p: (p.u, p.v))   # the assembly order: input order does not matter
    # data rows per pair; a pair connects its visits only through usable superpixels
    rows = [(p, *_pair_rows(p, shape, min_count, x_bin, y_bin, placement)) for p in pairs]
    rows = [r for r in rows if r[5].size]
    lost = set(disconnected_visits(visits, [(r[0].u, r[0].v) for r in rows], ref, on_disconnected))
    solved = [v for v in visits if v != ref and v not in lost]
    rows = [r for r in rows if r[0].u not in lost and r[0].v not in lost]
    all_w = np.concatenate([r[6] for r in rows]) if rows else np.zeros(0)
    w_med = float(np.median(all_w)) if all_w.size else 1.0
    if weighting == "uniform":
        rows = [r[:6] + (np.full(r[6].shape, w_med),) + r[7:] for r in rows]

    # unknowns: support + margin + stencil nodes, islands with data only
    touched = {v: np.zeros(ny * nx, bool) for v in solved}
    for p, j, i, nodes, wts, *_ in rows:
        for v in (p.u, p.v):
            if v in touched:
                touched[v][nodes[nodes >= 0]] = True
    unknown = {}
    for v in solved:
        data = touched[v].reshape(shape)
        grown = unknown_nodes(support[v], margin, data)
        labels, n_lab = ndimage.label(grown, structure=np.ones((3, 3), bool))
        keep = np.unique(labels[data])
        unknown[v] = np.isin(labels, keep[keep > 0])
    col = {}
    offset = 0
    for v in solved:
        c = np.full(shape, -1, dtype=np.int64)
        k = int(unknown[v].sum())
        c[unknown[v]] = np.arange(offset, offset + k)
        col[v] = c
        offset += k
    n_unk = offset

    # the weighted design matrix A_w = sqrt(W) A, row by row block
    r_idx, c_idx, vals, rhs = [], [], [], []
    nrow = 0
    data_slices = []
    for p, j, i, nodes, wts, d, w, expected in rows:
        n = d.size
        sw = np.sqrt(w)
        row = np.arange(nrow, nrow + n)
        for v, sign in ((p.v, 1.0), (p.u, -1.0)):
            if v == ref:
                continue
            cols = np.where(nodes >= 0, col[v].ravel()[np.maximum(nodes, 0)], -1)
            if np.any((cols < 0) & (nodes >= 0)):
                raise AssertionError("a stencil node is not an unknown")  # pragma: no cover
            ok = cols >= 0
            r_idx.append(np.broadcast_to(row[:, None], cols.shape)[ok])
            c_idx.append(cols[ok])
            vals.append((sign * wts * sw[:, None])[ok])
        rhs.append(d * sw)
        data_slices.append((p, nrow, n, d, w, expected, j, i))
        nrow += n
    n_data = nrow
    hx, hy = float(x_bin), float(y_bin)
    L = float(SMOOTHNESS_BIN)
    row_weight = {"xx": smoothness * w_med * (L / hx) ** 4,
                  "yy": smoothness * w_med * (L / hy) ** 4,
                  "xy": 2.0 * smoothness * w_med * L ** 4 / (hx * hx * hy * hy)}
    n_smooth = 0
    if smoothness > 0:
        for v in solved:
            for cols, coef, kind in _smooth_rows(col[v]):
                n = cols.shape[0]
                if n == 0:
                    continue
                row = np.arange(nrow, nrow + n)
                r_idx.append(np.repeat(row, cols.shape[1]))
                c_idx.append(cols.ravel())
                vals.append(np.tile(coef * math.sqrt(row_weight[kind]), n))
                rhs.append(np.zeros(n))
                nrow += n
                n_smooth += n
    if ridge > 0:
        # the guard: first differences (a membrane) with a tiny weight; it
        # fixes only what nothing else does (the slopes of a visit seen at one
        # or two superpixels: flat) and leaves no measurable bias elsewhere
        w_guard = math.sqrt(ridge * w_med)
        for v in solved:
            c = col[v]
            for a, b_ in ((c[:, :-1], c[:, 1:]), (c[:-1], c[1:])):
                ok = (a >= 0) & (b_ >= 0)
                n = int(ok.sum())
                if n == 0:
                    continue
                row = np.arange(nrow, nrow + n)
                r_idx.append(np.repeat(row, 2))
                c_idx.append(np.stack([a[ok], b_[ok]], 1).ravel())
                vals.append(np.tile(np.array([w_guard, -w_guard]), n))
                rhs.append(np.zeros(n))
                nrow += n
    A = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0),
                       (np.concatenate(r_idx) if r_idx else np.zeros(0, np.int64),
                        np.concatenate(c_idx) if c_idx else np.zeros(0, np.int64))),
                      shape=(nrow, n_unk))
    b = np.concatenate(rhs) if rhs else np.zeros(0)
    M = (A.T @ A).tocsc()
    Atb = A.T @ b
    t_build = time.perf_counter() - t0
    if n_unk:
        x, info = solve_spd(M, Atb, solver, shift=ridge * SHIFT * w_med)
    else:
        x, info = np.zeros(0), SolveInfo(solver="none")
    info.t_build = t_build
    info.n_unknowns = n_unk
    info.n_data_rows = n_data
    info.n_smooth_rows = n_smooth
    info.median_weight = w_med

    # grids: solved nodes, the rest filled with the nearest solved value
    grids, status = {}, {}
    for v in visits:
        if v == ref:
            grids[v], status[v] = np.zeros(shape), "reference"
        elif v in lost:
            grids[v], status[v] = np.zeros(shape), "skipped"
        else:
            g = np.full(shape, np.nan)
            g[unknown[v]] = x[col[v][unknown[v]]]
            if not unknown[v].all():
                _, (jj, ii) = ndimage.distance_transform_edt(~unknown[v], return_indices=True)
                g = g[jj, ii]
            grids[v], status[v] = g, "matched"

    # diagnostics: residuals of the pair equations (unweighted rows)
    resid_all = (A[:n_data] @ x - b[:n_data]) if n_data else np.zeros(0)
    pair_table, acc = {}, {v: [0, 0.0, 0.0, 0.0, set()] for v in visits}
    observed = {v: np.zeros(shape, bool) for v in visits}
    for p, start, n, d, w, expected, j, i in data_slices:
        observed[p.u][j, i] = True
        observed[p.v][j, i] = True
        r = resid_all[start:start + n] / np.sqrt(w)          # nJy
        sw = float(w.sum())
        swr = float((w * r * r).sum())
        swe = float((w * expected).sum())
        pair_table[(p.u, p.v)] = {
            "n_overlap": int(n),
            "resid_rms": math.sqrt(swr / sw) if n else float("nan"),
            "expected_rms": math.sqrt(swe / sw) if n else float("nan"),
        }
        for v, other in ((p.u, p.v), (p.v, p.u)):
            a = acc[v]
            a[0] += n
            a[1] += sw
            a[2] += swr
            a[3] += swe
            a[4].add(other)
    visit_table = {}
    for v in visits:
        n, sw, swr, swe, partners = acc[v]
        visit_table[v] = {
            "status": status[v],
            "n_partners": len(partners),
            "n_data": int(n),
            "n_good": int(observed[v].sum()),
            "n_unknowns": int(unknown[v].sum()) if v in unknown else 0,
            "resid_rms": math.sqrt(swr / sw) if sw > 0 else float("nan"),
            "expected_rms": math.sqrt(swe / sw) if sw > 0 else float("nan"),
        }
    return GlobalSolution(grids, unknown, status, visit_table, pair_table, info, observed)
