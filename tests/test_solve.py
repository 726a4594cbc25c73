"""The global solve (bgdask.kernels.solve) on small synthetic grids."""

from __future__ import annotations

import numpy as np
import pytest

from bgdask.errors import ConfigError
from bgdask.kernels.solve import (
    DisconnectedError,
    PairData,
    components,
    disconnected_visits,
    have_cholmod,
    pair_overlaps,
    select_pairs,
    solve_global,
    solve_spd,
    stencils,
)

BIN = 32
SHAPE = (6, 9)           # ny, nx
COUNT = 4.0 * BIN * BIN  # a full window of Rubin's size
MIN_COUNT = 0.1 * BIN * BIN


def centres():
    ny, nx = SHAPE
    return np.meshgrid((np.arange(nx) + 0.5) * BIN, (np.arange(ny) + 0.5) * BIN)


def rect(j0, j1, i0, i1):
    m = np.zeros(SHAPE, bool)
    m[j0:j1, i0:i1] = True
    return m


#: A chain of four visits: 1 is the reference; 3 and 4 share nothing with it.
CHAIN = {1: rect(0, 6, 0, 4), 2: rect(0, 6, 2, 7), 3: rect(1, 6, 5, 9), 4: rect(0, 4, 7, 9)}


def plane_sky(v):
    """A linear sky per visit (what a thin-plate prior reproduces exactly)."""
    r = np.random.default_rng(v)
    a, b, c = r.uniform(100, 200), r.uniform(-0.05, 0.05), r.uniform(-0.05, 0.05)
    return lambda x, y: a + b * x + c * y


def quad_sky(v):
    r = np.random.default_rng(100 + v)
    a, b, c, q = r.uniform(100, 200), r.uniform(-0.05, 0.05), r.uniform(-0.05, 0.05), r.uniform(-2e-4, 2e-4)
    return lambda x, y: a + b * x + c * y + q * (x - 150) ** 2


def make_pairs(cover, sky, *, shift=0.35, noise=0.0, var=50.0, seed=0, centroid=True, extra=None):
    """PairData for every overlapping pair, from analytic skies: values taken at
    a centroid displaced by up to ``shift`` bins from the node (as partial
    coverage would), plus Gaussian noise of the variance of a mean of COUNT pixels."""
    rng = np.random.default_rng(seed)
    xc, yc = centres()
    out = []
    visits = sorted(cover)
    for a in range(len(visits)):
        for b in range(a + 1, len(visits)):
            u, v = visits[a], visits[b]
            both = cover[u] & cover[v]
            if not both.any():
                continue
            cx = xc + (rng.uniform(-shift, shift, SHAPE) * BIN if centroid else 0.0)
            cy = yc + (rng.uniform(-shift, shift, SHAPE) * BIN if centroid else 0.0)
            d = sky[u](cx, cy) - sky[v](cx, cy)
            if extra is not None:
                d = d + extra(u, cx, cy) - extra(v, cx, cy)
            d = d + noise * rng.standard_normal(SHAPE)
            N = np.where(both, COUNT, 0.0)
            out.append(PairData(u, v, S=d * N, N=N, V=var * N, SX=cx * N, SY=cy * N,
                                SP=np.where(both, 2 * 25.0 * COUNT, 0.0)))
    return out


def truth_offset(sky, ref, v):
    xc, yc = centres()
    return sky[ref](xc, yc) - sky[v](xc, yc)


def solve(pairs, cover=CHAIN, ref=1, **kw):
    kw.setdefault("min_count", MIN_COUNT)
    return solve_global(pairs, cover, ref, BIN, BIN, **kw)


