"""The global method and centroid placement in the pipeline (issues 14 and 18).

Simulated tracts with truth, matched through ``bgdask.match`` and
``bgdask.match_backgrounds``, measured with the seams and noise floors of
``benchmarks/global_proto.py`` (the seam of two visits at a pixel both have:
(sky_u + offset_u) - (sky_v + offset_v), with the injected skies and the
offsets stage C applied).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import bgdask
from bgdask.config import MatchConfig
from bgdask.errors import ConfigError, ModelError
from bgdask.global_stage import SkippedVisitWarning
from bgdask.kernels.solve import have_cholmod
from bgdask.simulate import make_tract


#: strong gradients (up to 40 nJy across the tract) and 12-pixel chip gaps
#: every 160 pixels: footprint edges and gaps inside the 128-pixel superpixels
HARD = dict(gradient_scale=5.0, chip_pitch=160.0, gap_width=12.0)
CHAIN = dict(n_visits=5, num_patches=(6, 3), patch_inner=256, patch_border=16, layout="chain", seed=1, **HARD)
ORDINARY = dict(n_visits=4, num_patches=(3, 3), patch_inner=320, patch_border=16, n_full=0, seed=0, **HARD)


@pytest.fixture(scope="module")
def chain():
    return make_tract(**CHAIN)


@pytest.fixture(scope="module")
def ordinary():
    return make_tract(**ORDINARY)


def run(sim, **cfg):
    """``bgdask.match`` on the synchronous scheduler, stage C computed."""
    ds = bgdask.open_warps(sim.warps, skymap=sim.skymap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        return bgdask.match(ds, MatchConfig(**cfg), scheduler="sync")


def measures(gp, sim, result, floors=None):
    t = gp.Tract.from_sim(sim, result.config)
    return gp.measure(t, result.reference_visit, gp.pipeline_offsets(t, result), floors)


@pytest.fixture(scope="module")
def chain_floors(gp, chain):
    t = gp.Tract.from_sim(chain, MatchConfig())
    return {(u, v): gp.pair_floor(t, u, v) for u in chain.visits for v in chain.visits if u < v}


@pytest.fixture(scope="module")
def chain_global(chain):
    return run(chain, method="global", ref_visit=chain.visits[0])


def test_chain_every_visit_matched_and_every_seam_at_the_noise_floor(gp, chain, chain_global, chain_floors):
    ref = chain.visits[0]
    # the reference method cannot match the visits sharing no pixel with the reference
    rubin = run(chain, ref_visit=ref, on_no_overlap="skip")
    assert list(rubin.table.status) == ["reference", "matched", "skipped", "skipped", "skipped"]
    far = [v for v in chain.visits[1:]
           if not any((np.isfinite(w.image) & np.isfinite(chain.warps[(ref, p)].image)).any()
                      for (vv, p), w in chain.warps.items() if vv == v and (ref, p) in chain.warps)]
    assert far == chain.visits[2:]     # visits sharing no pixel with the reference
    res = chain_global
    assert res.table.loc[ref, "status"] == "reference"
    assert all(res.table.loc[v, "status"] == "matched" for v in chain.visits[1:])
    m = measures(gp, chain, res, chain_floors)
    assert m.n_out_pixels > 100_000
    # every pair's seam at most 3 times its noise floor, inside and outside the reference's footprint
    checked = 0
    for (u, v), row in m.pairs.items():
        for k in ("in", "out"):
            if row[f"n_{k}"] >= 2000:
                assert row[f"seam_{k}"] <= 3.0 * row["floor"], ((u, v), k, row)
                checked += 1
    assert checked >= len(chain.visits) - 1
    assert m.worst_in <= 3.0 and m.worst_out <= 3.0
    # the far visits' seams: the pairs that do not involve the reference, outside its footprint
    assert any(row["n_out"] >= 2000 for (u, v), row in m.pairs.items() if u in far or v in far)


def test_the_pipeline_solves_what_the_prototype_solves(gp, chain, chain_global):
    """The task layers map the prototype's functions: the same grids, to the
    rounding of the floating-point sums' order (counts and positions are exact)."""
    t = gp.Tract.from_sim(chain, MatchConfig())
    models, sol, _ = gp.global_models(t, chain.visits[0])
    for v in chain.visits:
        np.testing.assert_allclose(chain_global.models[v].model, models[v], rtol=0, atol=1e-9)
    assert chain_global.solve_info["n_unknowns"] == sol.info.n_unknowns
    for v, row in sol.visit_table.items():
        assert chain_global.table.loc[v, "n_partners"] == row["n_partners"]
        assert chain_global.table.loc[v, "n_unknowns"] == row["n_unknowns"]
        np.testing.assert_allclose(chain_global.table.loc[v, "resid_rms"], row["resid_rms"], rtol=1e-9)
    pairs = chain_global.pairs.set_index(["u", "v"])
    assert sorted(pairs.index) == sorted(sol.pair_table)
    for k, row in sol.pair_table.items():
        assert pairs.loc[k, "n_overlap"] == row["n_overlap"]
        np.testing.assert_allclose(pairs.loc[k, "expected_rms"], row["expected_rms"], rtol=1e-9)


