"""Superpixel statistics of one image (step 1 of docs/algorithm.md).

A pure function of arrays: :func:`superpixel_stats` measures, for every
superpixel of the tract grid whose window meets the image's box, the statistic
of the counted pixels in that window and returns ``S = mean * N``, ``N`` and
``V = variance * N`` (all float64) for the block of superpixels it covers.
Blocks of several images add up on the tract grid (``grid[iy0:iy0+nby,
ix0:ix0+nbx] += S``) in any grouping.

Windows
-------
Superpixel ``ix`` is centred on tract pixel ``(ix + 0.5) * x_bin``. Its window
has ``wsize = round(window_scale * x_bin)`` pixels (Python's ``round``, so
halves go to even) and starts at ``lo = floor((ix + 0.5) * x_bin - wsize / 2)``
(computed exactly in integers): pixels ``[lo, lo + wsize)``. With
``window_scale=2`` (Rubin's) this is ``[(ix - 0.5) x_bin, (ix + 1.5) x_bin)``
and neighbours overlap by half; ``window_scale=1`` gives the disjoint bins
``[ix x_bin, (ix + 1) x_bin)``. The same holds along y. Windows are clipped to
the image box.

Statistics (per window, on the n counted pixels -- finite and not bad -- taken
as float64)
-------------------------------------------------------------------------
* ``n == 0``: S = N = V = 0.
* ``MEAN``: m = mean, var = sample variance (ddof=1).
* ``MEDIAN``: m = median (NumPy's: mean of the two middle values for even n),
  var = sample variance (ddof=1).
* ``MEANCLIP``: median ``med`` and interquartile range ``q = p75 - p25``
  (NumPy's default 'linear' percentile). The state starts at ``c = med``,
  ``var = sample variance of all counted pixels`` and
  ``h = num_sigma_clip * 0.741301109 * q``. Then ``num_iter`` times: keep the
  pixels with ``|x - c| < h`` (strict); if none is kept, stop (the state is
  left as it was); else ``c = mean(kept)``, ``var = variance(kept, ddof=1)``
  and ``h = num_sigma_clip * sqrt(var)``. The result is ``m = c``, variance
  ``var``.

  Consequences: when the first iteration keeps nothing (e.g. a constant
  window, where ``q == 0`` and so ``h == 0``), the result is the median and the
  unclipped variance; ``num_iter == 0`` gives the same. When an iteration keeps
  a single pixel its variance is NaN, so ``h`` is NaN, the next iteration keeps
  nothing, and the variance stays NaN (so V = 0).
* Then ``S = m * n``, ``N = n``, ``V = var * n``; if ``m`` is not finite,
  ``S = N = V = 0``; if ``var`` is not finite (e.g. ``n < 2``), ``V = 0``.

Implementation
--------------
One numba kernel (``nogil=True``, no ``parallel``: callers get parallelism
from Dask threads; no Python loop over superpixels). Overlapping windows
share their pixels, so the work is organised by *cells*: the windows' clipped
limits cut the box into cells (with ``window_scale=2`` a cell is a bin-sized
square offset by half a bin, and each window is 2 x 2 cells; with 1.0 a cell
is a window). Every pixel is handled once, not once per window:

1. A value grid of up to ``_NBINS`` bins is placed on the 1st-99th
   percentile range of a sparse sample of the image (bin 0 and bin nb + 1
   take what falls below and above). The grid decides speed, and the last
   bits of the sums, which are taken about the bins' centres: on a
   1024 x 2100 block of a simulated warp, 256 or 64 bins instead of 512
   change S by at most 2.2e-16 and V by 4.3e-15 relative, N not at all. The
   grid is a function of the image and its windows, so the same input gives
   the same bits.
2. Each cell's counted pixels are bucketed by bin (a counting sort), and per
   bin the sums of ``x - z`` and ``(x - z)**2`` about the bin centre ``z``
   are kept. Cell rows are built as windows need them, in a small ring.
3. Per window, the bin counts of its cells give the bin of each wanted rank
   (median, quartiles); only those bins' pixels are copied out and the exact
   order statistics selected (quickselect). A clipping iteration
   ``|x - c| < h`` takes the bins wholly inside the limits from their bin
   sums, re-centred exactly, and tests the pixels of the (at most four)
   bins that may straddle a limit, and of the open-ended bins, one by one
   with the exact predicate; so the kept set is exactly the one of the
   definition, and each iteration costs O(bins) rather than O(pixels).
   Variances are two-pass (sums about the mean) whenever the mean is not
   close to the centre the sums were taken about.

Memory: a float64 copy of the few cell rows in use (2 rows of
``h_bin x width`` for Rubin's window), plus O(cells x bins) bin sums.
Speed on one core: about 5-9 ns per image pixel with 128-pixel bins, for
either window scale (see benchmarks/bench_kernel.py); small bins cost more
per pixel (per-window work is O(bins x cells)).

Summation order is fixed (no ``fastmath``, no threads), so results are
bitwise reproducible for the same inputs, and they agree with the plain NumPy
definitions (``np.median``, ``np.percentile``, ``np.mean``,
``np.var(ddof=1)``) to floating-point rounding (about 1e-15 relative).
Non-contiguous inputs are copied to contiguous arrays first (one compiled
variant per image dtype; only the parts that read the image depend on its
type, the per-window statistics are one kernel compiled once).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
from numba import njit

from ..errors import ConfigError
from . import STATISTICS

__all__ = ["IQ_TO_STDEV", "STATISTICS", "SuperpixelBlock", "bad_pixels", "superpixel_stats"]

#: Interquartile range to standard deviation of a Gaussian (afw's IQ_TO_STDEV).
IQ_TO_STDEV = 0.741301109

#: Statistic name -> kernel code.
STATISTIC_CODES = {name: code for code, name in enumerate(STATISTICS)}


class SuperpixelBlock(NamedTuple):
    """Superpixel sums of one image on a block of the tract superpixel grid."""

    S: np.ndarray  #: float64 (nby, nbx): mean * N
    N: np.ndarray  #: float64 (nby, nbx): number of counted pixels in the window
    V: np.ndarray  #: float64 (nby, nbx): variance * N
    iy0: int  #: row of the block's first superpixel in the tract grid
    ix0: int  #: column of the block's first superpixel in the tract grid


#: Most bins of the value grid on which each cell's pixels are bucketed; a
#: call uses about one bin per 32 pixels of its largest window, between
#: _MIN_BINS and _NBINS (per-window work is O(bins), per-pixel work is not).
_NBINS = 512
_MIN_BINS = 16


# ---------------------------------------------------------------------------
# numba core
# ---------------------------------------------------------------------------

_JIT = dict(nogil=True, cache=True, error_model="numpy")
# Integers passed to another kernel start as np.int64(0), not 0: numba would
# also compile the callee for the literal 0 (and compiling is what a first
# run after an install waits for).


@njit(**_JIT)
def _select(a, lo, hi, k):
    """Quickselect: reorder a[lo:hi] (no NaN) so that a[lo:k] <= a[k] <= a[k+1:hi].
    Requires lo <= k < hi. Median-of-three pivot, Hoare partition (robust to
    many equal values)."""
    left = lo
    right = hi - 1
    while right > left:
        mid = (left + right) >> 1
        # median of three -> a[left] <= a[mid] <= a[right]
        if a[mid] < a[left]:
            t = a[mid]
            a[mid] = a[left]
            a[left] = t
        if a[right] < a[left]:
            t = a[right]
            a[right] = a[left]
            a[left] = t
        if a[right] < a[mid]:
            t = a[right]
            a[right] = a[mid]
            a[mid] = t
        if right - left <= 2:
            return
        pivot = a[mid]
        i = left
        j = right
        while i <= j:
            while a[i] < pivot:
                i += 1
            while pivot < a[j]:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        # now a[left:j+1] <= pivot <= a[i:right+1] and a[j+1:i] == pivot
        if k <= j:
            right = j
        elif k >= i:
            left = i
        else:
            return


@njit(**_JIT)
def _min_to_front(a, lo, hi):
    """Swap the minimum of a[lo:hi] (hi > lo) into a[lo]."""
    best = lo
    v = a[lo]
    for i in range(lo + 1, hi):
        if a[i] < v:
            v = a[i]
            best = i
    a[best] = a[lo]
    a[lo] = v


@njit(**_JIT)
def _place(a, n, k, placed, nplaced):
    """Put the k-th smallest of a[:n] (no NaN) at a[k], keeping the partition
    property at the positions already placed (sorted, in placed[:nplaced]).
    Returns the new nplaced."""
    left = np.int64(0)
    right = n
    pos = 0
    for p in range(nplaced):
        q = placed[p]
        if q == k:
            return nplaced
        if q < k:
            left = q + 1
            pos = p + 1
        else:
            right = q
            break
    if k == left:
        _min_to_front(a, left, right)
    else:
        _select(a, left, right, k)
    for p in range(nplaced, pos, -1):
        placed[p] = placed[p - 1]
    placed[pos] = k
    return nplaced + 1



@njit(**_JIT)
def _lerp(lo, hi, g):
    """NumPy's _lerp for one quantile (g in [0, 1))."""
    if g == 0.0:
        return lo
    diff = hi - lo
    if g >= 0.5:
        return hi - diff * (1.0 - g)
    return lo + diff * g