@pytest.mark.parametrize("solver", ["superlu"] + (["cholmod"] if have_cholmod() else []))
def test_exact_recovery_without_noise(solver):
    """Linear skies, values at their centroids: every visit recovered exactly,
    including the two that share no pixel with the reference."""
    sky = {v: plane_sky(v) for v in CHAIN}
    pairs = make_pairs(CHAIN, sky)
    sol = solve(pairs, ridge=0.0, solver=solver)
    assert sol.status == {1: "reference", 2: "matched", 3: "matched", 4: "matched"}
    assert not sol.grids[1].any()
    for v in (2, 3, 4):
        err = sol.grids[v] - truth_offset(sky, 1, v)
        assert np.abs(err[sol.unknown[v]]).max() < 1e-6, v
        assert sol.unknown[v][CHAIN[v]].all()       # every covered node is solved
    assert sol.info.residual < 1e-10
    for row in sol.visit_table.values():
        if row["n_data"]:
            assert row["resid_rms"] < 1e-6
    # the default ridge changes nothing that matters
    sol2 = solve(pairs, solver=solver)
    for v in (2, 3, 4):
        assert np.abs(sol2.grids[v] - sol.grids[v])[sol.unknown[v]].max() < 1e-4


def test_centre_placement_is_biased_by_the_centroid_shift():
    """The same data read as sitting on the nodes: off by gradient x shift."""
    sky = {v: plane_sky(v) for v in CHAIN}
    pairs = make_pairs(CHAIN, sky)
    centre = solve(pairs, placement="centre", ridge=0.0)
    centroid = solve(pairs, placement="centroid", ridge=0.0)
    t = truth_offset(sky, 1, 2)
    e_centre = np.abs(centre.grids[2] - t)[CHAIN[2]].max()
    e_centroid = np.abs(centroid.grids[2] - t)[CHAIN[2]].max()
    assert e_centroid < 1e-6 < 0.01 < e_centre
    # with the values really at the centres, centre placement is exact too
    exact = solve(make_pairs(CHAIN, sky, centroid=False), placement="centre", ridge=0.0)
    assert np.abs(exact.grids[2] - t)[CHAIN[2]].max() < 1e-6


def test_gauge_reference_level():
    """o_ref = 0: raising the reference's sky by c raises every offset by c."""
    sky = {v: quad_sky(v) for v in CHAIN}
    base = solve(make_pairs(CHAIN, sky, noise=0.05))
    c = 7.25
    f = sky[1]
    raised = dict(sky)
    raised[1] = lambda x, y: f(x, y) + c
    sol = solve(make_pairs(CHAIN, raised, noise=0.05))
    assert not sol.grids[1].any()
    for v in (2, 3, 4):
        assert np.allclose(sol.grids[v] - base.grids[v], c, atol=1e-6)


def test_what_the_data_cannot_see():
    """The same function added to every sky changes no pair difference, hence no offset."""
    sky = {v: quad_sky(v) for v in CHAIN}
    common = lambda x, y: 3.0 * np.sin(x / 40.0) * np.cos(y / 50.0)  # noqa: E731
    moved = {v: (lambda s: lambda x, y: s(x, y) + common(x, y))(sky[v]) for v in CHAIN}
    a = solve(make_pairs(CHAIN, sky, noise=0.02))
    b = solve(make_pairs(CHAIN, moved, noise=0.02))
    for v in CHAIN:
        assert np.allclose(a.grids[v], b.grids[v], atol=1e-8)


def test_smooth_truth_recovered_to_the_noise():
    """Curved skies with noise: offsets right where the reference has data,
    and every pair's seam (o_v - o_u against sky_u - sky_v) small everywhere
    the two overlap, also beyond the reference's footprint."""
    sky = {v: quad_sky(v) for v in CHAIN}
    sol = solve(make_pairs(CHAIN, sky, noise=0.02, seed=4))
    err = (sol.grids[2] - truth_offset(sky, 1, 2))[CHAIN[1] & CHAIN[2]]
    assert np.sqrt(np.mean(err ** 2)) < 0.05
    xc, yc = centres()
    for u, v in [(1, 2), (2, 3), (3, 4)]:
        both = CHAIN[u] & CHAIN[v]
        seam = (sky[u](xc, yc) + sol.grids[u]) - (sky[v](xc, yc) + sol.grids[v])
        assert np.sqrt(np.mean(seam[both] ** 2)) < 0.05, (u, v)
    # outside the reference's footprint the offsets are relative: the
    # reference's unseen curvature is not in them
    far = (sol.grids[3] - truth_offset(sky, 1, 3))[CHAIN[3]]
    assert np.sqrt(np.mean(far ** 2)) > 0.2
    for row in sol.pair_table.values():
        assert row["resid_rms"] < 3 * 0.02