def test_diagnostics(chain, chain_global):
    res = chain_global
    table, pairs, info = res.table, res.pairs, res.solve_info
    # a chain: each visit pairs with its neighbours
    assert list(table.n_partners) == [1, 2, 2, 2, 1]
    assert [tuple(p) for p in pairs[["u", "v"]].values] == list(zip(chain.visits[:-1], chain.visits[1:]))
    assert (pairs.n_overlap > 0).all()
    # residuals at the noise: the solve follows the data no closer than the noise allows
    ratio = table.resid_rms / table.expected_rms
    assert ((ratio > 0.2) & (ratio < 2.0)).all(), ratio
    assert (table.n_unknowns.iloc[1:] > table.n_good.iloc[1:]).all()   # the margin around the data
    assert table.n_unknowns.iloc[0] == 0                                # the gauge: no unknowns
    assert info["n_unknowns"] == table.n_unknowns.sum()
    assert info["n_pairs"] == len(pairs) == 4
    assert info["residual"] < 1e-10
    assert info["solver"] == ("cholmod" if have_cholmod() else "superlu")
    assert res.timings["global solve"] > 0


def test_ordinary_tract_global_no_worse_inside_the_reference(gp, ordinary):
    glob = run(ordinary, method="global")
    rubin = run(ordinary)
    assert glob.reference_visit == rubin.reference_visit     # chosen as the reference method chooses it
    np.testing.assert_array_equal(glob.table.ref_cost, rubin.table.ref_cost)
    t = gp.Tract.from_sim(ordinary, MatchConfig())
    floors = {(u, v): gp.pair_floor(t, u, v) for u in ordinary.visits for v in ordinary.visits if u < v}
    g, r = measures(gp, ordinary, glob, floors), measures(gp, ordinary, rubin, floors)
    assert g.err_in <= r.err_in, (g.err_in, r.err_in)
    assert g.seam_in <= r.seam_in and g.seam_out <= r.seam_out
    assert g.worst_in < r.worst_in and g.worst_out < r.worst_out


def test_centroid_placement_in_both_methods(gp, ordinary):
    """Strong gradients, footprint edges and chip gaps inside the superpixels:
    values placed at their pixels' centroids cut the seams and the error of
    both methods."""
    t = gp.Tract.from_sim(ordinary, MatchConfig())
    floors = {(u, v): gp.pair_floor(t, u, v) for u in ordinary.visits for v in ordinary.visits if u < v}
    got = {}
    for method in ("reference", "global"):
        for placement in ("centre", "centroid"):
            res = run(ordinary, method=method, placement=placement)
            got[method, placement] = (res, measures(gp, ordinary, res, floors))
    for method in ("reference", "global"):
        centre, centroid = got[method, "centre"][1], got[method, "centroid"][1]
        assert centroid.seam_in * 3 < centre.seam_in, (method, centroid.seam_in, centre.seam_in)
        assert centroid.err_in * 3 < centre.err_in, (method, centroid.err_in, centre.err_in)
        assert centroid.worst_out * 3 < centre.worst_out, (method, centroid.worst_out, centre.worst_out)
    # the reference method with centroids: the fit's residual at the centroids is reported
    table = got["reference", "centroid"][0].table
    fit = table.fit_rms[table.status == "matched"]
    assert ((fit > 0) & (fit < 1.0)).all()
    # and placement "auto" is centre for the reference method, centroid for the global one
    assert MatchConfig().value_placement == "centre"
    assert MatchConfig(method="global").value_placement == "centroid"