@njit(**_JIT)
def _bin(x, lo, inv, nbf):
    """Bin of x: 0 below the grid, 1..nb on it, nb + 1 above it (and for NaN).
    Non-decreasing in x, branch-free."""
    t = (x - lo) * inv
    # conditional expressions, not min/max: they compile to selects, and
    # send NaN to nb + 1
    t = t if t < nbf else nbf
    t = t if t > -1.0 else -1.0
    return int(t + 1.0)


@njit(**_JIT)
def _grid_range(image, bad, nb):
    """(lo, hi) of the value grid: 1st to 99th percentile of a regular sample
    of counted pixels, widened by 5 % each side. Speed, and the sums' last
    bits, depend on it."""
    h, w = image.shape
    sy = max(h // 64, 1)
    sx = max(w // 64, 1)
    samp = np.empty(((h + sy - 1) // sy) * ((w + sx - 1) // sx), dtype=np.float64)
    ns = np.int64(0)
    for r in range(sy // 2, h, sy):
        for c in range(sx // 2, w, sx):
            v = np.float64(image[r, c])
            if (v - v == 0.0) and not bad[r, c]:
                samp[ns] = v
                ns += 1
    if ns >= 16:
        k = (ns - 1) // 100
        _select(samp, np.int64(0), ns, k)
        lo = samp[k]
        _select(samp, k, ns, ns - 1 - k)
        hi = samp[ns - 1 - k]
    else:  # few counted pixels in the sample: their full range
        lo = np.inf
        hi = -np.inf
        for r in range(h):
            for c in range(w):
                v = np.float64(image[r, c])
                if (v - v == 0.0) and not bad[r, c]:
                    lo = min(lo, v)
                    hi = max(hi, v)
        if lo > hi:
            lo = 0.0
            hi = 0.0
    pad = 0.05 * (hi - lo)
    lo -= pad
    hi += pad
    if not (hi > lo and np.isfinite(nb / (hi - lo)) and np.isfinite(lo) and np.isfinite(hi)):
        mid = 0.5 * lo + 0.5 * hi
        if not np.isfinite(mid):
            mid = 0.0
        span = max(abs(mid) * 1e-6, 1.0)
        lo = mid - span
        hi = mid + span
    return lo, hi


@njit(**_JIT)
def _build_cell_row(image, bad, ry0, ry1, ex, usedx, lo, inv, nb, zb,
                    vals, cstart, off, binA, binB, tv, tb, cnt):
    """Bucket the pixels of cell row [ry0, ry1) by value bin, cell by cell.

    For cell cx: its pixels go to vals[cstart[cx]:], ordered by bin (counted
    pixels of bin b at off[cx, b]:off[cx, b + 1], b = 0..nb+1; the pixels that
    do not count follow, in the sentinel bin nb + 2); binA[cx, b] and
    binB[cx, b] hold sum(x - zb[b]) and sum((x - zb[b])**2) for b = 1..nb."""
    nbf = float(nb)
    sentinel = np.int32(nb + 2)
    pos = 0
    for cx in range(ex.size - 1):
        cstart[cx] = pos
        if not usedx[cx]:
            continue
        c0 = ex[cx]
        c1 = ex[cx + 1]
        w = c1 - c0
        i = 0
        # values and bins first (a loop the compiler vectorizes), then the
        # counts per bin: the same numbers as one fused loop, faster
        for r in range(ry0, ry1):
            row = image[r]
            brow = bad[r]
            for k in range(w):
                v = np.float64(row[c0 + k])
                ok = (v - v == 0.0) & (not brow[c0 + k])
                t = (v - lo) * inv  # _bin, inlined
                t = t if t < nbf else nbf
                t = t if t > -1.0 else -1.0
                b = np.int32(t + 1.0)
                tv[i + k] = v
                tb[i + k] = b if ok else sentinel
            i += w
        area = i
        cnt[:] = 0
        for j in range(area):
            cnt[tb[j]] += 1
        o = off[cx]
        acc = 0
        for b in range(nb + 3):
            o[b] = acc
            acc += cnt[b]
            cnt[b] = o[b]  # now the write pointer of bin b
        for j in range(area):
            b = tb[j]
            p = cnt[b]
            vals[pos + p] = tv[j]
            cnt[b] = p + 1
        for b in range(1, nb + 1):
            z = zb[b]
            s1a = 0.0
            s1b = 0.0
            s2a = 0.0
            s2b = 0.0
            j = pos + o[b]
            end = pos + o[b + 1]
            while j + 1 < end:
                d0 = vals[j] - z
                d1 = vals[j + 1] - z
                s1a += d0
                s1b += d1
                s2a += d0 * d0
                s2b += d1 * d1
                j += 2
            if j < end:
                d0 = vals[j] - z
                s1a += d0
                s2a += d0 * d0
            binA[cx, b] = s1a + s1b
            binB[cx, b] = s2a + s2b
        pos += area


@njit(**_JIT)
def _wsums(c, h, center, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb, vals, cstart, off, binA, binB):
    """Over the counted pixels x of a window (cells [cy0, cy1) x [cx0, cx1))
    with |x - c| < h: (count, sum(x - center), sum((x - center)**2)).

    Bins wholly inside (c - h, c + h) (with a relative margin of 1e-13 that
    covers rounding) contribute their bin sums re-centred exactly on
    ``center``; bins that may straddle a limit, and the open-ended bins 0 and
    nb + 1, are scanned pixel by pixel with the exact test |x - c| < h."""
    if not (h > 0.0):  # h == 0 keeps nothing; NaN too
        return 0, 0.0, 0.0
    nbf = float(nb)
    if h == np.inf:
        in0 = 1
        in1 = nb
        s0a = 0  # scanned ranges [s0a, s0b] and [s1a, s1b]
        s0b = 0
        s1a = nb + 1
        s1b = nb + 1
    else:
        dl = 1e-13 * (abs(c) + h)
        lo_out = _bin(c - h - dl, lo, inv, nbf)
        lo_in = _bin(c - h + dl, lo, inv, nbf)
        hi_in = _bin(c + h - dl, lo, inv, nbf)
        hi_out = _bin(c + h + dl, lo, inv, nbf)
        in0 = max(lo_in + 1, 1)
        in1 = min(hi_in - 1, nb)
        s0a = lo_out
        s0b = lo_in
        s1a = max(hi_in, lo_in + 1)
        s1b = hi_out
    k = 0
    p = 0.0  # inner bins
    q = 0.0
    pl = 0.0  # pixels scanned near / below the lower limit
    ql = 0.0
    pu = 0.0  # pixels scanned near / above the upper limit
    qu = 0.0
    for cy in range(cy0, cy1):
        slot = cy % R
        for cx in range(cx0, cx1):
            base = cstart[slot, cx]
            for b in range(in0, in1 + 1):
                kb = off[slot, cx, b + 1] - off[slot, cx, b]
                if kb == 0:
                    continue
                d = zb[b] - center
                a = binA[slot, cx, b]
                k += kb
                p += a + kb * d
                q += binB[slot, cx, b] + 2.0 * d * a + kb * d * d
            for j in range(base + off[slot, cx, s0a], base + off[slot, cx, s0b + 1]):
                x = vals[slot, j]
                if abs(x - c) < h:
                    e = x - center
                    k += 1
                    pl += e
                    ql += e * e
            if s1b >= s1a:
                for j in range(base + off[slot, cx, s1a], base + off[slot, cx, s1b + 1]):
                    x = vals[slot, j]
                    if abs(x - c) < h:
                        e = x - center
                        k += 1
                        pu += e
                        qu += e * e
    # extreme values on both sides meet before the bulk (less cancellation)
    return k, p + (pl + pu), q + (ql + qu)


@njit(**_JIT)
def _mean_var_all(n, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb, vals, cstart, off, binA, binB):
    """Mean and sample variance (ddof=1, NaN if n < 2) of all n counted pixels
    of a window: two passes over the bin sums (about g, then about the mean)."""
    k, p, q = _wsums(0.0, np.inf, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                     vals, cstart, off, binA, binB)
    mean = g + p / n
    if n < 2:
        return mean, np.nan
    _, _, q = _wsums(0.0, np.inf, mean, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                     vals, cstart, off, binA, binB)
    return mean, q / (n - 1)


@njit(**_JIT)
def _window_ranks(ranks, nr, vals_out, tot, cy0, cy1, cx0, cx1, R, nb, vals, cstart, off,
                  cand, placed, rbin):
    """vals_out[j] = the ranks[j]-th smallest counted pixel of the window
    (ranks sorted and distinct). The window's bin counts give the bin of each
    rank; ranks are grouped (same bin, or consecutive ranks: the bins between
    are then empty); each group's pixels are copied out and the ranks selected
    among them."""
    tot[:] = 0
    for cy in range(cy0, cy1):
        slot = cy % R
        for cx in range(cx0, cx1):
            for b in range(nb + 2):
                tot[b] += off[slot, cx, b + 1] - off[slot, cx, b]
    cum = 0
    r = 0
    b = 0
    while r < nr:
        t = tot[b]
        while r < nr and ranks[r] < cum + t:
            rbin[r] = b
            r += 1
        cum += t
        b += 1
    r = 0
    while r < nr:
        b0 = rbin[r]
        r1 = r + 1
        while r1 < nr and (rbin[r1] == rbin[r1 - 1] or ranks[r1] == ranks[r1 - 1] + 1):
            r1 += 1
        b1 = rbin[r1 - 1]
        below = 0
        for bb in range(b0):
            below += tot[bb]
        nc = np.int64(0)
        for cy in range(cy0, cy1):
            slot = cy % R
            for cx in range(cx0, cx1):
                base = cstart[slot, cx]
                for j in range(base + off[slot, cx, b0], base + off[slot, cx, b1 + 1]):
                    cand[nc] = vals[slot, j]
                    nc += 1
        npl = np.int64(0)
        for rr in range(r, r1):
            kk = ranks[rr] - below
            npl = _place(cand, nc, kk, placed, npl)
            vals_out[rr] = cand[kk]
        r = r1


@njit(**_JIT)
def _window_stat(n, statistic, nsig, num_iter, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb, vals, cstart, off,
                 binA, binB, tot, cand, placed, rbin, ranks, rvals, want, wv):
    """(statistic, variance) of the n > 0 counted pixels of one window (cell
    rows [cy0, cy1), cell columns [cx0, cx1)). A kernel of its own, which
    does not depend on the image's type: compiled once for every image type."""
    if statistic == 0:  # MEAN
        m, var = _mean_var_all(n, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                               vals, cstart, off, binA, binB)
    elif statistic == 1:  # MEDIAN
        mlo = (n - 1) >> 1
        ranks[0] = mlo
        nr = np.int64(1)
        if (n & 1) == 0:
            ranks[1] = mlo + 1
            nr = np.int64(2)
        _window_ranks(ranks, nr, rvals, tot, cy0, cy1, cx0, cx1, R, nb, vals, cstart,
                      off, cand, placed, rbin)
        m = (rvals[0] + rvals[1]) / 2.0 if nr == 2 else rvals[0]
        mean, var = _mean_var_all(n, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                                  vals, cstart, off, binA, binB)
    else:  # MEANCLIP
        mlo = (n - 1) >> 1
        even = (n & 1) == 0
        v1 = (n - 1) * 0.25
        i1 = int(math.floor(v1))
        g1 = v1 - i1
        v3 = (n - 1) * 0.75
        i3 = int(math.floor(v3))
        g3 = v3 - i3
        want[0] = i1
        want[1] = i1 + 1 if g1 > 0.0 else i1
        want[2] = mlo
        want[3] = mlo + 1 if even else mlo
        want[4] = i3
        want[5] = i3 + 1 if g3 > 0.0 else i3
        nr = np.int64(0)
        for t in range(6):  # want is sorted
            if nr == 0 or want[t] != ranks[nr - 1]:
                ranks[nr] = want[t]
                nr += 1
        _window_ranks(ranks, nr, rvals, tot, cy0, cy1, cx0, cx1, R, nb, vals, cstart,
                      off, cand, placed, rbin)
        r = 0
        for t in range(6):
            while ranks[r] != want[t]:
                r += 1
            wv[t] = rvals[r]
        med = (wv[2] + wv[3]) / 2.0 if even else wv[2]
        p25 = _lerp(wv[0], wv[1], g1)
        p75 = _lerp(wv[4], wv[5], g3)
        c = med
        h = nsig * IQ_TO_STDEV * (p75 - p25)
        var = np.nan
        have_var = False
        for _ in range(num_iter):
            k, p, q = _wsums(c, h, c, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                             vals, cstart, off, binA, binB)
            if k == 0:
                break
            dm = p / k
            mean = c + dm
            if k < 2:
                v = np.nan
            elif p * dm <= 0.25 * q:
                v = (q - p * dm) / (k - 1)
            else:  # mean far from c: second pass about the mean
                _, _, q2 = _wsums(c, h, mean, cy0, cy1, cx0, cx1, R, lo, inv, nb,
                                  zb, vals, cstart, off, binA, binB)
                v = q2 / (k - 1)
            c = mean
            var = v
            have_var = True
            h = nsig * math.sqrt(var)
        if not have_var:
            mean, var = _mean_var_all(n, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                                      vals, cstart, off, binA, binB)
        m = c
    return m, var


@njit(**_JIT)
def _stats_kernel(image, bad, ex, usedx, cx0s, cx1s, ey, cy0s, cy1s, R, hmax, amax, wmax,
                  statistic, nsig, num_iter, nb):
    """S, N, V for the block's superpixels (window j, i: cell rows
    [cy0s[j], cy1s[j]), cell columns [cx0s[i], cx1s[i]))."""
    nby = cy0s.size
    nbx = cx0s.size
    ncx = ex.size - 1
    S = np.zeros((nby, nbx), dtype=np.float64)
    N = np.zeros((nby, nbx), dtype=np.float64)
    V = np.zeros((nby, nbx), dtype=np.float64)
    lo, hi = _grid_range(image, bad, nb)
    inv = nb / (hi - lo)
    g = 0.5 * lo + 0.5 * hi
    zb = np.empty(nb + 2, dtype=np.float64)
    for b in range(nb + 2):
        zb[b] = lo + (b - 0.5) / inv
    wtot = 0
    for cx in range(ncx):
        if usedx[cx]:
            wtot += ex[cx + 1] - ex[cx]
    vals = np.empty((R, max(hmax * wtot, 1)), dtype=np.float64)
    cstart = np.zeros((R, max(ncx, 1)), dtype=np.int64)
    off = np.zeros((R, max(ncx, 1), nb + 3), dtype=np.int64)
    binA = np.zeros((R, max(ncx, 1), nb + 2), dtype=np.float64)
    binB = np.zeros((R, max(ncx, 1), nb + 2), dtype=np.float64)
    tv = np.empty(max(amax, 1), dtype=np.float64)
    tb = np.empty(max(amax, 1), dtype=np.int32)
    cnt = np.zeros(nb + 3, dtype=np.int64)
    tot = np.zeros(nb + 2, dtype=np.int64)
    cand = np.empty(max(wmax, 1), dtype=np.float64)
    placed = np.empty(8, dtype=np.int64)
    rbin = np.empty(8, dtype=np.int64)
    ranks = np.empty(8, dtype=np.int64)
    rvals = np.empty(8, dtype=np.float64)
    want = np.empty(6, dtype=np.int64)
    wv = np.empty(6, dtype=np.float64)
    built = -1
    for j in range(nby):
        cy0 = cy0s[j]
        cy1 = cy1s[j]
        for cy in range(max(cy0, built + 1), cy1):
            slot = cy % R
            _build_cell_row(image, bad, ey[cy], ey[cy + 1], ex, usedx, lo, inv, nb, zb,
                            vals[slot], cstart[slot], off[slot], binA[slot], binB[slot],
                            tv, tb, cnt)
            built = cy
        for i in range(nbx):
            cx0 = cx0s[i]
            cx1 = cx1s[i]
            n = np.int64(0)
            for cy in range(cy0, cy1):
                for cx in range(cx0, cx1):
                    n += off[cy % R, cx, nb + 2]
            if n == 0:
                continue
            m, var = _window_stat(n, statistic, nsig, num_iter, g, cy0, cy1, cx0, cx1, R, lo, inv, nb, zb,
                                  vals, cstart, off, binA, binB, tot, cand, placed, rbin, ranks, rvals, want, wv)
            if not np.isfinite(m):
                continue
            S[j, i] = m * n
            N[j, i] = n
            if np.isfinite(var):
                V[j, i] = var * n
    return S, N, V


# ---------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------


def _int_arg(name, value, minimum=None, error=ValueError):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    return value


def _window_size(scale, bin_size, axis):
    wsize = round(scale * bin_size)
    if wsize < 1:
        raise ConfigError(
            f"window_scale={scale} with {axis}_bin={bin_size} gives an empty window")
    return int(wsize)


def _block_range(n, bin_size, wsize, start, length):
    """First superpixel index and count, among 0 <= i < n, whose window
    [lo_i, lo_i + wsize) meets [start, start + length). lo_i is increasing."""
    if n == 0 or length == 0:
        return 0, 0
    lo = ((2 * np.arange(n, dtype=np.int64) + 1) * bin_size - wsize) // 2
    first = int(np.searchsorted(lo + wsize, start, side="right"))  # lo + wsize > start
    stop = int(np.searchsorted(lo, start + length, side="left"))  # lo < start + length
    return first, max(stop - first, 0)


def _cells(bin_size, wsize, start, length, i0, nb):
    """Cells along one axis for the windows i0 <= i < i0 + nb (local coords).

    The windows' clipped limits, sorted, cut [0, length) into cells; each
    window is a run of cells. Returns (edges, used, first, stop): cell k is
    [edges[k], edges[k + 1]), used[k] tells whether a window covers it, and
    window i covers cells first[i - i0] <= k < stop[i - i0]."""
    i = np.arange(i0, i0 + nb, dtype=np.int64)
    lo = ((2 * i + 1) * bin_size - wsize) // 2 - start
    a = np.clip(lo, 0, length)
    b = np.clip(lo + wsize, 0, length)
    edges = np.unique(np.concatenate([a, b]))
    first = np.searchsorted(edges, a).astype(np.int64)
    stop = np.searchsorted(edges, b).astype(np.int64)
    cover = np.zeros(edges.size, dtype=np.int64)
    np.add.at(cover, first, 1)
    np.add.at(cover, stop, -1)
    used = np.cumsum(cover)[:-1] > 0
    return edges.astype(np.int64), used, first, stop


def checked_block(image, bad, x0, y0, grid_shape, x_bin, y_bin, window_scale) -> tuple:
    """The arguments a superpixel kernel shares (:func:`superpixel_stats`,
    :func:`bgdask.kernels.centroid.window_sums`), checked and normalised:
    (image and bad, C-contiguous and native; x0, y0; ny, nx; x_bin, y_bin;
    the window sizes wx, wy in pixels). Bad arrays or coordinates raise a
    ValueError, bad bins or window_scale a ConfigError."""
    image = np.ascontiguousarray(image)
    bad = np.ascontiguousarray(bad)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if image.dtype.kind != "f" or image.dtype.itemsize not in (4, 8):
        raise ValueError(f"image must be float32 or float64, got {image.dtype}")
    if not image.dtype.isnative:  # e.g. big-endian FITS data
        image = image.astype(image.dtype.newbyteorder("="))
    if bad.shape != image.shape:
        raise ValueError(f"bad has shape {bad.shape}, image has shape {image.shape}")
    if bad.dtype != np.bool_:
        raise ValueError(f"bad must be a bool array, got {bad.dtype}")
    x0 = _int_arg("x0", x0)
    y0 = _int_arg("y0", y0)
    try:
        ny, nx = grid_shape
    except (TypeError, ValueError):
        raise ValueError(f"grid_shape must be (ny, nx), got {grid_shape!r}") from None
    ny = _int_arg("grid_shape[0]", ny, 0)
    nx = _int_arg("grid_shape[1]", nx, 0)
    x_bin = _int_arg("x_bin", x_bin, 1, ConfigError)
    y_bin = _int_arg("y_bin", y_bin, 1, ConfigError)
    try:
        window_scale = float(window_scale)
    except (TypeError, ValueError):
        raise ConfigError(f"window_scale must be a number, got {window_scale!r}") from None
    if not (math.isfinite(window_scale) and window_scale > 0):
        raise ConfigError(f"window_scale must be positive and finite, got {window_scale}")
    wx = _window_size(window_scale, x_bin, "x")
    wy = _window_size(window_scale, y_bin, "y")
    return image, bad, x0, y0, ny, nx, x_bin, y_bin, wx, wy


def superpixel_stats(image, bad, x0, y0, grid_shape, x_bin, y_bin, *, window_scale=2.0,
                     statistic="MEANCLIP", num_sigma_clip=3.0, num_iter=3) -> SuperpixelBlock:
    """Superpixel sums S = mean * N, N, V = variance * N of one image.

    Parameters
    ----------
    image : 2-D float32 or float64 array (h, w)
        Pixels of the tract box x0 <= x < x0 + w, y0 <= y < y0 + h.
    bad : 2-D bool array (h, w)
        True where a pixel is excluded. Non-finite pixels are excluded too.
    x0, y0 : int
        Tract coordinates of ``image[0, 0]``.
    grid_shape : (ny, nx)
        Shape of the tract superpixel grid (``H // y_bin``, ``W // x_bin``).
    x_bin, y_bin : int
        Superpixel size in pixels.
    window_scale : float
        Window size in units of the bin (2.0: Rubin's half-overlapping
        windows; 1.0: disjoint bins). See the module docstring.
    statistic : {"MEANCLIP", "MEAN", "MEDIAN"}
    num_sigma_clip : float
        Clipping half-width in standard deviations (MEANCLIP).
    num_iter : int
        Number of clipping iterations (MEANCLIP).

    Returns
    -------
    SuperpixelBlock
        ``S, N, V`` of shape (nby, nbx) for the superpixels
        ``iy0 <= iy < iy0 + nby``, ``ix0 <= ix < ix0 + nbx`` of the grid whose
        window meets the box (zeros where no pixel counted). When none does,
        the arrays are empty (nby or nbx is 0) and ``iy0, ix0`` lie in
        ``[0, ny]``, ``[0, nx]``, so ``grid[iy0:iy0+nby, ix0:ix0+nbx]`` is always
        a valid (possibly empty) slice.

    Raises
    ------
    ValueError
        For bad arrays or coordinates (shape, dimension, dtype). Bad
        configuration values (bins, window_scale -- including a window that
        rounds to 0 pixels --, statistic, num_sigma_clip, num_iter) raise
        :class:`bgdask.errors.ConfigError`, which is also a ValueError.
    """
    image, bad, x0, y0, ny, nx, x_bin, y_bin, wx, wy = checked_block(image, bad, x0, y0, grid_shape, x_bin,
                                                                     y_bin, window_scale)
    if not isinstance(statistic, str) or statistic.upper() not in STATISTIC_CODES:
        raise ConfigError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
    code = STATISTIC_CODES[statistic.upper()]
    try:
        num_sigma_clip = float(num_sigma_clip)
    except (TypeError, ValueError):
        raise ConfigError(f"num_sigma_clip must be a number, got {num_sigma_clip!r}") from None
    if not (math.isfinite(num_sigma_clip) and num_sigma_clip > 0):
        raise ConfigError(f"num_sigma_clip must be positive and finite, got {num_sigma_clip}")
    num_iter = _int_arg("num_iter", num_iter, 0, ConfigError)

    h, w = image.shape
    ix0, nbx = _block_range(nx, x_bin, wx, x0, w)
    iy0, nby = _block_range(ny, y_bin, wy, y0, h)
    if nbx == 0 or nby == 0:
        empty = np.zeros((nby, nbx), dtype=np.float64)
        return SuperpixelBlock(empty, empty.copy(), empty.copy(), iy0, ix0)
    ex, usedx, cx0s, cx1s = _cells(x_bin, wx, x0, w, ix0, nbx)
    ey, _, cy0s, cy1s = _cells(y_bin, wy, y0, h, iy0, nby)
    R = int((cy1s - cy0s).max())
    hmax = int(np.diff(ey).max())
    amax = hmax * int(np.diff(ex).max())
    wmax = int((ex[cx1s] - ex[cx0s]).max()) * int((ey[cy1s] - ey[cy0s]).max())
    S, N, V = _stats_kernel(image, bad, ex, usedx, cx0s, cx1s, ey, cy0s, cy1s, R, hmax, amax,
                            wmax, code, num_sigma_clip, num_iter,
                            min(_NBINS, max(_MIN_BINS, wmax // 32)))
    return SuperpixelBlock(S, N, V, iy0, ix0)


@njit(**_JIT)
def _bad_pixels(mask, bits, image, has_image, variance, has_variance, out):
    for i in range(mask.size):
        b = (mask[i] & bits) != 0
        if has_image:
            x = np.float64(image[i])
            b = b | (not (x - x == 0.0))
        if has_variance:
            b = b | (np.float64(variance[i]) <= 0.0)
        out[i] = b


def _compiled_plane(a) -> bool:
    return a is None or (a.dtype in (np.float32, np.float64) and a.dtype.isnative and a.flags.c_contiguous)


def bad_pixels(mask, bad_bits: int, image=None, variance=None) -> np.ndarray:
    """Excluded pixels: ``(mask & bad_bits) != 0``, non-finite ``image``, or
    zero or negative ``variance`` (a NaN variance alone does not exclude).

    One compiled pass for an int32 mask (and float32/float64 planes), the
    NumPy expressions otherwise."""
    mask = np.asarray(mask)
    image = None if image is None else np.asarray(image)
    variance = None if variance is None else np.asarray(variance)
    for plane, name in ((image, "image"), (variance, "variance")):
        if plane is not None and plane.shape != mask.shape:
            raise ValueError(f"{name} has shape {plane.shape}, mask has shape {mask.shape}")
    fast = (mask.dtype == np.int32 and mask.flags.c_contiguous and -2**31 <= bad_bits < 2**31
            and _compiled_plane(image) and _compiled_plane(variance))
    if fast and mask.size:
        out = np.empty(mask.shape, dtype=np.bool_)
        none = np.zeros(1, dtype=np.float32)
        _bad_pixels(mask.reshape(-1), np.int32(bad_bits), none if image is None else image.reshape(-1),
                    image is not None, none if variance is None else variance.reshape(-1), variance is not None,
                    out.reshape(-1))
        return out
    bad = (mask & bad_bits) != 0
    if image is not None:
        bad |= ~np.isfinite(image)
    if variance is not None:
        bad |= variance <= 0
    return bad


def nonpositive_variance(variance) -> int:
    """How many pixels have zero or negative variance (NaN not counted)."""
    return int(np.count_nonzero(np.asarray(variance) <= 0))