def test_disconnected_graph_names_the_visits():
    cover = dict(CHAIN)
    cover[5] = rect(4, 6, 0, 2)           # overlaps visit 1 only
    sky = {v: plane_sky(v) for v in cover}
    pairs = [p for p in make_pairs(cover, sky) if (p.u, p.v) not in ((2, 3), (1, 5))]
    with pytest.raises(DisconnectedError, match=r"visit\(s\) 3, 4, 5 .* reference visit 1") as exc:
        solve(pairs, cover)
    assert exc.value.visits == [3, 4, 5]
    assert "{3, 4}" in str(exc.value) and "{5}" in str(exc.value)
    sol = solve(pairs, cover, on_disconnected="skip")
    assert sol.status == {1: "reference", 2: "matched", 3: "skipped", 4: "skipped", 5: "skipped"}
    assert not sol.grids[3].any() and not sol.grids[5].any()
    assert np.abs(sol.grids[2] - truth_offset(sky, 1, 2))[CHAIN[2]].max() < 1e-4


def test_bitwise_deterministic_and_order_free():
    sky = {v: quad_sky(v) for v in CHAIN}
    pairs = make_pairs(CHAIN, sky, noise=0.05, seed=2)
    a = solve(pairs)
    b = solve(list(reversed(pairs)))
    for v in CHAIN:
        assert a.grids[v].tobytes() == b.grids[v].tobytes()
    assert a.visit_table == b.visit_table


def test_every_grid_is_defined_and_margins():
    sky = {v: quad_sky(v) for v in CHAIN}
    pairs = make_pairs(CHAIN, sky, noise=0.05)
    for margin in (0, 1, 2):
        sol = solve(pairs, margin=margin)
        for v in (2, 3, 4):
            assert np.isfinite(sol.grids[v]).all()
            assert sol.unknown[v][CHAIN[v]].all()
        grown = sol.unknown[3].sum()
        if margin:
            assert grown > CHAIN[3].sum()
    # an island of support with no data of its own is filled, not solved
    cover = dict(CHAIN)
    cover[2] = CHAIN[2] | rect(0, 1, 0, 1)   # no pair data near node (0, 0)
    sol = solve(pairs, cover, margin=0, placement="centre")
    assert sol.unknown[2][CHAIN[2]].all() and not sol.unknown[2][0, 0]
    assert np.isfinite(sol.grids[2]).all()
    assert sol.grids[2][0, 0] == sol.grids[2][0, 2]   # the nearest solved node


def test_a_visit_with_a_step_stands_out():
    """Structure the smooth model cannot follow (a step along y in visit 3's
    sky, inside both its overlaps): its pairs' residuals are far above their
    expected value from the variances, the reference pair's are not."""
    sky = {v: quad_sky(v) for v in CHAIN}
    sigma = np.sqrt(50.0 / COUNT)   # the noise of a mean of COUNT pixels of variance 50
    step = lambda v, x, y: np.where((v == 3) & (y > 100), 2.0, 0.0)  # noqa: E731
    sol = solve(make_pairs(CHAIN, sky, noise=sigma, extra=step, centroid=False), placement="centre")
    ratio = {k: r["resid_rms"] / r["expected_rms"] for k, r in sol.pair_table.items()}
    assert min(ratio[(2, 3)], ratio[(3, 4)]) > 3.0
    assert ratio[(1, 2)] < 1.5
    vr = {v: r["resid_rms"] / r["expected_rms"] for v, r in sol.visit_table.items()}
    assert vr[3] > 3.0 and vr[3] > max(vr[1], vr[2]) and vr[1] < 1.5
    assert sol.visit_table[3]["n_partners"] == 2
    # the expected value is the one of the variance planes (SP): sqrt(50 / COUNT)
    assert sol.pair_table[(1, 2)]["expected_rms"] == pytest.approx(sigma, rel=1e-9)