def test_reference_method_centre_is_unchanged_by_the_new_fields(small_sim):
    """Rubin's method with its default placement: the same models whatever the
    global method's fields say (tests/test_golden.py holds the stores to the bit)."""
    base = bgdask.match_arrays(small_sim.warps, small_sim.skymap)
    other = bgdask.match_arrays(small_sim.warps, small_sim.skymap,
                                MatchConfig(placement="centre", global_smoothness=3.0, max_partners=2,
                                            solver="superlu"))
    for v in small_sim.visits:
        assert base.models[v].model.tobytes() == other.models[v].model.tobytes()
    assert base.pairs is None and base.solve_info is None


def _cut_chain(chain):
    """The chain without its middle visit: the visits beyond it lose every chain to the reference."""
    gone = chain.visits[2]
    return {k: w for k, w in chain.warps.items() if k[0] != gone}, gone


def test_a_disconnected_visit_is_an_error_naming_it_or_skipped(chain):
    warps, gone = _cut_chain(chain)
    ref = chain.visits[0]
    far = [v for v in chain.visits if v > gone]
    ds = bgdask.open_warps(warps, skymap=chain.skymap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        with pytest.raises(ModelError, match=rf"visit\(s\) {far[0]}, {far[1]} share no chain .* reference visit "
                                             rf"{ref} .*on_no_overlap: skip"):
            bgdask.match(ds, MatchConfig(method="global", ref_visit=ref), scheduler="sync")
        with pytest.warns(SkippedVisitWarning, match=f"{far[0]}, {far[1]}"):
            res = bgdask.match(ds, MatchConfig(method="global", ref_visit=ref, on_no_overlap="skip"),
                               scheduler="sync")
    assert res.table.loc[chain.visits[1], "status"] == "matched"
    for v in far:
        assert res.table.loc[v, "status"] == "skipped"
        assert not res.models[v].model.any()
        p = next(p for (vv, p) in warps if vv == v)
        got = res.matched.image.sel(visit=v, patch=p).values[: warps[(v, p)].box.height, : warps[(v, p)].box.width]
        assert got.tobytes() == warps[(v, p)].image.tobytes()      # left unmatched: unchanged


def test_empty_visit_and_unusable_reference(chain):
    """A visit with no usable pixel is empty (as in the reference method), not disconnected."""
    import dataclasses

    v = chain.visits[-1]
    warps = {k: (dataclasses.replace(w, image=np.full_like(w.image, np.nan)) if k[0] == v else w)
             for k, w in chain.warps.items()}
    res = run(_Sim(warps, chain.skymap), method="global", ref_visit=chain.visits[0])
    assert res.table.loc[v, "status"] == "empty"
    assert (res.table.status.drop(v) != "empty").all()
    with pytest.raises(ModelError, match=f"reference visit {v} has no usable pixel"):
        run(_Sim(warps, chain.skymap), method="global", ref_visit=v)


class _Sim:
    def __init__(self, warps, skymap):
        self.warps, self.skymap = warps, skymap


def test_cholmod_or_its_fallback(chain, monkeypatch):
    """``solver: auto`` takes CHOLMOD when scikit-sparse imports and SuperLU
    otherwise, with the same grids; ``solver: cholmod`` without it is a
    ConfigError before anything is computed."""
    ref = chain.visits[0]
    lu = run(chain, method="global", ref_visit=ref, solver="superlu")
    assert lu.solve_info["solver"] == "superlu"
    if have_cholmod():
        ch = run(chain, method="global", ref_visit=ref, solver="cholmod")
        assert ch.solve_info["solver"] == "cholmod"
        for v in chain.visits:
            np.testing.assert_allclose(ch.models[v].model, lu.models[v].model, rtol=0, atol=1e-9)
    monkeypatch.setitem(sys.modules, "sksparse", None)          # scikit-sparse not installed
    monkeypatch.setitem(sys.modules, "sksparse.cholmod", None)
    assert not have_cholmod()
    auto = run(chain, method="global", ref_visit=ref)
    assert auto.solve_info["solver"] == "superlu"
    for v in chain.visits:
        assert auto.models[v].model.tobytes() == lu.models[v].model.tobytes()
    with pytest.raises(ConfigError, match=r"solver 'cholmod' needs scikit-sparse.*bgdask\[cholmod\]"):
        run(chain, method="global", ref_visit=ref, solver="cholmod")


def test_config_fields():
    cfg = MatchConfig(method="GLOBAL", placement="Centroid", global_smoothness="0.3", max_partners="4",
                      solver="SuperLU")
    assert (cfg.method, cfg.placement, cfg.global_smoothness, cfg.max_partners, cfg.solver) == (
        "global", "centroid", 0.3, 4, "superlu")
    assert MatchConfig.from_dict(cfg.to_dict()) == cfg
    for field, value in (("method", "montage"), ("placement", "corner"), ("global_smoothness", -0.1),
                         ("global_smoothness", float("inf")), ("max_partners", 0), ("solver", "lsqr")):
        with pytest.raises(ConfigError, match=field):
            MatchConfig(**{field: value})


# -- the store, the schedulers, the command line ------------------------------------

GLOBAL = MatchConfig(method="global")


@pytest.fixture(scope="module")
def chain_files(tmp_path_factory):
    """A small chain tract as afw FITS (4 visits on 4 x 2 patches of 192 pixels)."""
    from bgdask.testing import tiny_tract

    return tiny_tract(tmp_path_factory.mktemp("chain"), n_visits=4, num_patches=(4, 2), patch_inner=192,
                      layout="chain", seed=1, **HARD)


@pytest.fixture(scope="module")
def sync_global(chain_files, tmp_path_factory):
    _, d = chain_files
    out = tmp_path_factory.mktemp("gsync") / "out.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        res = bgdask.match_backgrounds(d / "manifest.csv", out, GLOBAL, scheduler="sync", chunk_rows=100)
    return res, out


@pytest.mark.slow
def test_global_stores_bitwise_equal_on_one_and_two_workers_and_the_command_line(chain_files, sync_global,
                                                                                 tmp_path, cli):
    """The synchronous scheduler, ``bgdask match --method global`` on one
    worker and two workers (LocalClusters on 127.0.0.1) write bitwise-equal stores."""
    from distributed import Client, LocalCluster

    from bgdask.testing import assert_stores_equal

    _, d = chain_files
    _, want = sync_global
    rc, out, err = cli("match", d / "manifest.csv", "-o", tmp_path / "one.zarr", "--method", "global",
                       "--workers", 1, "--threads-per-worker", 1, "--no-progress", "--chunk-rows", 100)
    assert rc == 0, err
    assert "pairs: 3" in out and "solve:" in out and "n_partners" in out
    assert_stores_equal(tmp_path / "one.zarr", want)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster, Client(cluster) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        bgdask.match_backgrounds(d / "manifest.csv", tmp_path / "two.zarr", GLOBAL, client=client, chunk_rows=100)
    assert_stores_equal(tmp_path / "two.zarr", want)


@pytest.mark.slow
def test_global_store_contents_inspect_and_resume(chain_files, sync_global, tmp_path, cli):
    import shutil

    import xarray as xr
    import zarr

    from bgdask.io.store import Store
    from bgdask.testing import assert_stores_equal

    sim, d = chain_files
    res, out = sync_global
    st = Store.open(out)
    assert st.config.method == "global" and st.complete
    assert st.pairs().equals(res.pairs)
    assert [tuple(p) for p in st.pairs()[["u", "v"]].values] == list(zip(sim.visits[:-1], sim.visits[1:]))
    assert st.solve_info == res.solve_info and st.solve_info["n_unknowns"] > 0
    assert "global solve" in st.stage_times
    table = st.table()
    assert table.equals(res.table)
    assert list(table.n_partners) == [1, 2, 2, 1]
    ds = xr.open_zarr(out)
    assert ds.pair_resid_rms.dims == ("pair",) and ds.sizes["pair"] == 3
    for v in sim.visits:
        np.testing.assert_array_equal(ds.diff_model.sel(visit=v).values, res.models[v].model)
    rc, text, _ = cli("inspect", out)
    assert rc == 0
    assert "method: global (placement centroid)" in text
    assert "pairs: 3" in text and "expected_rms" in text and "solve:" in text
    # interrupted in stage C: resumed, the store is bitwise the uninterrupted one
    copy = tmp_path / "resumed.zarr"
    shutil.copytree(out, copy)
    group = zarr.open_group(str(copy), mode="r+")
    done = group["done"][:]
    vi, pi = [int(i) for i in np.argwhere(done)[1]]
    done[vi, pi] = False
    group["done"][:] = done
    group["image"][vi, pi] = np.float32(-1)
    group.attrs["complete"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        again = bgdask.match_backgrounds(d / "manifest.csv", copy, GLOBAL, scheduler="sync", chunk_rows=100,
                                         resume=True)
    assert again.pairs.equals(res.pairs)
    assert_stores_equal(copy, out)


def test_reference_method_store_has_no_pair_table(sync_store, cli):
    from bgdask.io.store import Store

    _, out = sync_store
    st = Store.open(out)
    assert st.pairs() is None and st.solve_info is None
    rc, text, _ = cli("inspect", out)
    assert rc == 0 and "pairs:" not in text and "n_partners" not in text and "method:" not in text


def test_command_line_flags_set_the_fields(tmp_path):
    from bgdask.cli import _config, build_parser

    conf = tmp_path / "c.yaml"
    conf.write_text("method: global\nmax_partners: 3\nsolver: superlu\n")
    args = build_parser().parse_args(["match", "in", "-o", "o.zarr", "--config", str(conf), "--placement",
                                      "centre", "--global-smoothness", "0.5", "--max-partners", "5"])
    cfg = _config(args)
    assert (cfg.method, cfg.placement, cfg.global_smoothness, cfg.max_partners, cfg.solver) == (
        "global", "centre", 0.5, 5, "superlu")
    args = build_parser().parse_args(["match", "in", "-o", "o.zarr", "--max-partners", "0"])
    with pytest.raises(ConfigError, match="command line: config field 'max_partners'"):
        _config(args)
    assert _config(build_parser().parse_args(["match", "in", "-o", "o.zarr"])) == MatchConfig()


def test_simulate_flags(tmp_path, cli):
    import json

    rc, out, err = cli("simulate", tmp_path / "t", "--visits", 3, "--patches", 3, 1, "--patch-size", 128,
                       "--border", 8, "--layout", "chain", "--gradient-scale", 5, "--chip-pitch", 100,
                       "--gap-width", 10, "--step-visit", 1001, "--step-amp", 2, "--curvature-scale", 0.5)
    assert rc == 0, err
    want = make_tract(n_visits=3, num_patches=(3, 1), patch_inner=128, patch_border=8, layout="chain",
                      gradient_scale=5, chip_pitch=100, gap_width=10, step_visit=1001, step_amp=2,
                      curvature_scale=0.5)
    from bgdask.io import read_warp

    for (v, p), w in want.warps.items():
        got = read_warp(tmp_path / "t" / "warps" / str(v) / f"warp_{v}_{p}.fits")
        assert got.image.tobytes() == w.image.tobytes()
    assert json.loads((tmp_path / "t" / "truth.json").read_text())


def test_tasks_read_their_warps_themselves_and_any_dataset_works(chain_files, sync_global):
    """The coverage and pair tasks read the warps through the collection's
    read specs (no read task runs, no warp waits in memory for its pairs); a
    Dataset held in memory (chunks as ordinary dependencies) gives the same bits."""
    from bgdask.testing import CountComputes

    _, d = chain_files
    want, _ = sync_global
    ds = bgdask.open_warps(d / "manifest.csv", chunks={"y": 100})
    with warnings.catch_warnings(), CountComputes("open-warps") as reads, \
            CountComputes("bgdask-ga", "bgdask-gb") as tasks:
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        lazy = bgdask.match(ds, GLOBAL, scheduler="sync")
    assert reads.count == 0 and tasks.count > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)
        held = bgdask.match(ds.compute(scheduler="sync"), GLOBAL, scheduler="sync")
    for res in (lazy, held):
        assert res.reference_visit == want.reference_visit
        for v, m in want.models.items():
            assert res.models[v].model.tobytes() == m.model.tobytes()
        assert res.pairs.equals(want.pairs)
