"""How stage C groups its warps into tasks."""

from __future__ import annotations

import pytest

from bgdask.stages import aligned_groups, group_size


@pytest.mark.parametrize("n", list(range(1, 20)) + [63, 64, 65, 257])
@pytest.mark.parametrize("size", [1, 2, 16, 64])
def test_aligned_groups_cover_every_warp_once_in_order(n, size):
    groups = aligned_groups(n, size)
    assert [i for g in groups for i in g] == list(range(n))
    assert all(len(g) == size for g in groups[:-1]) and 1 <= len(groups[-1]) <= size


def test_group_size_aims_at_enough_work_per_task():
    assert group_size(500.0) == 1          # a large warp: one per task
    assert group_size(30.0) == 2
    assert group_size(2.0) == 32           # tiny warps: 32 x 2 ms >= 50 ms
    assert group_size(0.0) == 256          # at most 256


#: Superpixels small enough for a tract of 60-pixel patches.
SMALL_BINS = dict(x_bin=32, y_bin=32, binning=16)


def test_tiny_warps_grouped_in_stages_a_and_b_give_the_same_store(tmp_path, monkeypatch):
    """Stages A and B compute several tiny warps' leaves in one task (a
    subtree of each visit's sum tree): the store is bitwise the one of one
    task per warp."""
    import bgdask.stages as stages
    from bgdask import match_backgrounds
    from bgdask.config import MatchConfig
    from bgdask.testing import assert_stores_equal, tiny_tract

    _, tract = tiny_tract(tmp_path / "tract", n_visits=3, num_patches=(3, 3), patch_inner=60, patch_border=2,
                          seed=4)
    manifest = tract / "manifest.csv"
    cfg = MatchConfig(**SMALL_BINS)
    grouped = match_backgrounds(manifest, tmp_path / "grouped.zarr", cfg, scheduler="sync")
    monkeypatch.setattr(stages, "group_size", lambda leaf_ms, **kw: 1)
    single = match_backgrounds(manifest, tmp_path / "single.zarr", cfg, scheduler="sync")
    assert grouped.reference_visit == single.reference_visit
    assert_stores_equal(tmp_path / "grouped.zarr", tmp_path / "single.zarr")


def test_tiny_warps_are_grouped_and_large_ones_are_not():
    """Stages A and B group tiny warps' leaves; a warp of 2100 x 2100 or more is a task of its own."""
    from types import SimpleNamespace

    from bgdask import open_warps
    from bgdask.config import MatchConfig
    from bgdask.geometry import Box
    from bgdask.simulate import make_tract
    from bgdask.stages import _A_COST, _B_COST, _leaf_ms, graph_a, graph_b, tract_of

    def kinds(graph):
        return {k[0].split("-")[2] for layer in graph.layers.values() for k in layer
                if isinstance(k, tuple) and str(k[0]).startswith("bgdask-")}

    tiny = make_tract(n_visits=3, num_patches=(3, 3), patch_inner=60, patch_border=2, seed=4)
    t = tract_of(open_warps(tiny.warps, skymap=tiny.skymap), tiny.skymap)
    cfg = MatchConfig(**SMALL_BINS)
    assert {"leaves", "criteria"} == kinds(graph_a(t, cfg)[0])
    assert "leaves" in kinds(graph_b(t, cfg, t.visits[0])[0]) and "diff" not in kinds(graph_b(t, cfg, t.visits[0])[0])
    large = SimpleNamespace(boxes={0: Box(0, 0, 2100, 2100)})
    assert group_size(_leaf_ms(large, *_A_COST)) == 1 and group_size(_leaf_ms(large, *_B_COST)) == 1