def test_uniform_weights_and_bad_arguments():
    sky = {v: plane_sky(v) for v in CHAIN}
    pairs = make_pairs(CHAIN, sky)
    sol = solve(pairs, weighting="uniform", ridge=0.0)
    assert np.abs(sol.grids[3] - truth_offset(sky, 1, 3))[CHAIN[3]].max() < 1e-6
    with pytest.raises(ConfigError):
        solve(pairs, placement="middle")
    with pytest.raises(ConfigError):
        solve(pairs, weighting="none")
    with pytest.raises(ConfigError):
        solve(pairs, smoothness=-1.0)
    with pytest.raises(ConfigError, match="reference"):
        solve(pairs, ref=9)
    no_xy = [PairData(p.u, p.v, p.S, p.N, p.V) for p in pairs]
    with pytest.raises(ConfigError, match="SX"):
        solve(no_xy)
    solve(no_xy, placement="centre")


# -- pairs ---------------------------------------------------------------------

def test_pair_overlaps():
    ov = pair_overlaps(CHAIN)
    assert ov[(1, 2)] == (CHAIN[1] & CHAIN[2]).sum()
    assert (1, 3) not in ov and (1, 4) not in ov
    assert set(ov) == {(1, 2), (2, 3), (3, 4)}
    assert ov[(3, 4)] == (CHAIN[3] & CHAIN[4]).sum() > 0


def test_select_pairs_caps_keeps_reference_and_connectivity():
    rng = np.random.default_rng(1)
    visits = list(range(20))
    overlaps = {}
    for a in visits:
        for b in visits:
            if a < b and (abs(a - b) <= 6 or rng.random() < 0.2):
                overlaps[(a, b)] = int(rng.integers(1, 500))
    ref = 7
    kept = select_pairs(overlaps, ref, max_partners=3)
    assert set(kept) <= set(overlaps)
    assert all(p in kept for p in overlaps if ref in p)               # the reference's pairs
    assert components(visits, kept) == components(visits, overlaps)  # same connectivity
    deg = {v: sum(v in p for p in kept) for v in visits}
    # a pair is dropped only when one of its visits is full
    dropped = set(overlaps) - set(kept)
    assert dropped
    assert all(deg[u] >= 3 or deg[v] >= 3 for u, v in dropped)
    # beyond the reference's pairs and a spanning forest, the cap holds
    extra = len(kept) - len([p for p in overlaps if ref in p]) - (len(visits) - 1)
    assert extra <= 3 * len(visits) // 2
    assert sorted(kept) == kept and kept == select_pairs(dict(reversed(list(overlaps.items()))), ref, 3)
    assert select_pairs(overlaps, ref, max_partners=100) == sorted(overlaps)
    # the largest overlap of all is always kept
    assert max(overlaps, key=overlaps.get) in kept
    with pytest.raises(ConfigError):
        select_pairs(overlaps, ref, max_partners=0)


def test_components_and_disconnected():
    assert components([1, 2, 3, 4], [(1, 2), (3, 4)]) == [[1, 2], [3, 4]]
    assert disconnected_visits([1, 2, 3], [(1, 2)], 1, "skip") == [3]
    with pytest.raises(DisconnectedError):
        disconnected_visits([1, 2, 3], [(1, 2)], 1)


def test_stencils_reproduce_bilinear_sampling():
    from bgdask.kernels.interp import linear_resample

    rng = np.random.default_rng(0)
    grid = rng.normal(size=SHAPE)
    good = rng.random(SHAPE) < 0.6
    xc, yc = centres()
    cx = xc + rng.uniform(-0.9, 0.9, SHAPE) * BIN
    cy = yc + rng.uniform(-0.9, 0.9, SHAPE) * BIN
    j, i, nodes, wts = stencils(good, BIN, BIN, cx, cy)
    got = (np.where(nodes >= 0, grid.ravel()[np.maximum(nodes, 0)], 0.0) * wts).sum(axis=1)
    ny, nx = SHAPE
    for k in range(j.size):
        x, y = cx[j[k], i[k]], cy[j[k], i[k]]
        along_x = linear_resample(grid, (np.arange(nx) + 0.5) * BIN, np.array([x]), axis=1)
        want = linear_resample(along_x, (np.arange(ny) + 0.5) * BIN, np.array([y]), axis=0)[0, 0]
        assert got[k] == pytest.approx(want, abs=1e-12)


def test_solve_spd_refines():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    a = sp.random(300, 300, density=0.02, random_state=1)
    m = (a @ a.T + sp.identity(300) * 0.1).tocsc()
    b = rng.normal(size=300)
    x, info = solve_spd(m, b, "superlu")
    assert np.linalg.norm(m @ x - b) / np.linalg.norm(b) < 1e-12
    assert info.residual < 1e-12 and info.nnz_factor > 0
    with pytest.raises(ConfigError):
        solve_spd(m, b, "magic")


def test_pairs_as_blocks_of_the_grid():
    """Pair statistics as accumulator blocks (iy0, ix0) give the dense result bit for bit."""
    sky = {v: quad_sky(v) for v in CHAIN}
    dense = make_pairs(CHAIN, sky, noise=0.05, seed=5)
    blocks = []
    for p in dense:
        rows, cols = np.nonzero(p.N)
        j0, j1, i0, i1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        cut = lambda a: None if a is None else a[j0:j1, i0:i1].copy()  # noqa: E731
        blocks.append(PairData(p.u, p.v, cut(p.S), cut(p.N), cut(p.V), cut(p.SX), cut(p.SY), cut(p.SP),
                               iy0=int(j0), ix0=int(i0)))
    a, b = solve(dense), solve(blocks)
    for v in CHAIN:
        assert a.grids[v].tobytes() == b.grids[v].tobytes()
    assert a.pair_table == b.pair_table


def test_a_pair_without_usable_superpixels_connects_nothing():
    sky = {v: plane_sky(v) for v in CHAIN}
    pairs = make_pairs(CHAIN, sky)
    weak = [PairData(p.u, p.v, p.S * 0.01, p.N * 0.01, p.V * 0.01, p.SX * 0.01, p.SY * 0.01)
            if (p.u, p.v) == (2, 3) else p for p in pairs]   # N below min_count everywhere
    with pytest.raises(DisconnectedError, match=r"visit\(s\) 3, 4 "):
        solve(weak)
    sol = solve(weak, on_disconnected="skip")
    assert sol.status[3] == sol.status[4] == "skipped" and sol.status[2] == "matched"
    assert (2, 3) not in sol.pair_table


def test_a_visit_seen_at_one_superpixel_only():
    """One data row cannot fix a plane's slopes: the ridge picks the flattest
    solution, refined without drifting; the offset at the data is right."""
    cover = dict(CHAIN)
    cover[5] = rect(5, 6, 0, 1)       # one node, shared with the reference only
    sky = {v: plane_sky(v) for v in cover}
    pairs = make_pairs(cover, sky, centroid=False)
    sol = solve(pairs, cover, placement="centre")
    g = sol.grids[5]
    assert np.isfinite(g).all()
    assert g[5, 0] == pytest.approx(truth_offset(sky, 1, 5)[5, 0], abs=1e-6)
    assert np.ptp(g[sol.unknown[5]]) < 1e-3   # flat around it
    assert sol.info.residual < 1e-8
